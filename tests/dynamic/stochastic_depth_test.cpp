// Stochastic depth: the survival rules over a model's residual blocks, test-time scaling against
// a hand-written block, dropped blocks that compute nothing of their branch, the drop frequency
// and the draw semantics, recipe errors at their keys, and a tiny ResNet-20 run that learns,
// reports blocks_run_fraction and resumes exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/compat.h"
#include "shrink/dynamic/stochastic_depth.h"
#include "shrink/models/model.h"
#include "shrink/models/resnet.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/experiment.h"
#include "shrink/train/trainer.h"
#include "dynamic/dynamic_test_util.h"

using namespace shrink;
using shrink::test::model_named;
using shrink::test::randomize_bn;
using shrink::test::snapshot;
using dynamic::StochasticDepth;

namespace {

std::unique_ptr<StochasticDepth> prepared(const std::string& yaml, const ModelPtr& model) {
  auto typed = test::prepared_method<StochasticDepth>("stochastic_depth", yaml, model);
  EXPECT_TRUE(typed);
  return typed;
}

std::vector<ResidualBlockPtr> blocks_of(const ModelPtr& model) {
  return dynamic_cast<ResidualNetImpl*>(model.get())->residual_blocks();
}


/// Whether the entries under `prefix` are equal (NaN equal to NaN: some weights are poisoned).
bool same(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
          const std::string& prefix) {
  for (const auto& [key, value] : a) {
    if (key.rfind(prefix, 0) != 0) continue;
    const auto& other = b.at(key);
    if (value.is_floating_point()) {
      if (!torch::equal(value.isnan(), other.isnan()) || !torch::equal(value.nan_to_num(0), other.nan_to_num(0)))
        return false;
    } else if (!torch::equal(value, other)) {
      return false;
    }
  }
  return true;
}

/// 2D batch-norm in eval mode, written out.
torch::Tensor bn_eval(const torch::nn::BatchNorm2d& bn, const torch::Tensor& x) {
  auto shape = [](const torch::Tensor& t) { return t.view({1, -1, 1, 1}); };
  return (x - shape(bn->running_mean)) / torch::sqrt(shape(bn->running_var) + bn->options.eps()) *
             shape(bn->weight) +
         shape(bn->bias);
}

}  // namespace

// ---- survival rules ----

TEST(StochasticDepthRules, LinearDecayOverResNet20Blocks) {
  auto model = model_named("resnet20");
  auto m = prepared("final_survival: 0.5\n", model);
  const auto blocks = blocks_of(model);
  ASSERT_EQ(blocks.size(), 9u);
  ASSERT_EQ(m->blocks().size(), 9u);
  double sum = 0;
  for (int64_t l = 1; l <= 9; ++l) {
    const double expected = 1.0 - static_cast<double>(l) / 9.0 * 0.5;
    EXPECT_DOUBLE_EQ(blocks[l - 1]->survival_probability, expected) << l;
    EXPECT_EQ(m->blocks()[l - 1].index, l);
    EXPECT_TRUE(m->blocks()[l - 1].targeted);
    sum += expected;
  }
  EXPECT_EQ(m->blocks()[0].path, "layer1.0");
  EXPECT_EQ(m->blocks()[8].path, "layer3.2");
  EXPECT_DOUBLE_EQ(blocks[8]->survival_probability, 0.5);
  EXPECT_NEAR(m->expected_run_fraction(), sum / 9, 1e-12);
  EXPECT_NEAR(m->expected_run_fraction(), 1 - 0.5 * 5.0 / 9.0, 1e-12);
  const auto lines = m->report();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("linear rule, final survival 0.5, 9 of 9 residual blocks targeted"), std::string::npos)
      << lines[0];
  EXPECT_NE(lines[0].find("0.7222"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("layer3.2 0.5"), std::string::npos) << lines[1];

  auto uniform_model = model_named("resnet20");
  prepared("final_survival: 0.8\nrule: uniform\n", uniform_model);
  for (const auto& b : blocks_of(uniform_model)) EXPECT_DOUBLE_EQ(b->survival_probability, 0.8);

  // Defaults: p_L 0.5, linear.
  auto default_model = model_named("resnet20");
  prepared("", default_model);
  EXPECT_DOUBLE_EQ(blocks_of(default_model)[8]->survival_probability, 0.5);
}

TEST(StochasticDepthRules, TargetsRestrictTheDroppedBlocksButNotTheCount) {
  auto model = model_named("resnet20");
  auto m = prepared("targets: ['layer2.*']\nexclude: ['layer2.1']\nfinal_survival: 0.1\n", model);
  const auto blocks = blocks_of(model);
  for (int64_t l = 1; l <= 9; ++l) {
    const bool targeted = l == 4 || l == 6;
    const double expected = targeted ? 1.0 - static_cast<double>(l) / 9.0 * 0.9 : 1.0;
    EXPECT_DOUBLE_EQ(blocks[l - 1]->survival_probability, expected) << l;
    EXPECT_EQ(m->blocks()[l - 1].targeted, targeted) << l;
  }
  // Preparing again changes nothing.
  TrainContext ctx;
  ctx.model = model;
  m->prepare_model(ctx);
  EXPECT_DOUBLE_EQ(blocks[3]->survival_probability, 1.0 - 4.0 / 9.0 * 0.9);
}

// ---- the block's forward ----

TEST(StochasticDepthBlock, EvalScalesTheBranchBySurvival) {
  torch::manual_seed(11);
  const double p = 0.7;
  // Post-activation basic block with an option-A shortcut (stride 2, 8 -> 16 channels).
  auto basic = std::make_shared<BasicBlockImpl>(8, 16, 2, ShortcutKind::kZeroPad);
  randomize_bn(*basic);
  basic->survival_probability = p;
  basic->eval();
  const auto x = torch::randn({2, 8, 6, 6});
  torch::NoGradGuard no_grad;
  {
    auto b = torch::conv2d(x, basic->conv1->weight, {}, 2, 1);
    b = bn_eval(basic->bn2, torch::conv2d(torch::relu(bn_eval(basic->bn1, b)), basic->conv2->weight, {}, 1, 1));
    auto s = x.slice(2, 0, c10::nullopt, 2).slice(3, 0, c10::nullopt, 2);
    s = torch::cat({s, torch::zeros_like(s)}, 1);
    const auto expected = torch::relu(s + p * b);
    EXPECT_TRUE(torch::allclose(basic->forward(x), expected, 1e-5, 1e-5));
    EXPECT_EQ(basic->branch_runs + basic->branch_drops, 0);  // eval forwards are not counted
    basic->survival_probability = 1.0;
    EXPECT_TRUE(torch::allclose(basic->forward(x), torch::relu(s + b), 1e-5, 1e-5));
  }
  // Pre-activation block with a projection on the pre-activation.
  auto preact = std::make_shared<PreActBlockImpl>(8, 16, 2, ShortcutKind::kProjection);
  randomize_bn(*preact);
  preact->survival_probability = p;
  preact->eval();
  {
    const auto pre = torch::relu(bn_eval(preact->bn1, x));
    auto b = torch::conv2d(pre, preact->conv1->weight, {}, 2, 1);
    b = torch::conv2d(torch::relu(bn_eval(preact->bn2, b)), preact->conv2->weight, {}, 1, 1);
    auto* proj = preact->downsample[0]->as<nn::Conv2dImpl>();
    const auto s = torch::conv2d(pre, proj->weight, {}, 2);
    EXPECT_TRUE(torch::allclose(preact->forward(x), s + p * b, 1e-5, 1e-5));
  }
  // Bottleneck: relu(shortcut + p * branch) through its own parts.
  auto bottleneck = std::make_shared<BottleneckImpl>(8, 4, 1);
  randomize_bn(*bottleneck);
  bottleneck->survival_probability = p;
  bottleneck->eval();
  EXPECT_TRUE(torch::allclose(bottleneck->forward(x),
                              torch::relu(bottleneck->shortcut(x, x) + p * bottleneck->branch(x)), 1e-5, 1e-5));
}

TEST(StochasticDepthBlock, DroppedBlockComputesNothingOfItsBranch) {
  torch::manual_seed(12);
  const auto x = torch::randn({2, 8, 6, 6});
  auto poison = [](const torch::Tensor& t) {
    torch::NoGradGuard no_grad;
    t.fill_(std::numeric_limits<float>::quiet_NaN());
  };

  // Post-activation, identity shortcut: out = relu(x); the branch's BNs keep their statistics
  // and its parameters get no gradient.
  auto basic = std::make_shared<BasicBlockImpl>(8, 8, 1, ShortcutKind::kZeroPad);
  poison(basic->conv1->weight);
  poison(basic->conv2->weight);
  basic->survival_probability = 0.0;  // every draw in [0, 1) drops
  basic->train();
  const auto before = snapshot(*basic);
  const auto xg = x.clone().requires_grad_(true);
  const auto out = basic->forward(xg);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  EXPECT_TRUE(torch::equal(out, torch::relu(x)));
  out.sum().backward();
  EXPECT_TRUE(torch::equal(xg.grad(), (x > 0).to(torch::kFloat)));
  for (const auto& p : basic->parameters()) EXPECT_FALSE(p.grad().defined());
  EXPECT_TRUE(same(before, snapshot(*basic), "bn"));
  EXPECT_EQ(basic->branch_drops, 1);
  EXPECT_EQ(basic->branch_runs, 0);

  // Pre-activation, identity shortcut: not even preactivate() (bn1) runs.
  auto preact = std::make_shared<PreActBlockImpl>(8, 8, 1, ShortcutKind::kZeroPad);
  poison(preact->bn1->weight);
  poison(preact->conv1->weight);
  preact->survival_probability = 0.0;
  preact->train();
  const auto preact_before = snapshot(*preact);
  EXPECT_FALSE(preact->shortcut_reads_pre());
  EXPECT_TRUE(torch::equal(preact->forward(x), x));
  EXPECT_TRUE(same(preact_before, snapshot(*preact), ""));

  // Pre-activation with a projection: the shortcut reads relu(bn1(x)), so bn1 runs (and updates
  // its statistics) but the branch (conv1, bn2, conv2) does not.
  auto proj = std::make_shared<PreActBlockImpl>(8, 16, 2, ShortcutKind::kProjection);
  poison(proj->conv1->weight);
  proj->survival_probability = 0.0;
  proj->train();
  EXPECT_TRUE(proj->shortcut_reads_pre());
  const auto proj_before = snapshot(*proj);
  const auto y = proj->forward(x);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  EXPECT_FALSE(same(proj_before, snapshot(*proj), "bn1"));
  EXPECT_TRUE(same(proj_before, snapshot(*proj), "bn2"));
  {
    // What the shortcut computes, from bn1's batch statistics.
    torch::NoGradGuard no_grad;
    const auto mean = x.mean({0, 2, 3}, true), var = x.var({0, 2, 3}, false, true);
    const auto pre = torch::relu((x - mean) / torch::sqrt(var + 1e-5));
    const auto expected = torch::conv2d(pre, proj->downsample[0]->as<nn::Conv2dImpl>()->weight, {}, 2);
    EXPECT_TRUE(torch::allclose(y, expected, 1e-4, 1e-4));
  }

  // Bottleneck with a projection: relu(downsample(x)), branch BNs untouched.
  auto bottleneck = std::make_shared<BottleneckImpl>(8, 4, 1);
  poison(bottleneck->conv2->weight);
  bottleneck->survival_probability = 0.0;
  bottleneck->train();
  const auto bottleneck_before = snapshot(*bottleneck);
  EXPECT_TRUE(torch::isfinite(bottleneck->forward(x)).all().item<bool>());
  EXPECT_TRUE(same(bottleneck_before, snapshot(*bottleneck), "bn"));
  EXPECT_FALSE(same(bottleneck_before, snapshot(*bottleneck), "downsample"));
}

TEST(StochasticDepthBlock, RunsWithTheSurvivalProbabilityFromTheGlobalGenerator) {
  auto block = std::make_shared<BasicBlockImpl>(4, 4, 1, ShortcutKind::kZeroPad);
  block->train();
  const auto x = torch::randn({1, 4, 3, 3});
  torch::NoGradGuard no_grad;

  // Survival 1 draws nothing.
  const auto rng = compat::cpu_rng_state();
  block->forward(x);
  EXPECT_TRUE(torch::equal(rng, compat::cpu_rng_state()));
  EXPECT_EQ(block->branch_runs, 1);

  // One draw u ~ U[0, 1) per training forward; the branch runs when u < p.
  const double p = 0.7;
  const int64_t n = 2000;
  block->survival_probability = p;
  block->branch_runs = block->branch_drops = 0;
  torch::manual_seed(2024);
  for (int64_t i = 0; i < n; ++i) block->forward(x);
  torch::manual_seed(2024);
  int64_t expected_runs = 0;
  for (int64_t i = 0; i < n; ++i) expected_runs += torch::rand({}, torch::kFloat64).item<double>() < p ? 1 : 0;
  EXPECT_EQ(block->branch_runs, expected_runs);
  EXPECT_EQ(block->branch_runs + block->branch_drops, n);
  // Binomial: standard deviation sqrt(0.7 * 0.3 / 2000) = 0.0102; 5 of them.
  const double fraction = static_cast<double>(block->branch_runs) / n;
  EXPECT_NEAR(fraction, p, 0.052);
}

// ---- recipe errors ----

TEST(StochasticDepthRecipe, ErrorsNameTheFileLineAndKey) {
  auto model = model_named("resnet20");
  auto expect = [&](const std::string& yaml, const std::string& key_path, const std::string& needle,
                    const ModelPtr& m) { test::expect_recipe_error([&] { prepared(yaml, m); }, yaml, key_path, needle); };
  expect("final_survival: 0\n", "compression[0].final_survival", "must be in (0, 1] (got 0)", model);
  expect("final_survival: 1.5\n", "compression[0].final_survival", "must be in (0, 1] (got 1.5)", model);
  expect("rule: linaer\n", "compression[0].rule", "did you mean 'linear'", model);
  expect("start_epoch: 1\n", "compression[0].start_epoch", "stochastic_depth takes no schedule", model);
  expect("end_step: 10\n", "compression[0].end_step", "stochastic_depth takes no schedule", model);
  expect("frequency: 2\n", "compression[0].frequency", "stochastic_depth takes no schedule", model);
  expect("targets: ['fc']\n", "compression[0].targets", "matches no residual block; the model's blocks: layer1.0",
         model);
  expect("", "compression[0].method", "needs a model with residual blocks; shrink::LeNet5Impl has none",
         model_named("lenet5", {1, 28, 28}));
  EXPECT_EQ(test::any_error_of([&] { prepared("final_survival: 0\n", model); }).rfind("recipe.yaml:2:", 0), 0u);

  // From C++ without a recipe: UserError naming the method and the key.
  MethodSpec spec;
  spec.method = "stochastic_depth";
  spec.targets = {"*"};
  StochasticDepth::Options options;
  options.final_survival = -1;
  EXPECT_EQ(test::any_error_of([&] { StochasticDepth(spec, options); }),
            "stochastic_depth: final_survival: must be in (0, 1] (got -1)");
  spec.schedule.start_step = 5;
  EXPECT_NE(test::any_error_of([&] { StochasticDepth(spec, StochasticDepth::Options{}); }).find("stochastic_depth: start_step:"),
            std::string::npos);
}

// ---- through the trainer ----

namespace {

std::string tiny_recipe(const std::string& dir) {
  return "name: sd\nseed: 4\nthreads: 2\noutput: " + dir +
         "\ndata: {name: synthetic, channels: 3, height: 8, width: 8, num_classes: 4, train_size: 256, "
         "test_size: 128, noise: 0.3}\nmodel: {name: resnet20}\n"
         "train:\n  epochs: 2\n  batch_size: 32\n  eval_batch_size: 64\n  progress: none\n"
         "  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"
         "compression:\n  - {method: stochastic_depth, final_survival: 0.5}\n";
}

}  // namespace

TEST(StochasticDepthTraining, TinyResNet20LearnsReportsAndResumesExactly) {
  test::TempDir tmp;
  const auto dir = tmp.file("full");
  auto full = test::train_run(tiny_recipe(dir), dir);
  EXPECT_GT(full.result.final_eval.top1, 40.0) << "chance is 25%";
  const auto metrics = test::read_file(dir + "/metrics.jsonl");
  EXPECT_NE(metrics.find("\"blocks_run_fraction\":"), std::string::npos) << metrics;
  const auto log = test::read_file(dir + "/log.txt");
  EXPECT_NE(log.find("stochastic_depth: linear rule, final survival 0.5, 9 of 9 residual blocks targeted"),
            std::string::npos)
      << log;
  // 8 steps x 9 blocks per epoch, expected fraction 0.722 (standard deviation about 0.05).
  auto* sd = dynamic_cast<StochasticDepth*>(full.e.methods.at(0).get());
  ASSERT_NE(sd, nullptr);
  const auto pos = metrics.rfind("\"blocks_run_fraction\":");
  const double fraction = std::stod(metrics.substr(pos + 22));
  EXPECT_GT(fraction, 0.5);
  EXPECT_LT(fraction, 0.95);
  std::printf("tiny run: top1 %.1f%%, blocks_run_fraction %.3f\n", full.result.final_eval.top1, fraction);
  EXPECT_DOUBLE_EQ(blocks_of(full.e.model)[8]->survival_probability, 0.5);

  // Interrupted mid-epoch and resumed: the same draws, so the same weights and metrics.
  const auto split_dir = tmp.file("split");
  ASSERT_TRUE(test::train_run(tiny_recipe(split_dir), split_dir, false, 11).result.interrupted);
  auto resumed = test::train_run(tiny_recipe(split_dir), split_dir, true);
  const auto a = snapshot(*full.e.model), b = snapshot(*resumed.e.model);
  EXPECT_TRUE(same(a, b, "")) << "resumed weights differ";
  const auto split_metrics = test::read_file(split_dir + "/metrics.jsonl");
  const auto split_pos = split_metrics.rfind("\"blocks_run_fraction\":");
  ASSERT_NE(split_pos, std::string::npos);
  EXPECT_DOUBLE_EQ(std::stod(split_metrics.substr(split_pos + 22)), fraction);

  // Rebuilt as `shrink eval` does: the recipe sets the probabilities again.
  auto e = build_experiment(test::recipe_node(read_checkpoint_recipe(dir + "/last.pt")), DataNeeds::TestOnly);
  load_checkpoint_methods(dir + "/last.pt", e);
  prepare_experiment(e);
  load_checkpoint_model(dir + "/last.pt", e);
  EXPECT_DOUBLE_EQ(blocks_of(e.model)[0]->survival_probability, 1.0 - 0.5 / 9.0);
  const auto eval = evaluate(e.model, e.test_data, 64, e.device);
  EXPECT_DOUBLE_EQ(eval.top1, full.result.final_eval.top1);
}
