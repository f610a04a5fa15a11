// The low_rank method: rank rules against decompose.h's selections, the global parameter and
// MAC targets, exact factorization of a trained model, and training, reload and resume of
// factorized runs through recipes.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <functional>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/lowrank/decompose.h"
#include "shrink/lowrank/low_rank.h"
#include "shrink/models/model.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/layer.h"
#include "shrink/nn/linear.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/trainer.h"
#include "train/train_test_util.h"

using namespace shrink;
using shrink::test::StopAt;
using lowrank::LowRankFactorization;

namespace {

ModelPtr lenet(const std::string& name, uint64_t seed = 3) {
  torch::manual_seed(seed);
  DataInfo info;
  info.sample_shape = {1, 28, 28};
  info.num_classes = 10;
  return build_model(ConfigNode(read_yaml_string("name: " + name + "\n", "model.yaml"), "model"), info);
}

ConfigNode entry(const std::string& yaml) {
  return ConfigNode(read_yaml_string("method: low_rank\n" + yaml, "recipe.yaml"), "compression[0]");
}

std::unique_ptr<LowRankFactorization> bound(const std::string& yaml, const ModelPtr& model) {
  auto m = build_method(entry(yaml));
  m->bind(model);
  auto* typed = dynamic_cast<LowRankFactorization*>(m.get());
  EXPECT_TRUE(typed);
  m.release();
  return std::unique_ptr<LowRankFactorization>(typed);
}

TrainContext context(const ModelPtr& model) {
  TrainContext ctx;
  ctx.model = model;
  return ctx;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

int64_t params_of(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

torch::Tensor f64(const torch::Tensor& t) { return t.detach().to(torch::kDouble); }

/// MACs per sample that a module and its descendants reported in the last forward.
int64_t macs_under(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& c : m.modules(/*include_self=*/true))
    if (auto* costed = dynamic_cast<const nn::CostedLayer*>(c.get())) n += costed->macs_per_sample();
  return n;
}

void forward_zeros(const ModelPtr& model) {
  torch::NoGradGuard no_grad;
  model->eval();
  model->forward(torch::zeros({1, 1, 28, 28}));
}

std::string low_rank_entry(const std::string& body) { return "compression:\n  - method: low_rank\n" + body; }

struct Run {
  Experiment e;
  TrainResult result;
};

Run train_run(const std::string& yaml, const std::string& dir, bool resume = false, int64_t stop_at = -1) {
  Run r;
  r.e = build_experiment(test::recipe_node(yaml));
  apply_runtime_settings(r.e.recipe);
  if (stop_at > 0) r.e.callbacks.push_back(std::make_unique<StopAt>(stop_at));
  TrainOptions options;
  options.run_dir = dir;
  options.resume = resume;
  options.quiet = true;
  r.result = train(r.e, options);
  clear_stop_request();
  return r;
}

/// The run's last checkpoint rebuilt as `shrink eval` does.
Experiment reload(const std::string& dir) {
  auto e = build_experiment(test::recipe_node(read_checkpoint_recipe(dir + "/last.pt")), DataNeeds::TestOnly);
  load_checkpoint_methods(dir + "/last.pt", e);
  prepare_experiment(e);
  load_checkpoint_model(dir + "/last.pt", e);
  return e;
}

std::string short_test_split(std::string yaml) {
  yaml.replace(yaml.find("test_subset: 500"), 16, "test_subset: 100");
  return yaml;
}

}  // namespace

// ---- rank rules ----

TEST(LowRankRules, FixedRankEnergyAndVbmfPickWhatDecomposeSays) {
  auto model = lenet("lenet300");
  auto* fc = model->named_modules()["fc2"]->as<nn::LinearImpl>();
  const int64_t expected = lowrank::rank_for_energy(lowrank::singular_values(f64(fc->weight)), 0.6);
  const int64_t evbmf = lowrank::evbmf_rank(f64(fc->weight));
  auto m = bound("targets: ['fc2']\nenergy: 0.6\n", model);
  auto ctx = context(model);
  m->prepare_model(ctx);
  EXPECT_EQ(fc->options.rank(), expected);
  ASSERT_EQ(m->layers().size(), 1u);
  EXPECT_EQ(m->layers()[0].form, lowrank::svd_form_str(expected));
  EXPECT_GT(m->layers()[0].relative_error, 0);
  EXPECT_EQ(params_of(*fc), expected * (300 + 100) + 100);
  m->prepare_model(ctx);  // idempotent
  EXPECT_EQ(fc->options.rank(), expected);

  auto vmodel = lenet("lenet300");
  auto v = bound("targets: ['fc2']\nvbmf: true\ninit: random\n", vmodel);
  auto vctx = context(vmodel);
  v->prepare_model(vctx);
  EXPECT_EQ(vmodel->named_modules()["fc2"]->as<nn::LinearImpl>()->options.rank(), std::max<int64_t>(1, evbmf));
  EXPECT_LT(v->layers()[0].relative_error, 0);  // random init: no reconstruction

  // tucker2 by energy: each mode's rank from its own unfolding; a rank too large is clamped.
  auto conv_model = lenet("lenet5");
  auto* conv2 = conv_model->named_modules()["conv2"]->as<nn::Conv2dImpl>();
  const auto w = f64(conv2->weight);
  const int64_t r_in = lowrank::rank_for_energy(lowrank::singular_values(lowrank::unfold(w, 1)), 0.7);
  const int64_t r_out = lowrank::rank_for_energy(lowrank::singular_values(lowrank::unfold(w, 0)), 0.7);
  auto t = bound("targets: ['conv*']\nscheme: tucker2\nenergy: 0.7\n", conv_model);
  auto tctx = context(conv_model);
  t->prepare_model(tctx);
  EXPECT_EQ(conv2->options.form().str(), fmt::format("tucker2({},{})", r_in, r_out));
  EXPECT_EQ(conv_model->named_modules()["conv1"]->as<nn::Conv2dImpl>()->options.form().sizes[0], 1);  // in = 1
  auto fixed_model = lenet("lenet5");
  auto fixed = bound("targets: ['conv2']\nscheme: jaderberg\nrank: 1000\ninit: random\n", fixed_model);
  auto fctx = context(fixed_model);
  fixed->prepare_model(fctx);
  EXPECT_EQ(fixed->layers()[0].form, "jaderberg(100)");  // min(20 * 5, 50 * 5)
  bool clamp_logged = false;
  for (const auto& line : fixed->report()) clamp_logged |= line.find("rank 1000 clamped to 100") != std::string::npos;
  EXPECT_TRUE(clamp_logged);
}

TEST(LowRankRules, ParamReductionMeetsTheTargetAsTightlyAsTheSearchAllows) {
  auto model = lenet("lenet300");
  std::vector<torch::Tensor> spectra;
  std::vector<std::pair<int64_t, int64_t>> shapes;  // {in, out}
  int64_t before = 0;
  for (const char* name : {"fc1", "fc2", "fc3"}) {
    auto* fc = model->named_modules()[name]->as<nn::LinearImpl>();
    spectra.push_back(lowrank::singular_values(f64(fc->weight)));
    shapes.emplace_back(fc->options.in_features(), fc->options.out_features());
    before += params_of(*fc);
  }
  auto m = bound("param_reduction: 4\ninit: random\n", model);
  auto ctx = context(model);
  m->prepare_model(ctx);
  int64_t after = 0;
  for (const char* name : {"fc1", "fc2", "fc3"}) after += params_of(*model->named_modules()[name]);
  EXPECT_LE(after, before / 4.0);
  EXPECT_EQ(m->layers().size(), 3u);
  // The next step up of the shared energy level would exceed the target.
  const double level = m->search_level();
  ASSERT_GT(level, 0);
  ASSERT_LT(level, 1);
  int64_t next = 0;
  for (size_t i = 0; i < spectra.size(); ++i) {
    const int64_t r = lowrank::rank_for_energy(spectra[i], std::min(1.0, level + 1e-9));
    next += r * (shapes[i].first + shapes[i].second) + shapes[i].second;
  }
  EXPECT_GT(next, before / 4.0);

  // cp: one fraction of a maximal rank.
  auto conv_model = lenet("lenet5");
  auto* conv2 = conv_model->named_modules()["conv2"]->as<nn::Conv2dImpl>();
  const int64_t dense = params_of(*conv2);
  auto c = bound("targets: ['conv2']\nscheme: cp\nparam_reduction: 3\ninit: random\n", conv_model);
  auto cctx = context(conv_model);
  c->prepare_model(cctx);
  EXPECT_LE(params_of(*conv2), dense / 3.0);
  const int64_t r = conv2->options.form().sizes[0];
  EXPECT_GT((r + 1) * (20 + 50 + 5 + 5) + 50, dense / 3.0);

  auto impossible = lenet("lenet300");
  auto bad = bound("targets: ['fc3']\nparam_reduction: 1000\n", impossible);
  auto bctx = context(impossible);
  const auto msg = error_of([&] { bad->prepare_model(bctx); });
  EXPECT_NE(msg.find("compression[0].param_reduction: cannot be met"), std::string::npos) << msg;
}

TEST(LowRankRules, MacReductionCountsMacsExactlyWithTheSampleShape) {
  auto model = lenet("lenet5");
  forward_zeros(model);
  const auto modules = model->named_modules();
  const int64_t before = macs_under(*modules["conv1"]) + macs_under(*modules["conv2"]);
  auto* conv2 = modules["conv2"]->as<nn::Conv2dImpl>();
  const auto original = conv2->weight.detach().clone();
  auto m = bound("targets: ['conv*']\nscheme: tucker2\nmac_reduction: 2\ntucker_iterations: 1\n", model);
  m->set_sample_shape({1, 28, 28});
  auto ctx = context(model);
  m->prepare_model(ctx);
  forward_zeros(model);
  const int64_t after = macs_under(*modules["conv1"]) + macs_under(*modules["conv2"]);
  EXPECT_LE(after, before / 2.0);
  EXPECT_NE(m->report().back().find(fmt::format("MACs/sample {} -> {}", before, after)), std::string::npos)
      << m->report().back();
  // The probe restored the weights before they were decomposed.
  const auto& sizes = conv2->options.form().sizes;
  const auto reference = lowrank::tucker2(f64(original), sizes[0], sizes[1], 1);
  EXPECT_NEAR(m->layers()[1].relative_error, reference.relative_error, 1e-6);

  // Without the input shape, every layer meets the target per output position.
  auto estimate = lenet("lenet5");
  auto e = bound("targets: ['conv2']\nscheme: jaderberg\nmac_reduction: 3\ninit: random\n", estimate);
  auto ectx = context(estimate);
  e->prepare_model(ectx);
  const int64_t r = estimate->named_modules()["conv2"]->as<nn::Conv2dImpl>()->options.form().sizes[0];
  EXPECT_LE(r * (20 * 5 + 50 * 5), 20 * 50 * 25 / 3);  // stride 1: every factor runs per output position
  EXPECT_GT((r + 1) * (20 * 5 + 50 * 5), 20 * 50 * 25 / 3);
}

TEST(LowRankRules, RecipeErrorsNameTheKey) {
  auto model = lenet("lenet5");
  auto expect = [&](const std::string& yaml, const std::string& needle) {
    const auto msg = error_of([&] { bound(yaml, model); });
    EXPECT_NE(msg.find(needle), std::string::npos) << yaml << " -> " << msg;
  };
  expect("scheme: svd\n", "compression[0]: low_rank needs one rank rule");
  expect("rank: 8\nenergy: 0.9\n", "compression[0].energy: give one rank rule only; this entry also sets rank");
  expect("energy: 0\n", "compression[0].energy: must be in (0, 1]");
  expect("rank: 0\n", "compression[0].rank: must be >= 1");
  expect("ranks: [4, 8]\n", "compression[0].ranks: is for scheme tucker2");
  expect("scheme: tucker2\nranks: [4]\n", "compression[0].ranks: needs two ranks");
  expect("scheme: cp\nenergy: 0.9\n", "compression[0].energy: cp has no singular values");
  expect("scheme: cp\nvbmf: true\n", "compression[0].vbmf: cp has no singular values");
  expect("scheme: tuker2\nrank: 2\n", "did you mean 'tucker2'");
  expect("rank: 4\nstart_epoch: 1\n", "compression[0].start_epoch: low_rank factorizes before training");
  expect("rank: 4\nstart_step: 3\n", "compression[0].start_step: low_rank factorizes before training");
  expect("targets: ['conv*']\nrank: 4\n", "compression[0].targets: select no Linear layer");
  expect("targets: ['fc*']\nscheme: tucker2\nrank: 4\n", "compression[0].targets: select no Conv2d layer");
  expect("rank: 4\ninit: svd\n", "compression[0].init: must be one of decompose, random");
}

// ---- through the trainer ----

TEST(LowRankMethod, SvdOnLenet300TrainsReloadsAndResumes) {
  test::TempDir tmp;
  const auto entry_yaml = low_rank_entry("    targets: ['fc1']\n    scheme: svd\n    rank: 20\n");
  auto whole = train_run(test::small_recipe(tmp.file("a"), entry_yaml), tmp.file("a"));
  auto* fc1 = whole.e.model->named_modules()["fc1"]->as<nn::LinearImpl>();
  EXPECT_EQ(fc1->options.rank(), 20);
  EXPECT_EQ(params_of(*fc1), 784 * 20 + 20 * 300 + 300);
  EXPECT_GT(whole.result.test_eval.top1, 45.0) << "chance is 10%";
  const auto log = test::read_file(tmp.file("a") + "/log.txt");
  EXPECT_NE(log.find("low_rank: fc1: svd(20), params 235500 -> 21980, relative error"), std::string::npos) << log;
  EXPECT_NE(log.find("low_rank: factorized 1 layers (svd, init decompose)"), std::string::npos) << log;
  EXPECT_NE(test::read_file(tmp.file("a") + "/metrics.jsonl").find("\"factorized_params\":21980"), std::string::npos);

  // Reloaded as `shrink eval` does: same forms, same weights, same accuracy.
  auto e = reload(tmp.file("a"));
  EXPECT_EQ(e.model->named_modules()["fc1"]->as<nn::LinearImpl>()->options.rank(), 20);
  const auto eval = evaluate(e.model, e.test_data, e.recipe.train.eval_batch_size, e.device);
  EXPECT_DOUBLE_EQ(eval.top1, whole.result.test_eval.top1);

  // Interrupted, then resumed: the same run.
  const auto yaml = test::small_recipe(tmp.file("b"), entry_yaml);
  auto part = train_run(yaml, tmp.file("b"), false, 10);
  ASSERT_TRUE(part.result.interrupted);
  auto rest = train_run(yaml, tmp.file("b"), true);
  ASSERT_FALSE(rest.result.interrupted);
  auto a = whole.e.model->named_parameters(), b = rest.e.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  EXPECT_NE(test::read_file(tmp.file("b") + "/log.txt").find("low_rank: rebuilt 1 factorized layers"),
            std::string::npos);
}

TEST(LowRankMethod, DecomposingATrainedModelAtFullRankKeepsItsAccuracy) {
  test::TempDir tmp;
  auto dense = train_run(short_test_split(test::small_recipe(tmp.file("dense"), "", "lenet300", 512, 1)),
                         tmp.file("dense"));
  const std::string model = "lenet300\n  weights: " + tmp.file("dense") + "/last.pt";
  auto factorized_at = [&](const std::string& rank) {
    auto yaml = short_test_split(
        test::small_recipe(tmp.file("f"), low_rank_entry("    targets: ['fc*']\n    rank: " + rank + "\n"), model));
    auto e = build_experiment(test::recipe_node(yaml), DataNeeds::TestOnly);
    prepare_experiment(e);
    auto* method = dynamic_cast<LowRankFactorization*>(e.methods.at(0).get());
    std::vector<lowrank::LayerFactorization> layers = method->layers();
    return std::make_pair(evaluate(e.model, e.test_data, e.recipe.train.eval_batch_size, e.device), layers);
  };
  // 300 is full rank for every layer (784x300, 300x100, 100x10 once clamped).
  auto [full, full_layers] = factorized_at("300");
  ASSERT_EQ(full_layers.size(), 3u);
  EXPECT_EQ(full_layers[1].form, "svd(100)");
  for (const auto& l : full_layers) EXPECT_LT(l.relative_error, 1e-5) << l.path;
  EXPECT_DOUBLE_EQ(full.top1, dense.result.test_eval.top1);
  EXPECT_NEAR(full.loss, dense.result.test_eval.loss, 1e-4);
  auto [low, low_layers] = factorized_at("5");
  for (const auto& l : low_layers) EXPECT_GT(l.relative_error, 0.01) << l.path;
  EXPECT_NE(low.loss, full.loss);
}

TEST(LowRankMethod, Tucker2OnLenet5TrainsAndReloads) {
  test::TempDir tmp;
  const auto dir = tmp.file("run");
  auto yaml = short_test_split(test::small_recipe(
      dir, low_rank_entry("    targets: ['conv*']\n    scheme: tucker2\n    energy: 0.8\n"), "lenet5", 256, 1));
  auto trained = train_run(yaml, dir);
  const auto form = trained.e.model->named_modules()["conv2"]->as<nn::Conv2dImpl>()->options.form();
  EXPECT_EQ(form.kind, nn::ConvFormKind::tucker2);
  EXPECT_TRUE(std::isfinite(trained.result.test_eval.loss));
  EXPECT_NE(test::read_file(dir + "/log.txt").find("low_rank: conv2: " + form.str()), std::string::npos);
  EXPECT_NE(test::read_file(dir + "/metrics.jsonl").find("\"factorized_macs\""), std::string::npos);

  auto e = reload(dir);
  EXPECT_EQ(e.model->named_modules()["conv2"]->as<nn::Conv2dImpl>()->options.form(), form);
  auto a = trained.e.model->named_parameters(), b = e.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  torch::NoGradGuard no_grad;
  trained.e.model->eval();
  e.model->eval();
  const auto x = torch::randn({3, 1, 28, 28});
  EXPECT_TRUE(torch::equal(trained.e.model->forward(x), e.model->forward(x)));
}
