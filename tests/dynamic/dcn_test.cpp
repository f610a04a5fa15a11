// Dynamic Capacity Networks: the cluttered Fashion-MNIST canvas the recipe uses, the patch
// selection against a per-input autograd reference, the merged map, fine_everywhere against
// replacing every position, the hint term, the MACs per mode, recipe errors at file:line:key, and a
// tiny run through a recipe that learns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <set>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/data/dataset.h"
#include "shrink/data/synthetic.h"
#include "shrink/dynamic/dcn.h"
#include "shrink/models/model.h"
#include "shrink/report/summary.h"
#include "shrink/train/experiment.h"
#include "shrink/train/trainer.h"
#include "train/train_test_util.h"

using namespace shrink;
using dynamic::DcnImpl;
using dynamic::DcnMode;

namespace {

std::shared_ptr<DcnImpl> dcn_model(const std::string& yaml = "", std::vector<int64_t> shape = {1, 60, 60}) {
  torch::manual_seed(5);
  DataInfo info{std::move(shape), 10};
  auto model = build_model(ConfigNode(read_yaml_string("name: dcn\n" + yaml, "model.yaml"), "model"), info);
  auto dcn = std::dynamic_pointer_cast<DcnImpl>(model);
  EXPECT_TRUE(dcn);
  return dcn;
}

/// Random inputs with a few bright squares, so that saliencies differ clearly between patches.
torch::Tensor inputs(int64_t n, int64_t side = 60) {
  torch::manual_seed(11);
  auto x = torch::rand({n, 1, side, side}) * 0.2;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < 3; ++s) {
      const int64_t y = (7 * i + 19 * s) % (side - 10), xx = (13 * i + 23 * s) % (side - 10);
      x.index_put_({i, 0, torch::indexing::Slice(y, y + 10), torch::indexing::Slice(xx, xx + 10)}, 1.0);
    }
  return x;
}

/// Patch (i, j) of input n, [1, C, P, P].
torch::Tensor patch_of(const torch::Tensor& x, int64_t n, int64_t i, int64_t j, int64_t p) {
  using torch::indexing::Slice;
  return x.index({Slice(n, n + 1), Slice(), Slice(i * p, (i + 1) * p), Slice(j * p, (j + 1) * p)});
}

/// Slow saliency of input n: its own coarse features, the entropy of its own prediction,
/// backward, then the gradient norm over channels position by position.
torch::Tensor reference_saliency(DcnImpl& model, const torch::Tensor& x, int64_t n) {
  auto features = model.coarse_features(x.narrow(0, n, 1)).detach().requires_grad_(true);
  auto p = torch::softmax(model.top(features), 1);
  auto entropy = -(p * p.log()).sum();
  entropy.backward();
  auto g = features.grad()[0];
  auto out = torch::zeros({g.size(1), g.size(2)});
  for (int64_t i = 0; i < g.size(1); ++i)
    for (int64_t j = 0; j < g.size(2); ++j) {
      double sum = 0;
      for (int64_t c = 0; c < g.size(0); ++c) sum += std::pow(g[c][i][j].item<double>(), 2);
      out[i][j] = std::sqrt(sum);
    }
  return out;
}

std::string error_at(const std::function<void()>& f, std::string* key_path = nullptr) {
  try {
    f();
  } catch (const ConfigError& e) {
    if (key_path) *key_path = e.key_path();
    return e.what();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---- data ----

TEST(DcnData, ClutteredCanvasOfTheRecipeIsDeterministicAndHoldsTheItem) {
  if (!std::filesystem::exists(test::fashion_mnist_dir() + "/t10k-images-idx3-ubyte") &&
      !std::filesystem::exists(test::fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "no Fashion-MNIST at " << test::fashion_mnist_dir()
                 << " (tests/data/synthetic_test.cpp covers the generator on small files)";
  auto node = ConfigNode(read_yaml_string("name: cluttered_fashion_mnist\nroot: " + test::fashion_mnist_dir() +
                                              "\ncanvas: 60\ntest_size: 6\nseed: 2\n",
                                          "data.yaml"),
                         "data");
  auto a = build_dataset(node, Split::Test), b = build_dataset(node, Split::Test);
  auto plain = build_dataset(
      ConfigNode(read_yaml_string("name: fashion_mnist\nroot: " + test::fashion_mnist_dir() + "\ntest_subset: 6\n",
                                  "data.yaml"),
                 "data"),
      Split::Test);
  ASSERT_EQ(a->size(), 6);
  EXPECT_EQ(a->sample_shape(), (std::vector<int64_t>{1, 60, 60}));
  for (int64_t i = 0; i < 6; ++i) {
    auto ea = a->get(5 - i), eb = b->get(5 - i);  // order does not matter
    EXPECT_TRUE(torch::equal(ea.image, eb.image)) << i;
    auto item = plain->get(5 - i);
    EXPECT_EQ(ea.label, item.label);
    // The item is somewhere whole: a 28x28 window at least as bright as it everywhere.
    bool found = false;
    for (int64_t y = 0; y <= 32 && !found; ++y)
      for (int64_t x = 0; x <= 32 && !found; ++x) {
        auto window = ea.image.narrow(1, y, 28).narrow(2, x, 28);
        found = (window >= item.image - 1e-6).all().item<bool>();
      }
    EXPECT_TRUE(found) << "item " << i << " not on its canvas";
  }
}

// ---- selection, merge, modes ----

TEST(Dcn, PicksTheHighestSaliencyPatchesAndMergesTheirFineFeatures) {
  auto model = dcn_model("k: 4\n");
  const auto x = inputs(3);
  model->eval();
  model->record_taps({"coarse", "merged", "logits"});
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;  // as in evaluation: the saliency enables grad locally
    logits = model->forward(x);
  }
  const auto selected = model->last_selected();
  ASSERT_EQ(selected.sizes(), (std::vector<int64_t>{3, 4}));
  const auto coarse = model->tap("coarse"), merged = model->tap("merged");
  ASSERT_EQ(coarse.sizes(), (std::vector<int64_t>{3, 32, 5, 5}));
  for (int64_t n = 0; n < 3; ++n) {
    const auto ref = reference_saliency(*model, x, n);
    EXPECT_TRUE(torch::allclose(model->last_saliency()[n], ref, 1e-4, 1e-7)) << n;
    std::vector<int64_t> order(25);
    std::iota(order.begin(), order.end(), 0);
    const auto flat = ref.flatten();
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return flat[a].item<double>() > flat[b].item<double>(); });
    ASSERT_GT(flat[order[3]].item<double>() - flat[order[4]].item<double>(), 1e-6) << "tie at the k-th patch";
    std::set<int64_t> expected(order.begin(), order.begin() + 4), got;
    for (int64_t j = 0; j < 4; ++j) got.insert(selected[n][j].item<int64_t>());
    EXPECT_EQ(got, expected) << n;
    EXPECT_EQ(selected[n][0].item<int64_t>(), order[0]) << "sorted by decreasing saliency";

    // Merged map: fine features of the chosen patches, coarse features elsewhere.
    for (int64_t pos = 0; pos < 25; ++pos) {
      const int64_t i = pos / 5, j = pos % 5;
      const auto at = merged.index({n, torch::indexing::Slice(), i, j});
      if (got.count(pos)) {
        torch::NoGradGuard no_grad;
        const auto fine = model->fine_features(patch_of(x, n, i, j, 12)).flatten();
        EXPECT_TRUE(torch::allclose(at, fine, 1e-5, 1e-6)) << n << " " << pos;
      } else {
        EXPECT_TRUE(torch::equal(at, coarse.index({n, torch::indexing::Slice(), i, j}))) << n << " " << pos;
      }
    }
  }
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(logits, model->top(merged), 1e-5, 1e-6));
  }

  // The same choice in training mode with grad, batched or one input at a time.
  model->train();
  auto train_logits = model->forward(x);
  EXPECT_TRUE(torch::equal(model->last_selected(), selected));
  EXPECT_TRUE(train_logits.requires_grad());
  model->forward(x.narrow(0, 2, 1));
  EXPECT_TRUE(torch::equal(model->last_selected()[0], selected[2]));
}

TEST(Dcn, FineEverywhereEqualsReplacingEveryPosition) {
  auto model = dcn_model("k: 25\n");
  const auto x = inputs(2);
  torch::NoGradGuard no_grad;
  model->record_taps({"merged"});
  const auto all_replaced = model->forward(x);
  model->set_mode(DcnMode::fine_everywhere);
  const auto everywhere = model->forward(x);
  EXPECT_TRUE(torch::allclose(everywhere, all_replaced, 1e-5, 1e-6));
  const auto merged = model->tap("merged");
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 5; ++j) {
      const auto fine = model->fine_features(patch_of(x, 1, i, j, 12)).flatten();
      EXPECT_TRUE(torch::allclose(merged.index({1, torch::indexing::Slice(), i, j}), fine, 1e-5, 1e-6));
    }
  EXPECT_EQ(model->last_hint().item<double>(), 0.0);

  model->set_mode(DcnMode::coarse_only);
  EXPECT_TRUE(torch::allclose(model->forward(x), model->top(model->coarse_features(x))));
}

TEST(Dcn, HintIsTheMeanSquaredGapAtTheSelectedPatchesAndTrainsOnlyTheCoarseNetwork) {
  auto model = dcn_model("k: 3\n");
  const auto x = inputs(2);
  model->train();
  model->forward(x);
  const auto hint = model->last_hint();
  const auto selected = model->last_selected();
  double expected = 0;
  {
    torch::NoGradGuard no_grad;
    const auto coarse = model->coarse_features(x);
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t s = 0; s < 3; ++s) {
        const int64_t pos = selected[n][s].item<int64_t>(), i = pos / 5, j = pos % 5;
        const auto fine = model->fine_features(patch_of(x, n, i, j, 12)).flatten();
        expected += (coarse.index({n, torch::indexing::Slice(), i, j}) - fine).pow(2).sum().item<double>();
      }
  }
  EXPECT_NEAR(hint.item<double>(), expected / 6, 1e-5 * expected);
  ASSERT_GT(expected, 0);
  model->zero_grad();
  hint.backward();
  for (const auto& p : model->named_parameters()) {
    const bool has_grad = p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0;
    EXPECT_EQ(has_grad, p.key().rfind("coarse.", 0) == 0) << p.key();
  }

  // Coarse and fine networks ending in the same constant features: no gap, and the merged map is
  // the coarse one.
  {
    torch::NoGradGuard no_grad;
    for (const char* name : {"coarse.2.weight", "fine.8.weight"}) model->named_parameters()[name].zero_();
    model->named_parameters()["coarse.2.bias"].fill_(0.3);
    model->named_parameters()["fine.8.bias"].fill_(0.3);
  }
  const auto logits = model->forward(x);
  EXPECT_EQ(model->last_hint().item<double>(), 0.0);
  model->set_mode(DcnMode::coarse_only);
  EXPECT_TRUE(torch::equal(model->forward(x), logits));
}

TEST(Dcn, MacsPerInputByMode) {
  auto model = dcn_model("k: 4\n");
  const std::vector<int64_t> shape{1, 60, 60};
  // coarse: 15x15x16x16 + 5x5x32x16x9; fine per patch: 6x6x32x4 + 6x6x64x32 + 3x3x64x64x4 + 3x3x128x64
  // + 32x128x9; top: 5x5x32x32x9 + 32x10.
  const int64_t coarse = 57600 + 115200, per_patch = 4608 + 73728 + 147456 + 73728 + 36864, top = 230400 + 320;
  auto dcn = model->measure_macs(shape);
  EXPECT_EQ(dcn.coarse, coarse);
  EXPECT_EQ(dcn.fine_per_patch, per_patch);
  EXPECT_EQ(dcn.fine, 4 * per_patch);
  EXPECT_EQ(dcn.top, top);
  EXPECT_EQ(dcn.saliency, 2 * top);
  EXPECT_EQ(dcn.positions, 25);
  EXPECT_EQ(dcn.total(), coarse + 4 * per_patch + 3 * top);
  EXPECT_TRUE(model->is_training()) << "training mode restored";
  // `shrink summary` counts one forward: the same without the saliency pass.
  EXPECT_EQ(summarize(model, shape).macs, coarse + 4 * per_patch + top);

  model->set_mode(DcnMode::fine_everywhere);
  auto everywhere = model->measure_macs(shape);
  EXPECT_EQ(everywhere.total(), 25 * per_patch + top);
  EXPECT_EQ(everywhere.coarse, 0);
  model->set_mode(DcnMode::coarse_only);
  auto coarse_only = model->measure_macs(shape);
  EXPECT_EQ(coarse_only.total(), coarse + top);
  std::printf("MACs per input at 1x60x60: dcn %lld, fine_everywhere %lld, coarse_only %lld\n",
              static_cast<long long>(dcn.total()), static_cast<long long>(everywhere.total()),
              static_cast<long long>(coarse_only.total()));
}

// ---- recipe errors ----

TEST(DcnRecipe, ErrorsNameTheFileLineAndKey) {
  auto expect = [](const std::string& yaml, const std::string& key_path, const std::string& needle) {
    std::string path;
    const auto msg = error_at([&] { dcn_model(yaml); }, &path);
    EXPECT_EQ(path, key_path) << yaml << " -> " << msg;
    EXPECT_EQ(msg.rfind("model.yaml:", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << yaml << " -> " << msg;
  };
  expect("k: 26\n", "model.k", "must be in [1, 25], the patches of a 1x60x60 input at patch 12 (got 26)");
  expect("k: 0\n", "model.k", "must be >= 1");
  expect("patch: 10\n", "model.patch", "must be a positive multiple of 4 (got 10)");
  expect("patch: 8\n", "model.patch", "must divide the input's height and width");
  expect("mode: fine_everywere\n", "model.mode", "did you mean 'fine_everywhere'");
  expect("pool: sum\n", "model.pool", "must be one of max, avg");
  EXPECT_EQ(error_at([&] { dcn_model("k: 26\n"); }).rfind("model.yaml:2:", 0), 0u);

  auto method = [](const std::string& yaml) {
    return build_method(ConfigNode(read_yaml_string("method: dcn_hint\n" + yaml, "recipe.yaml"), "compression[0]"));
  };
  std::string path;
  auto msg = error_at([&] { method("weight: -1\n"); }, &path);
  EXPECT_EQ(path, "compression[0].weight") << msg;
  EXPECT_EQ(msg.rfind("recipe.yaml:2:", 0), 0u) << msg;
  DataInfo info{{1, 28, 28}, 10};
  auto lenet = build_model(ConfigNode(read_yaml_string("name: lenet5\n", "model.yaml"), "model"), info);
  auto hint = method("");
  msg = error_at([&] { hint->bind(lenet); }, &path);
  EXPECT_EQ(path, "compression[0].method") << msg;
  EXPECT_NE(msg.find("needs a dcn model"), std::string::npos) << msg;
}

// ---- through the trainer ----

TEST(DcnTraining, TinyRunThroughARecipeLearnsAndReportsMacs) {
  test::TempDir tmp;
  const auto dir = tmp.file("run");
  const std::string yaml =
      "name: dcn\nseed: 3\nthreads: 2\noutput: " + dir +
      "\ndata: {name: synthetic, channels: 1, height: 24, width: 24, num_classes: 4, train_size: 256, "
      "test_size: 128, noise: 0.3}\n"
      "model: {name: dcn, k: 2, patch: 12, features: 16, coarse_width: 8, fine_width: 16}\n"
      "train:\n  epochs: 3\n  batch_size: 32\n  eval_batch_size: 128\n  progress: none\n"
      "  optimizer: {name: adam, lr: 0.005}\n"
      "compression:\n  - {method: dcn_hint, weight: 1}\n";
  auto e = build_experiment(test::recipe_node(yaml));
  apply_runtime_settings(e.recipe);
  TrainOptions options;
  options.run_dir = dir;
  options.quiet = true;
  const auto result = train(e, options);
  EXPECT_GT(result.final_eval.top1, 50.0) << "chance is 25%";
  const auto metrics = test::read_file(dir + "/metrics.jsonl");
  EXPECT_NE(metrics.find("\"avg_macs\":"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\"dcn_hint\":"), std::string::npos) << metrics;
  const auto log = test::read_file(dir + "/log.txt");
  EXPECT_NE(log.find("dcn: mode dcn, k 2, patch 12: coarse "), std::string::npos) << log;
  auto* hint = dynamic_cast<dynamic::DcnHint*>(e.methods.at(0).get());
  ASSERT_NE(hint, nullptr);
  EXPECT_EQ(hint->macs().patches, 2);
  EXPECT_EQ(hint->macs().positions, 4);
  std::printf("tiny dcn run: top1 %.1f%%\n", result.final_eval.top1);
}
