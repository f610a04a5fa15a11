// The unstructured_pruning method: schedules through the trainer (AGP per step, iterative
// events, one-shot global), OBD saliency against a reference Fisher estimate, random pruning,
// lottery-ticket rewinding, exact resume, and recipe errors.
#include <gtest/gtest.h>

#include <cmath>

#include "shrink/compression/builtin.h"
#include "shrink/nn/linear.h"
#include "shrink/pruning/unstructured.h"
#include "shrink/train/trainer.h"
#include "../train/train_test_util.h"

using namespace shrink;
using shrink::test::StopAt;
using pruning::UnstructuredPruning;

namespace {

/// Records the targeted sparsity seen by each step, after the method acted in on_step_begin.
struct SparsityRecorder : Callback {
  explicit SparsityRecorder(const UnstructuredPruning* method) : method_(method) {}
  std::string name() const override { return "recorder"; }
  void on_step_begin(TrainContext&) override { seen.push_back(method_->current_sparsity()); }
  const UnstructuredPruning* method_;
  std::vector<double> seen;
};

std::string pruning_entry(const std::string& body) {
  return "compression:\n  - method: unstructured_pruning\n    targets: ['fc*.weight']\n" + body;
}

struct Run {
  Experiment e;
  TrainResult result;
  std::vector<double> seen;
};

Run run(const std::string& yaml, const std::string& dir, bool resume = false, int64_t stop_at = -1) {
  Run r;
  r.e = build_experiment(test::recipe_node(yaml));
  apply_runtime_settings(r.e.recipe);
  auto* method = dynamic_cast<UnstructuredPruning*>(r.e.methods.at(0).get());
  auto recorder = std::make_unique<SparsityRecorder>(method);
  auto* rec = recorder.get();
  r.e.callbacks.push_back(std::move(recorder));
  if (stop_at > 0) r.e.callbacks.push_back(std::make_unique<StopAt>(stop_at));
  TrainOptions options;
  options.run_dir = dir;
  options.resume = resume;
  options.quiet = true;
  r.result = train(r.e, options);
  clear_stop_request();
  r.seen = rec->seen;
  return r;
}

int64_t target_weights(const Experiment& e) {
  int64_t n = 0;
  for (const auto& p : e.model->named_parameters())
    if (p.key().rfind("fc", 0) == 0 && p.key().find("weight") != std::string::npos && p.value().dim() == 2)
      n += p.value().numel();
  return n;
}

struct Tiny : ModelImpl {
  Tiny() {
    fc1 = register_module("fc1", nn::Linear(6, 8));
    fc2 = register_module("fc2", nn::Linear(8, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) override { return fc2->forward(torch::tanh(fc1->forward(x))); }
  nn::Linear fc1{nullptr}, fc2{nullptr};
};

MethodSpec spec_for(std::vector<std::string> targets) {
  MethodSpec spec;
  spec.method = "unstructured_pruning";
  spec.targets = std::move(targets);
  return spec;
}

}  // namespace

TEST(UnstructuredPruning, AgpFollowsTheCubicAtEveryStep) {
  test::TempDir tmp;
  // 1024 examples / 64 = 16 steps per epoch, 2 epochs.
  auto yaml = test::small_recipe(tmp.file("a"), pruning_entry("    schedule: agp\n    initial_sparsity: 0.1\n"
                                                              "    sparsity: 0.8\n    start_step: 2\n"
                                                              "    end_step: 20\n    frequency: 3\n"));
  auto r = run(yaml, tmp.file("a"));
  ASSERT_EQ(r.seen.size(), 32u);
  const double total = static_cast<double>(target_weights(r.e));
  for (int64_t t = 0; t < 32; ++t) {
    double expected = 0;
    if (t >= 20) expected = 0.8;
    else if (t >= 2) expected = pruning::agp_sparsity(0.1, 0.8, 2, 20, 2 + (t - 2) / 3 * 3);
    // Per-layer rounding of the pruned count: within a couple of weights of the formula.
    EXPECT_NEAR(r.seen[t], expected, 3.0 / total) << "step " << t;
  }
  // The pruned weights are zero in the trained model and the run log says so.
  auto* m = dynamic_cast<UnstructuredPruning*>(r.e.methods[0].get());
  for (const auto& w : m->masked_weights()) {
    EXPECT_NEAR(pruning::mask_sparsity(w.mask), 0.8, 1e-3) << w.name;
    EXPECT_EQ(w.weight.masked_select(w.mask == 0).abs().max().item<float>(), 0.0f);
  }
  EXPECT_NE(test::read_file(tmp.file("a") + "/log.txt").find("unstructured_pruning: pruned"), std::string::npos);
  EXPECT_NE(test::read_file(tmp.file("a") + "/metrics.jsonl").find("unstructured_pruning_sparsity"),
            std::string::npos);
  // Still learns at 80% sparsity (10 classes: chance is 10%).
  EXPECT_GT(r.result.test_eval.top1, 50.0);
}

TEST(UnstructuredPruning, IterativeCyclesAndGlobalScope) {
  test::TempDir tmp;
  auto yaml = test::small_recipe(tmp.file("a"), pruning_entry("    schedule: iterative\n    cycles: 4\n"
                                                              "    sparsity: 0.9375\n    scope: global\n"
                                                              "    start_step: 4\n    end_step: 28\n"));
  auto r = run(yaml, tmp.file("a"));
  // Events at steps 4, 10, 16, 22, each keeping half of what was left.
  const std::vector<std::pair<int64_t, double>> expected = {{0, 0.0}, {4, 0.5}, {9, 0.5}, {10, 0.75},
                                                           {16, 0.875}, {21, 0.875}, {22, 0.9375}, {31, 0.9375}};
  for (auto [t, s] : expected) EXPECT_NEAR(r.seen[t], s, 1e-4) << "step " << t;
  // Global: one threshold, so the layers end at different sparsities.
  auto* m = dynamic_cast<UnstructuredPruning*>(r.e.methods[0].get());
  auto w = m->masked_weights();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NE(pruning::mask_sparsity(w[0].mask), pruning::mask_sparsity(w[2].mask));
}

TEST(UnstructuredPruning, ObdRanksBySaliencyFromTheFisherDiagonal) {
  torch::manual_seed(11);
  auto model = std::make_shared<Tiny>();
  UnstructuredPruning::Options o;
  o.criterion = "obd";
  o.obd_batches = 3;
  UnstructuredPruning method(spec_for({"fc1.weight", "fc2.weight"}), o);
  method.bind(model);
  TrainContext ctx;
  ctx.model = model;
  method.prepare_model(ctx);
  std::vector<Batch> batches;
  for (int i = 0; i < 3; ++i) batches.push_back({torch::randn({5, 6}), torch::randint(0, 3, {5})});
  ctx.calibration_batch = [&](int64_t i) { return batches.at(i); };

  // Reference: F_ii = mean over batches of (dL/dw_i)^2; saliency 0.5 F_ii w_i^2.
  std::vector<torch::Tensor> fisher = {torch::zeros_like(model->fc1->weight), torch::zeros_like(model->fc2->weight)};
  for (const auto& b : batches) {
    model->zero_grad();
    torch::nn::functional::cross_entropy(model->forward(b.inputs), b.targets).backward();
    fisher[0] += model->fc1->weight.grad().pow(2) / 3;
    fisher[1] += model->fc2->weight.grad().pow(2) / 3;
  }
  model->zero_grad();
  auto s1 = (0.5 * fisher[0] * model->fc1->weight.pow(2)).detach();
  auto s2 = (0.5 * fisher[1] * model->fc2->weight.pow(2)).detach();
  auto e1 = pruning::keep_largest(s1, 0.5), e2 = pruning::keep_largest(s2, 0.5);
  method.prune_to(0.5, ctx);
  EXPECT_TRUE(torch::equal(model->fc1->weight_mask, e1));
  EXPECT_TRUE(torch::equal(model->fc2->weight_mask, e2));
  // Not the same as magnitude pruning here.
  EXPECT_FALSE(torch::equal(e1, pruning::keep_largest(model->fc1->weight.abs() + (1 - e1) * 1e9, 0.5)) &&
               torch::equal(e2, pruning::keep_largest(model->fc2->weight.abs() + (1 - e2) * 1e9, 0.5)));
}

TEST(UnstructuredPruning, RandomPruningIsExactAndSeeded) {
  auto masks_for = [](int64_t seed) {
    torch::manual_seed(12);
    auto model = std::make_shared<Tiny>();
    UnstructuredPruning::Options o;
    o.criterion = "random";
    o.seed = seed;
    UnstructuredPruning method(spec_for({"fc1.weight"}), o);
    method.bind(model);
    TrainContext ctx;
    ctx.model = model;
    method.prepare_model(ctx);
    method.prune_to(0.25, ctx);
    return model->fc1->weight_mask.clone();
  };
  auto a = masks_for(1), b = masks_for(1), c = masks_for(2);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  EXPECT_EQ(a.numel() - a.sum().item<int64_t>(), 12);  // 25% of 48
}

TEST(UnstructuredPruning, LotteryRewindResetsSurvivorsToInitialization) {
  torch::manual_seed(13);
  auto model = std::make_shared<Tiny>();
  UnstructuredPruning::Options o;
  o.rewind = "init";
  UnstructuredPruning method(spec_for({"fc*.weight"}), o);
  method.bind(model);
  TrainContext ctx;
  ctx.model = model;
  method.prepare_model(ctx);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  ctx.optimizer = &opt;
  method.on_train_begin(ctx);
  auto init = model->fc1->weight.detach().clone();
  // "Training": a step that creates momentum state, then larger moves.
  model->forward(torch::randn({4, 6})).sum().backward();
  opt.step();
  EXPECT_EQ(opt.state().size(), 4u);
  {
    torch::NoGradGuard g;
    model->fc1->weight.add_(torch::randn_like(model->fc1->weight));
  }
  auto trained = model->fc1->weight.detach().clone();
  method.prune_to(0.5, ctx);
  auto mask = model->fc1->weight_mask;
  EXPECT_TRUE(torch::equal(mask, pruning::keep_largest(trained.abs(), 0.5)));  // chosen by trained magnitude
  EXPECT_TRUE(torch::equal(model->fc1->weight, init * mask));                 // values from initialization
  EXPECT_EQ(opt.state().size(), 2u);  // the rewound weights' momentum is gone, the biases' kept
}

TEST(UnstructuredPruning, InterruptedThenResumedRunIsExact) {
  test::TempDir tmp;
  const auto entry = pruning_entry("    schedule: agp\n    sparsity: 0.7\n    end_epoch: 1.5\n    frequency: 2\n"
                                   "    rewind: epoch\n    rewind_epoch: 0.25\n");
  auto whole = run(test::small_recipe(tmp.file("a"), entry), tmp.file("a"));
  auto yaml = test::small_recipe(tmp.file("b"), entry);
  auto part = run(yaml, tmp.file("b"), false, 19);
  ASSERT_TRUE(part.result.interrupted);
  auto rest = run(yaml, tmp.file("b"), true);
  ASSERT_FALSE(rest.result.interrupted);
  auto a = whole.e.model->named_parameters(), b = rest.e.model->named_parameters();
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  for (const auto& buf : whole.e.model->named_buffers())
    EXPECT_TRUE(torch::equal(buf.value(), rest.e.model->named_buffers()[buf.key()])) << buf.key();
}

TEST(UnstructuredPruning, RecipeErrorsNameTheKey) {
  test::TempDir tmp;
  auto expect_error = [&](const std::string& body, const std::string& needle) {
    try {
      build_experiment(test::recipe_node(test::small_recipe(tmp.file("x"), body)));
      ADD_FAILURE() << "no error for " << body;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(pruning_entry("    schedule: agp\n    initial_sparsity: 0.9\n    sparsity: 0.5\n"),
               "initial_sparsity: must not exceed sparsity");
  expect_error(pruning_entry("    criterion: magnitud\n"), "did you mean 'magnitude'");
  expect_error(pruning_entry("    sparsity: 1.5\n"), "sparsity: must be in [0, 1]");
  expect_error("compression:\n  - method: unstructured_pruning\n    targets: ['*.bias']\n", "select no weight");
  expect_error(pruning_entry("    rewind_epoch: 2\n"), "rewind_epoch: is used only with rewind: epoch");
}
