// Sensitivity analysis on tiny models trained a few steps on synthetic data: rows cover every
// layer x level, level 0 reproduces the reference, only the analysed layer is pruned (exactly
// the entries a slow reference picks), the weights come back bitwise, and the CSV and PNG are
// written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <cstring>
#include <numeric>

#include "shrink/core/error.h"
#include "shrink/data/image_folder.h"
#include "shrink/pruning/sensitivity.h"
#include "shrink/train/experiment.h"
#include "train/train_test_util.h"

using namespace shrink;
using namespace shrink::pruning;
using namespace shrink::test;
namespace fs = std::filesystem;

namespace {

/// A synthetic-data experiment (learnable class templates), trained `steps` SGD steps.
Experiment tiny_experiment(const std::string& model, int64_t size, int64_t steps) {
  auto e = build_experiment(recipe_node(
      "seed: 5\nthreads: 2\ndata: {name: synthetic, channels: 1, height: " + std::to_string(size) +
      ", width: " + std::to_string(size) + ", num_classes: 4, train_size: 128, test_size: 48, noise: 0.3}\n" +
      "model: {name: " + model + "}\ntrain: {eval_batch_size: 16}\n"));
  apply_runtime_settings(e.recipe);
  prepare_experiment(e);
  torch::optim::SGD sgd(e.model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  LoaderOptions lo;
  lo.batch_size = 32;
  DataLoader loader(e.train_data, lo);
  e.model->train();
  for (int64_t step = 0, epoch = 0; step < steps; ++epoch) {
    loader.start_epoch(epoch);
    while (auto batch = loader.next()) {
      if (step++ >= steps) break;
      sgd.zero_grad();
      torch::nn::functional::cross_entropy(e.model->forward(batch->inputs), batch->targets).backward();
      sgd.step();
    }
  }
  return e;
}

std::map<std::string, torch::Tensor> snapshot(torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model.named_parameters()) out[p.key()] = p.value().detach().clone();
  for (const auto& b : model.named_buffers()) out[b.key()] = b.value().detach().clone();
  return out;
}

torch::Tensor tensor_named(torch::nn::Module& model, const std::string& name) {
  for (const auto& p : model.named_parameters())
    if (p.key() == name) return p.value();
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

/// Slow reference: the flat indices magnitude pruning removes (round(level * n) smallest |w|,
/// ties by position).
std::vector<bool> reference_magnitude_pruned(const torch::Tensor& weight, double level) {
  auto w = weight.detach().reshape({-1}).contiguous();
  const int64_t n = w.numel();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const float* data = w.data_ptr<float>();
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return std::fabs(data[a]) < std::fabs(data[b]); });
  const auto k = static_cast<int64_t>(std::llround(level * static_cast<double>(n)));
  std::vector<bool> pruned(n, false);
  for (int64_t i = 0; i < k; ++i) pruned[order[i]] = true;
  return pruned;
}

/// Slow reference: the output filters L1-filter pruning removes.
std::vector<bool> reference_filters_pruned(const torch::Tensor& weight, double level) {
  auto w = weight.detach().reshape({weight.size(0), -1}).contiguous();
  const int64_t filters = w.size(0), per = w.size(1);
  std::vector<double> norms(filters, 0.0);
  const float* data = w.data_ptr<float>();
  for (int64_t f = 0; f < filters; ++f)
    for (int64_t j = 0; j < per; ++j) norms[f] += std::fabs(data[f * per + j]);
  std::vector<int64_t> order(filters);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return norms[a] < norms[b]; });
  const auto k = static_cast<int64_t>(std::llround(level * static_cast<double>(filters)));
  std::vector<bool> pruned(filters, false);
  for (int64_t i = 0; i < k; ++i) pruned[order[i]] = true;
  return pruned;
}

}  // namespace

TEST(Sensitivity, RowsCoverEveryLayerAndLevelAndLevelZeroIsTheReference) {
  auto e = tiny_experiment("lenet300", 8, 12);
  SensitivityOptions o;
  o.levels = {0.0, 0.5, 0.9};
  int64_t calls = 0;
  auto rows = run_sensitivity(e, o, [&](const SensitivityRow&, int64_t done, int64_t total) {
    EXPECT_EQ(done, ++calls);
    EXPECT_EQ(total, 10);
  });
  ASSERT_EQ(rows.size(), 1u + 3u * 3u);
  EXPECT_EQ(calls, 10);

  const auto& ref = rows[0];
  EXPECT_EQ(ref.layer, kReferenceLayer);
  EXPECT_EQ(ref.parameters, 64 * 300 + 300 * 100 + 100 * 4);
  EXPECT_EQ(ref.examples, 48);
  EXPECT_GT(ref.top1, 50.0) << "a few steps on class templates should beat chance (25%)";
  // Same numbers as the project's evaluate() on the whole test split.
  auto full = evaluate(e.model, e.test_data, 16, e.device);
  EXPECT_DOUBLE_EQ(ref.top1, full.top1);
  EXPECT_DOUBLE_EQ(ref.top5, full.top5);
  EXPECT_NEAR(ref.loss, full.loss, 1e-9);

  const std::vector<std::string> layers = {"fc1", "fc2", "fc3"};
  const std::vector<int64_t> sizes = {64 * 300, 300 * 100, 100 * 4};
  for (size_t l = 0; l < layers.size(); ++l) {
    for (size_t k = 0; k < o.levels.size(); ++k) {
      const auto& r = rows[1 + l * 3 + k];
      EXPECT_EQ(r.layer, layers[l]);
      EXPECT_EQ(r.level, o.levels[k]);
      EXPECT_EQ(r.parameters, sizes[l]);
      EXPECT_EQ(r.examples, 48);
      EXPECT_EQ(r.pruned, std::llround(o.levels[k] * sizes[l]));
    }
    const auto& zero = rows[1 + l * 3];
    EXPECT_EQ(zero.top1, ref.top1) << layers[l];
    EXPECT_EQ(zero.top5, ref.top5) << layers[l];
    EXPECT_EQ(zero.loss, ref.loss) << layers[l];
  }
  // The table names every layer and level.
  auto table = sensitivity_table(rows);
  for (const auto* s : {"reference", "fc1", "fc2", "fc3", "0%", "50%", "90%"})
    EXPECT_NE(table.find(s), std::string::npos) << s << "\n" << table;
}

TEST(Sensitivity, PrunesOnlyTheAnalysedLayerExactlyAsTheReferenceAndRestoresBitwise) {
  auto e = tiny_experiment("lenet300", 8, 6);
  const auto before = snapshot(*e.model);
  SensitivityOptions o;
  o.levels = {0.25, 0.5, 0.9};
  int64_t checked = 0;
  run_sensitivity(e, o, [&](const SensitivityRow& row, int64_t, int64_t) {
    const auto now = snapshot(*e.model);
    for (const auto& [name, value] : before) {
      if (name == row.layer + ".weight") continue;
      EXPECT_TRUE(torch::equal(now.at(name), value)) << name << " changed while analysing " << row.layer;
    }
    if (row.layer == kReferenceLayer) return;
    const auto& original = before.at(row.layer + ".weight");
    auto pruned = reference_magnitude_pruned(original, row.level);
    auto w = now.at(row.layer + ".weight").reshape({-1});
    auto o_flat = original.reshape({-1});
    const float* wd = w.data_ptr<float>();
    const float* od = o_flat.data_ptr<float>();
    int64_t zeros = 0, mismatches = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      zeros += wd[i] == 0.0f;
      mismatches += pruned[i] ? (wd[i] != 0.0f) : (wd[i] != od[i]);
    }
    EXPECT_EQ(zeros, std::llround(row.level * static_cast<double>(w.numel()))) << row.layer << " " << row.level;
    EXPECT_EQ(mismatches, 0) << row.layer << " " << row.level;
    ++checked;
  });
  EXPECT_EQ(checked, 9);
  const auto after = snapshot(*e.model);
  for (const auto& [name, value] : before) {
    EXPECT_TRUE(torch::equal(after.at(name), value)) << name;
    EXPECT_EQ(0, std::memcmp(after.at(name).data_ptr(), value.data_ptr(), value.nbytes())) << name;
  }
}

TEST(Sensitivity, L1FilterZeroesWholeFiltersWithTheirBiasesOnConvAndLinear) {
  auto e = tiny_experiment("lenet5", 16, 4);
  const auto before = snapshot(*e.model);
  SensitivityOptions o;
  o.levels = {0.3, 0.75};
  o.criterion = SensitivityCriterion::L1Filter;
  o.targets = {"conv*", "fc1.weight"};
  std::vector<std::string> seen;
  auto rows = run_sensitivity(e, o, [&](const SensitivityRow& row, int64_t, int64_t) {
    if (row.layer == kReferenceLayer) return;
    seen.push_back(row.layer);
    const auto& original = before.at(row.layer + ".weight");
    auto pruned = reference_filters_pruned(original, row.level);
    auto w = tensor_named(*e.model, row.layer + ".weight").detach();
    auto b = tensor_named(*e.model, row.layer + ".bias").detach();
    const int64_t filters = w.size(0);
    int64_t removed = 0;
    for (int64_t f = 0; f < filters; ++f) {
      if (pruned[f]) {
        ++removed;
        EXPECT_TRUE(w[f].eq(0).all().item<bool>()) << row.layer << " filter " << f;
        EXPECT_EQ(b[f].item<float>(), 0.0f) << row.layer << " bias " << f;
      } else {
        EXPECT_TRUE(torch::equal(w[f], original[f])) << row.layer << " filter " << f;
        EXPECT_EQ(b[f].item<float>(), before.at(row.layer + ".bias")[f].item<float>());
      }
    }
    EXPECT_EQ(removed, std::llround(row.level * static_cast<double>(filters)));
    EXPECT_EQ(row.pruned, removed * (w.numel() / filters));
  });
  EXPECT_EQ(seen, (std::vector<std::string>{"conv1", "conv1", "conv2", "conv2", "fc1", "fc1"}));
  EXPECT_EQ(rows.size(), 7u);
  const auto after = snapshot(*e.model);
  for (const auto& [name, value] : before) EXPECT_TRUE(torch::equal(after.at(name), value)) << name;
}

TEST(Sensitivity, BatchLimitTargetsAndErrors) {
  auto e = tiny_experiment("lenet300", 8, 0);
  SensitivityOptions o;
  o.levels = {0.5};
  o.targets = {"fc2"};
  o.max_batches = 2;
  auto rows = run_sensitivity(e, o);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].examples, 32);  // 2 batches of eval_batch_size 16
  EXPECT_EQ(rows[0].parameters, 300 * 100);
  EXPECT_EQ(rows[1].layer, "fc2");

  auto error_of = [&](const SensitivityOptions& options) -> std::string {
    try {
      run_sensitivity(e, options);
    } catch (const UserError& err) {
      return err.what();
    }
    return "(no error)";
  };
  SensitivityOptions bad;
  bad.targets = {"fc1", "conv9*"};
  EXPECT_EQ(error_of(bad), "targets: 'conv9*' matches no Conv2d or Linear layer; layers: fc1, fc2, fc3");
  bad = {};
  bad.levels = {0.2, 1.0};
  EXPECT_EQ(error_of(bad), "levels: level 1 is outside [0, 1)");
  bad.levels = {-0.1};
  EXPECT_EQ(error_of(bad), "levels: level -0.1 is outside [0, 1)");
  bad.levels = {0.5, 0.2};
  EXPECT_EQ(error_of(bad), "levels: levels must be sorted and unique (got 0.2 after 0.5)");
  bad.levels = {0.5, 0.5};
  EXPECT_EQ(error_of(bad), "levels: levels must be sorted and unique (got 0.5 after 0.5)");
  bad.levels = {std::nan("")};
  EXPECT_NE(error_of(bad).find("outside [0, 1)"), std::string::npos);
  bad.levels = {};
  EXPECT_EQ(error_of(bad), "levels: no level given");
  EXPECT_THROW(parse_criterion("l1-filter", "--criterion"), UserError);
  try {
    parse_criterion("magnitud", "--criterion");
  } catch (const UserError& err) {
    EXPECT_EQ(std::string(err.what()),
              "--criterion: unknown criterion 'magnitud' (did you mean 'magnitude'?); expected magnitude or l1_filter");
  }
}

TEST(Sensitivity, WritesCsvAndPlot) {
  auto e = tiny_experiment("lenet300", 8, 6);
  SensitivityOptions o;
  o.levels = {0.3, 0.6, 0.9};
  auto rows = run_sensitivity(e, o);
  TempDir tmp;
  const auto csv = tmp.file("out/sensitivity.csv"), png = tmp.file("out/sensitivity.png");
  write_sensitivity_csv(csv, rows);
  write_sensitivity_plot(png, rows, "tiny: top-1 with one layer pruned");

  const auto text = read_file(csv);
  EXPECT_EQ(text, sensitivity_csv(rows));
  EXPECT_EQ(text.rfind("layer,parameters,level,top1,top5,loss\n", 0), 0u) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1 + 1 + 3 * 3);
  EXPECT_NE(text.find("\nfc2,30000,0.6,"), std::string::npos) << text;
  EXPECT_NE(text.find(std::string("\n") + kReferenceLayer + ",49600,0,"), std::string::npos) << text;

  auto image = read_image(png, 3);  // decodes with OpenCV (cv::imread)
  ASSERT_EQ(image.dim(), 3);
  EXPECT_GT(image.size(1), 100);
  EXPECT_GT(image.size(2), 100);
  // Something is drawn, in the first layer's colour (Tableau blue, RGB 31 119 180).
  auto blue = torch::tensor({31.0f, 119.0f, 180.0f}).div(255).view({3, 1, 1});
  auto close = (image - blue).abs().le(2.0 / 255).all(0);
  EXPECT_GT(close.sum().item<int64_t>(), 50);
  EXPECT_LT(image.mean().item<float>(), 0.99f);
  // Written atomically: nothing else is left in the folder.
  int64_t files = 0;
  for (const auto& entry : fs::directory_iterator(tmp.file("out"))) files += entry.is_regular_file();
  EXPECT_EQ(files, 2);
}
