// Block gating (ConvNet-AIG): at inference a skipped input computes nothing of its block's branch
// (against a hand-written block, per input), the straight-through gate (hard values, the
// Gumbel-softmax gradient), the cost accounting, recipe errors at their keys, and tiny ResNet-20
// runs that meet the target rate, evaluate from their checkpoint and resume exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/compat.h"
#include "shrink/dynamic/block_gate.h"
#include "shrink/dynamic/block_gating.h"
#include "shrink/models/model.h"
#include "shrink/models/resnet.h"
#include "shrink/report/summary.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/experiment.h"
#include "shrink/train/trainer.h"
#include "dynamic/dynamic_test_util.h"

using namespace shrink;
using shrink::test::model_named;
using shrink::test::randomize_bn;
using shrink::test::snapshot;
using dynamic::BlockGate;
using dynamic::BlockGateOptions;
using dynamic::BlockGating;

namespace {

ConfigNode entry(const std::string& yaml) {
  return ConfigNode(read_yaml_string("method: block_gating\n" + yaml, "recipe.yaml"), "compression[0]");
}

std::unique_ptr<BlockGating> prepared(const std::string& yaml, const ModelPtr& model,
                                      std::vector<int64_t> sample_shape = {}) {
  auto m = build_method(entry(yaml));
  m->bind(model);
  auto* typed = dynamic_cast<BlockGating*>(m.release());
  EXPECT_TRUE(typed);
  std::unique_ptr<BlockGating> out(typed);
  if (!sample_shape.empty()) out->set_sample_shape(sample_shape);
  TrainContext ctx;
  ctx.model = model;
  out->prepare_model(ctx);
  return out;
}

std::vector<ResidualBlockPtr> blocks_of(const ModelPtr& model) {
  return dynamic_cast<ResidualNetImpl*>(model.get())->residual_blocks();
}

bool same(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [key, value] : a)
    if (!b.count(key) || !torch::equal(value, b.at(key))) return false;
  return true;
}

torch::Tensor bn_eval(const torch::nn::BatchNorm2d& bn, const torch::Tensor& x) {
  auto shape = [](const torch::Tensor& t) { return t.view({1, -1, 1, 1}); };
  return (x - shape(bn->running_mean)) / torch::sqrt(shape(bn->running_var) + bn->options.eps()) *
             shape(bn->weight) +
         shape(bn->bias);
}

/// A gate that executes input n exactly when the mean of its channel 0 exceeds 0.5 (eval mode):
/// hidden unit 0 = that mean, bn the identity, execute logit - skip logit = relu(mean) - 0.5.
BlockGate threshold_gate(int64_t channels) {
  BlockGate gate(BlockGateOptions(channels).hidden(4));
  torch::NoGradGuard no_grad;
  gate->fc1->weight.zero_();
  gate->fc1->bias.zero_();
  gate->fc1->weight[0][0] = 1.0;
  gate->bn->running_mean.zero_();
  gate->bn->running_var.fill_(1.0 - gate->bn->options.eps());
  gate->bn->weight.fill_(1.0);
  gate->bn->bias.zero_();
  gate->fc2->weight.zero_();
  gate->fc2->weight[1][0] = 1.0;
  gate->fc2->bias[0] = 0.5;
  gate->fc2->bias[1] = 0.0;
  return gate;
}

/// A batch of 5 inputs whose channel 0 decides the threshold gate: inputs 0, 2 and 3 execute.
torch::Tensor mixed_batch(int64_t channels) {
  auto x = torch::randn({5, channels, 6, 6});
  const std::vector<double> level = {2.0, -1.0, 1.5, 3.0, 0.1};
  for (int64_t n = 0; n < 5; ++n) x[n][0].fill_(level[n]);
  return x;
}

/// Records the batch sizes that reach preactivate() and branch().
template <class Block>
struct Counting : Block {
  using Block::Block;
  std::vector<int64_t> pre_sizes, branch_sizes;
  torch::Tensor preactivate(const torch::Tensor& x) override {
    pre_sizes.push_back(x.size(0));
    return Block::preactivate(x);
  }
  torch::Tensor branch(const torch::Tensor& pre) override {
    branch_sizes.push_back(pre.size(0));
    return Block::branch(pre);
  }
};

}  // namespace

// ---- the block's forward ----

TEST(BlockGatingBlock, SkippedInputsComputeNothingAtInference) {
  torch::manual_seed(21);
  const std::vector<bool> runs = {true, false, true, true, false};
  const auto x = mixed_batch(8);
  torch::NoGradGuard no_grad;

  // Post-activation basic block, option-A shortcut (stride 2, 8 -> 16 channels).
  auto basic = std::make_shared<Counting<BasicBlockImpl>>(8, 16, 2, ShortcutKind::kZeroPad);
  randomize_bn(*basic);
  basic->set_gate(threshold_gate(8).ptr());
  basic->eval();
  {
    const auto out = basic->forward(x);
    EXPECT_EQ(basic->branch_sizes, std::vector<int64_t>({3}));
    EXPECT_EQ(basic->gate_eval_inputs, 5);
    EXPECT_EQ(basic->gate_eval_executed, 3);
    EXPECT_EQ(basic->gate_train_inputs, 0);
    for (int64_t n = 0; n < 5; ++n) {
      const auto xn = x.slice(0, n, n + 1);
      auto s = xn.slice(2, 0, c10::nullopt, 2).slice(3, 0, c10::nullopt, 2);
      s = torch::cat({s, torch::zeros_like(s)}, 1);
      auto b = torch::conv2d(xn, basic->conv1->weight, {}, 2, 1);
      b = bn_eval(basic->bn2, torch::conv2d(torch::relu(bn_eval(basic->bn1, b)), basic->conv2->weight, {}, 1, 1));
      const auto expected = torch::relu(runs[n] ? s + b : s);
      EXPECT_TRUE(torch::allclose(out.slice(0, n, n + 1), expected, 1e-5, 1e-5)) << n;
    }
  }
  // Every input skipped, the branch poisoned: branch() is not even called.
  {
    torch::NoGradGuard ng;
    basic->conv1->weight.fill_(std::numeric_limits<float>::quiet_NaN());
    basic->branch_sizes.clear();
    auto skip_all = x.clone();
    skip_all.select(1, 0).fill_(-1.0);
    const auto out = basic->forward(skip_all);
    EXPECT_TRUE(basic->branch_sizes.empty());
    auto s = skip_all.slice(2, 0, c10::nullopt, 2).slice(3, 0, c10::nullopt, 2);
    EXPECT_TRUE(torch::equal(out, torch::relu(torch::cat({s, torch::zeros_like(s)}, 1))));
    // Only the executing inputs see the poison.
    const auto mixed = basic->forward(x);
    for (int64_t n = 0; n < 5; ++n)
      EXPECT_EQ(torch::isfinite(mixed[n]).all().item<bool>(), !runs[n]) << n;
  }

  // Pre-activation, identity shortcut: preactivate() runs on the executing inputs only.
  auto preact = std::make_shared<Counting<PreActBlockImpl>>(8, 8, 1, ShortcutKind::kZeroPad);
  randomize_bn(*preact);
  preact->set_gate(threshold_gate(8).ptr());
  preact->eval();
  {
    const auto out = preact->forward(x);
    EXPECT_EQ(preact->pre_sizes, std::vector<int64_t>({3}));
    EXPECT_EQ(preact->branch_sizes, std::vector<int64_t>({3}));
    for (int64_t n = 0; n < 5; ++n) {
      const auto xn = x.slice(0, n, n + 1);
      const auto pre = torch::relu(bn_eval(preact->bn1, xn));
      auto b = torch::conv2d(pre, preact->conv1->weight, {}, 1, 1);
      b = torch::conv2d(torch::relu(bn_eval(preact->bn2, b)), preact->conv2->weight, {}, 1, 1);
      EXPECT_TRUE(torch::allclose(out.slice(0, n, n + 1), runs[n] ? xn + b : xn, 1e-5, 1e-5)) << n;
    }
  }

  // Pre-activation with a projection on the pre-activation: the whole batch pre-activates.
  auto proj = std::make_shared<Counting<PreActBlockImpl>>(8, 16, 2, ShortcutKind::kProjection);
  randomize_bn(*proj);
  proj->set_gate(threshold_gate(8).ptr());
  proj->eval();
  {
    const auto out = proj->forward(x);
    EXPECT_EQ(proj->pre_sizes, std::vector<int64_t>({5}));
    EXPECT_EQ(proj->branch_sizes, std::vector<int64_t>({3}));
    auto* conv = proj->downsample[0]->as<nn::Conv2dImpl>();
    for (int64_t n = 0; n < 5; ++n) {
      const auto pre = torch::relu(bn_eval(proj->bn1, x.slice(0, n, n + 1)));
      const auto s = torch::conv2d(pre, conv->weight, {}, 2);
      auto b = torch::conv2d(pre, proj->conv1->weight, {}, 2, 1);
      b = torch::conv2d(torch::relu(bn_eval(proj->bn2, b)), proj->conv2->weight, {}, 1, 1);
      EXPECT_TRUE(torch::allclose(out.slice(0, n, n + 1), runs[n] ? s + b : s, 1e-5, 1e-5)) << n;
    }
  }

  // Bottleneck (projection + BN shortcut), all inputs executing: one branch call on the batch.
  auto bottleneck = std::make_shared<Counting<BottleneckImpl>>(8, 4, 1);
  randomize_bn(*bottleneck);
  bottleneck->set_gate(threshold_gate(8).ptr());
  bottleneck->eval();
  {
    auto all = x.clone();
    all.select(1, 0).fill_(2.0);
    const auto expected = torch::relu(bottleneck->shortcut(all, all) + bottleneck->branch(all));
    bottleneck->branch_sizes.clear();
    EXPECT_TRUE(torch::allclose(bottleneck->forward(all), expected, 1e-5, 1e-5));
    EXPECT_EQ(bottleneck->branch_sizes, std::vector<int64_t>({5}));
  }
}

TEST(BlockGatingBlock, TrainingMultipliesTheWholeBatchAndComposesWithStochasticDepth) {
  torch::manual_seed(22);
  auto block = std::make_shared<Counting<BasicBlockImpl>>(8, 8, 1, ShortcutKind::kZeroPad);
  block->set_gate(threshold_gate(8).ptr());
  EXPECT_TRUE(block->named_children().contains("gate"));
  EXPECT_EQ(block->named_parameters().size(), 6u + 6u);  // conv1, bn1 (2), conv2, bn2 (2) + gate (6)
  block->train();
  const auto x = mixed_batch(8);
  const auto out = block->forward(x);
  EXPECT_EQ(block->branch_sizes, std::vector<int64_t>({5}));
  const auto g = block->last_gate_decisions;
  ASSERT_TRUE(g.defined());
  EXPECT_EQ(block->gate_train_inputs, 5);
  EXPECT_EQ(block->gate_train_executed, std::llround(g.sum().item<double>()));
  {
    // Same BN batch statistics: branch on the whole batch again.
    const auto b = block->branch(x);
    const auto expected = torch::relu(x + g.detach().view({5, 1, 1, 1}) * b);
    EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5));
  }

  // Survival 0 drops every training forward before the gate; in eval the gated branch is
  // scaled by the survival probability.
  block->survival_probability = 0.0;
  block->last_gate_decisions = torch::Tensor();
  block->branch_sizes.clear();
  EXPECT_TRUE(torch::equal(block->forward(x), torch::relu(x)));
  EXPECT_FALSE(block->last_gate_decisions.defined());
  EXPECT_TRUE(block->branch_sizes.empty());
  block->survival_probability = 0.5;
  block->set_gate(threshold_gate(8).ptr());  // training moved the old gate's running statistics
  block->eval();
  randomize_bn(*block);
  torch::NoGradGuard no_grad;
  const auto y = block->forward(x);
  const std::vector<bool> runs = {true, false, true, true, false};
  for (int64_t n = 0; n < 5; ++n) {
    const auto xn = x.slice(0, n, n + 1);
    const auto expected = torch::relu(runs[n] ? xn + 0.5 * block->branch(xn) : xn);
    EXPECT_TRUE(torch::allclose(y.slice(0, n, n + 1), expected, 1e-5, 1e-5)) << n;
  }

  // set_gate(nullptr) removes the child.
  block->set_gate(nullptr);
  EXPECT_FALSE(block->named_children().contains("gate"));
  EXPECT_EQ(block->named_parameters().size(), 6u);
}

// ---- the gate ----

TEST(BlockGatingGate, StraightThroughHardForwardSoftGradient) {
  torch::manual_seed(23);
  const double tau = 0.5;
  BlockGate gate(BlockGateOptions(6).hidden(5).temperature(tau));
  gate->train();
  const auto x = torch::randn({64, 6, 3, 3});
  torch::manual_seed(99);
  const auto g = gate->forward(x);
  ASSERT_EQ(g.sizes(), torch::IntArrayRef({64}));
  EXPECT_TRUE(torch::equal(g.detach() * (1 - g.detach()), torch::zeros({64})));  // exactly 0 or 1
  const double rate = g.mean().item<double>();
  EXPECT_GT(rate, 0.0);
  EXPECT_LT(rate, 1.0);
  g.sum().backward();
  for (const auto& p : gate->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  }
  // The same noise by hand: hard argmax forward, softmax((logits + G) / tau) gradient.
  torch::manual_seed(99);
  const auto u = torch::rand({64, 2});
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = gate->logits(x);  // the same batch statistics
  }
  const auto noisy = logits - torch::log(-torch::log(u + 1e-20) + 1e-20);
  EXPECT_TRUE(torch::equal(g.detach(), noisy.argmax(1).to(torch::kFloat)));
  const auto soft = torch::softmax(noisy / tau, 1).select(1, 1);
  // d soft / d bias_execute = soft (1 - soft) / tau; d soft / d bias_skip is its negative.
  const double expected = (soft * (1 - soft)).sum().item<double>() / tau;
  EXPECT_NEAR(gate->fc2->bias.grad()[1].item<double>(), expected, 1e-4 * std::max(1.0, expected));
  EXPECT_NEAR(gate->fc2->bias.grad()[0].item<double>(), -expected, 1e-4 * std::max(1.0, expected));

  // A training batch of one input works (running statistics); eval draws no noise.
  EXPECT_NO_THROW(gate->forward(x.slice(0, 0, 1)));
  gate->eval();
  const auto rng = compat::cpu_rng_state();
  const auto e1 = gate->forward(x), e2 = gate->forward(x);
  EXPECT_TRUE(torch::equal(rng, compat::cpu_rng_state()));
  EXPECT_TRUE(torch::equal(e1, e2));
  const auto l = gate->logits(x);
  EXPECT_TRUE(torch::equal(e1, l.argmax(1).to(torch::kFloat)));
}

// ---- the method on a model ----

TEST(BlockGatingMethod, AttachesGatesAndCountsCosts) {
  auto model = model_named("resnet20");
  const auto dense = summarize(model, {3, 8, 8});
  const auto params_before = model->parameters().size();
  auto m = prepared("targets: ['layer2.*', 'layer3.0']\nhidden: 8\n", model, {3, 8, 8});
  const auto blocks = blocks_of(model);
  ASSERT_EQ(m->blocks().size(), 9u);
  int64_t gated = 0;
  for (size_t i = 0; i < 9; ++i) {
    const bool targeted = i >= 3 && i <= 6;
    EXPECT_EQ(m->blocks()[i].targeted, targeted) << i;
    EXPECT_EQ(blocks[i]->gate != nullptr, targeted) << i;
    gated += targeted;
  }
  EXPECT_EQ(m->blocks()[3].path, "layer2.0");
  ASSERT_EQ(m->target_modules().size(), 4u);
  EXPECT_EQ(m->target_modules()[3].first, "layer3.0");
  EXPECT_TRUE(m->target_parameters().empty());
  // Gate parameters are the model's: fc1 (w, b), bn (w, b), fc2 (w, b) per gate.
  EXPECT_EQ(model->parameters().size(), params_before + 6 * gated);
  EXPECT_EQ(model->named_parameters().contains("layer2.0.gate.fc1.weight"), true);
  EXPECT_EQ(blocks[3]->gate->options.channels(), 16);
  EXPECT_EQ(blocks[4]->gate->options.channels(), 32);

  // Costs at 8x8: the dense model as `shrink summary` counts it; a stage-2 branch (4x4
  // outputs): 16*32*9*16 + 32*32*9*16 MACs for layer2.0, 2*32*32*9*16 for the others.
  const auto& costs = m->costs();
  EXPECT_EQ(costs.dense_macs, dense.macs);
  EXPECT_EQ(m->blocks()[3].branch_macs, 16 * 32 * 9 * 16 + 32 * 32 * 9 * 16);
  EXPECT_EQ(m->blocks()[4].branch_macs, 2 * 32 * 32 * 9 * 16);
  EXPECT_EQ(m->blocks()[6].branch_macs, 32 * 64 * 9 * 4 + 64 * 64 * 9 * 4);
  EXPECT_EQ(costs.gated_branch_macs, 16 * 32 * 9 * 16 + 32 * 32 * 9 * 16 + 2 * (2 * 32 * 32 * 9 * 16) +
                                         32 * 64 * 9 * 4 + 64 * 64 * 9 * 4);
  EXPECT_EQ(costs.gate_macs, (16 * 8 + 16) + 2 * (32 * 8 + 16) + (32 * 8 + 16));
  // `shrink summary` of the gated model: every layer (measured in prepare_model) plus the gates.
  EXPECT_EQ(summarize(model, {3, 8, 8}).macs, dense.macs + costs.gate_macs);

  // Inference cost: forced rates (all gates closed, then all open).
  torch::NoGradGuard no_grad;
  for (const auto& b : blocks)
    if (b->gate) b->gate->fc2->weight.zero_(), b->gate->fc2->bias.copy_(torch::tensor({1.0, 0.0}));
  const auto x = torch::randn({6, 3, 8, 8});
  const int64_t seen_before = blocks[3]->gate_eval_inputs;  // summarize's forward counted too
  auto [rate, macs] = m->measure_inference({x, x});
  EXPECT_EQ(rate, 0.0);
  EXPECT_DOUBLE_EQ(macs, static_cast<double>(costs.dense_macs - costs.gated_branch_macs + costs.gate_macs));
  EXPECT_EQ(blocks[3]->gate_eval_inputs - seen_before, 12);
  EXPECT_TRUE(model->is_training());  // modes restored
  blocks[4]->gate->fc2->bias.copy_(torch::tensor({0.0, 1.0}));
  std::tie(rate, macs) = m->measure_inference({x});
  EXPECT_DOUBLE_EQ(rate, 0.25);
  EXPECT_DOUBLE_EQ(m->blocks()[4].eval_rate, 1.0);
  EXPECT_DOUBLE_EQ(macs, static_cast<double>(costs.dense_macs - costs.gated_branch_macs + costs.gate_macs +
                                             m->blocks()[4].branch_macs));
  const auto lines = m->report();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find("4 of 9 residual blocks gated"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("layer2.0, layer2.1, layer2.2, layer3.0"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("dense model " + std::to_string(dense.macs) + " MACs per input"), std::string::npos)
      << lines[2];

  // Preparing again keeps the gates (and their weights).
  const auto gate = blocks[3]->gate;
  TrainContext ctx;
  ctx.model = model;
  m->prepare_model(ctx);
  EXPECT_EQ(blocks[3]->gate, gate);
  EXPECT_EQ(model->parameters().size(), params_before + 6 * gated);
}

TEST(BlockGatingMethod, TargetRateLoss) {
  auto model = model_named("resnet20");
  auto m = prepared("target_rate: 0.25\npenalty: 3\n", model);
  model->train();
  model->forward(torch::randn({8, 3, 8, 8}));
  double expected = 0;
  for (const auto& b : blocks_of(model)) {
    ASSERT_TRUE(b->last_gate_decisions.defined());
    expected += std::pow(b->last_gate_decisions.mean().item<double>() - 0.25, 2) / 9;
  }
  TrainContext ctx;
  const auto loss = m->on_loss(ctx, torch::tensor(1.5));
  EXPECT_NEAR(loss.item<double>(), 1.5 + 3 * expected, 1e-6);
  EXPECT_TRUE(loss.requires_grad());
  for (const auto& b : blocks_of(model)) EXPECT_FALSE(b->last_gate_decisions.defined());  // consumed
  EXPECT_DOUBLE_EQ(m->on_loss(ctx, torch::tensor(1.5)).item<double>(), 1.5);
}

// ---- recipe errors ----

TEST(BlockGatingRecipe, ErrorsNameTheFileLineAndKey) {
  auto model = model_named("resnet20");
  auto expect = [&](const std::string& yaml, const std::string& key_path, const std::string& needle,
                    const ModelPtr& m) { test::expect_recipe_error([&] { prepared(yaml, m); }, yaml, key_path, needle); };
  expect("target_rate: 0\n", "compression[0].target_rate", "must be in (0, 1] (got 0)", model);
  expect("target_rate: 1.2\n", "compression[0].target_rate", "must be in (0, 1] (got 1.2)", model);
  expect("penalty: -1\n", "compression[0].penalty", "must be a finite number >= 0 (got -1)", model);
  expect("hidden: 0\n", "compression[0].hidden", "must be at least 1 (got 0)", model);
  expect("temperature: 0\n", "compression[0].temperature", "must be positive (got 0)", model);
  expect("calibration_batches: -2\n", "compression[0].calibration_batches", "must be >= 0", model);
  expect("target_rat: 0.5\n", "compression[0].target_rat", "did you mean 'target_rate'", model);
  expect("end_epoch: 1\n", "compression[0].end_epoch", "block_gating takes no schedule", model);
  expect("targets: ['fc']\n", "compression[0].targets", "matches no residual block; the model's blocks: layer1.0",
         model);
  expect("", "compression[0].method", "needs a model with residual blocks; shrink::LeNet5Impl has none",
         model_named("lenet5", {1, 28, 28}));
  EXPECT_EQ(test::any_error_of([&] { prepared("hidden: 0\n", model); }).rfind("recipe.yaml:2:", 0), 0u);

  MethodSpec spec;
  spec.method = "block_gating";
  spec.targets = {"*"};
  BlockGating::Options options;
  options.temperature = -1;
  EXPECT_EQ(test::any_error_of([&] { BlockGating(spec, options); }), "block_gating: temperature: must be positive (got -1)");
}

// ---- through the trainer ----

namespace {

std::string tiny_recipe(const std::string& dir, double target, double penalty, int epochs = 3) {
  return "name: gating\nseed: 5\nthreads: 2\noutput: " + dir +
         "\ndata: {name: synthetic, channels: 3, height: 8, width: 8, num_classes: 4, train_size: 256, "
         "test_size: 128, noise: 0.3}\nmodel: {name: resnet20}\n"
         "train:\n  epochs: " +
         std::to_string(epochs) +
         "\n  batch_size: 32\n  eval_batch_size: 64\n  progress: none\n"
         "  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"
         "compression:\n  - {method: block_gating, target_rate: " +
         std::to_string(target) + ", penalty: " + std::to_string(penalty) + ", calibration_batches: 2}\n";
}

/// The last value of `key` in metrics.jsonl (NaN when absent).
double last_metric(const std::string& metrics, const std::string& key) {
  const auto pos = metrics.rfind("\"" + key + "\":");
  if (pos == std::string::npos) return std::nan("");
  return std::stod(metrics.substr(pos + key.size() + 3));
}

}  // namespace

TEST(BlockGatingTraining, MeetsTheTargetRateEvaluatesFromItsCheckpointAndResumesExactly) {
  test::TempDir tmp;
  const auto dir = tmp.file("half");
  const auto recipe = tiny_recipe(dir, 0.5, 20);
  auto full = test::train_run(recipe, dir);
  const auto metrics = test::read_file(dir + "/metrics.jsonl");
  const double rate = last_metric(metrics, "gate_rate");
  const double eval_rate = last_metric(metrics, "gate_eval_rate");
  const double macs = last_metric(metrics, "avg_macs");
  std::printf("target 0.5: top1 %.1f%%, gate_rate %.3f, gate_eval_rate %.3f, avg_macs %.0f\n",
              full.result.final_eval.top1, rate, eval_rate, macs);
  EXPECT_NEAR(rate, 0.5, 0.1) << metrics;
  EXPECT_GT(full.result.final_eval.top1, 40.0) << "chance is 25%";
  auto* gating = dynamic_cast<BlockGating*>(full.e.methods.at(0).get());
  ASSERT_NE(gating, nullptr);
  const auto& costs = gating->costs();
  EXPECT_GT(macs, static_cast<double>(costs.dense_macs - costs.gated_branch_macs));
  EXPECT_LT(macs, static_cast<double>(costs.dense_macs + costs.gate_macs));
  const auto log = test::read_file(dir + "/log.txt");
  EXPECT_NE(log.find("block_gating: 9 of 9 residual blocks gated"), std::string::npos) << log;
  EXPECT_NE(log.find("block_gating: dense model " + std::to_string(costs.dense_macs) + " MACs per input"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("block_gating: epoch 3 eval execution rate"), std::string::npos) << log;

  // Rebuilt as `shrink eval` does: the recipe attaches the gates before the weights load.
  {
    auto e = build_experiment(test::recipe_node(read_checkpoint_recipe(dir + "/last.pt")), DataNeeds::TestOnly);
    load_checkpoint_methods(dir + "/last.pt", e);
    prepare_experiment(e);
    load_checkpoint_model(dir + "/last.pt", e);
    ASSERT_NE(blocks_of(e.model)[4]->gate, nullptr);
    EXPECT_TRUE(torch::equal(blocks_of(e.model)[4]->gate->fc2->weight, blocks_of(full.e.model)[4]->gate->fc2->weight));
    const auto eval = evaluate(e.model, e.test_data, 64, e.device);
    EXPECT_DOUBLE_EQ(eval.top1, full.result.final_eval.top1);
    EXPECT_DOUBLE_EQ(eval.loss, full.result.final_eval.loss);
  }

  // Interrupted mid-epoch (8 steps per epoch) and resumed: the same Gumbel draws, so the same
  // weights and metrics.
  const auto split_dir = tmp.file("split");
  const auto split_recipe = tiny_recipe(split_dir, 0.5, 20);
  ASSERT_TRUE(test::train_run(split_recipe, split_dir, false, 11).result.interrupted);
  auto resumed = test::train_run(split_recipe, split_dir, true);
  EXPECT_TRUE(same(snapshot(*full.e.model), snapshot(*resumed.e.model))) << "resumed weights differ";
  const auto split_metrics = test::read_file(split_dir + "/metrics.jsonl");
  EXPECT_DOUBLE_EQ(last_metric(split_metrics, "gate_rate"), rate);
  EXPECT_DOUBLE_EQ(last_metric(split_metrics, "avg_macs"), macs);
  // The second epoch was the one interrupted.
  const auto second = [](const std::string& m) {
    const auto line = m.substr(m.find('\n') + 1);
    return last_metric(line.substr(0, line.find('\n')), "gate_rate");
  };
  EXPECT_DOUBLE_EQ(second(split_metrics), second(metrics));

  // A high target keeps most branches.
  const auto high_dir = tmp.file("high");
  test::train_run(tiny_recipe(high_dir, 0.9, 20, 2), high_dir);
  const double high = last_metric(test::read_file(high_dir + "/metrics.jsonl"), "gate_rate");
  std::printf("target 0.9: gate_rate %.3f\n", high);
  EXPECT_NEAR(high, 0.9, 0.07);
}
