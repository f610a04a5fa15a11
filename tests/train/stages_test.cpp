// Multi-stage training (train.stages): recipe errors, a fresh optimizer and schedule per stage,
// and an exact resume across a stage boundary.
#include <gtest/gtest.h>

#include "shrink/train/stages.h"
#include "train/train_test_util.h"

using namespace shrink;
using shrink::test::error_of;
using shrink::test::recipe_node;
using shrink::test::small_recipe;
using shrink::test::StopAt;
using shrink::test::TempDir;

namespace {

const char* kStages =
    "  stages:\n"
    "    - {name: warm, epochs: 1, lr_schedule: {name: cosine}}\n"
    "    - {name: adam, epochs: 1, optimizer: {name: adam, lr: 0.001}}\n";

/// Records, per step, the learning rate and whether the optimizer is Adam.
struct OptimizerLog : Callback {
  std::string name() const override { return "optimizer_log"; }
  void on_step_begin(TrainContext& ctx) override {
    lrs.push_back(ctx.lr);
    adam.push_back(dynamic_cast<torch::optim::Adam*>(ctx.optimizer) != nullptr);
    optimizers.push_back(ctx.optimizer);
  }
  std::vector<double> lrs;
  std::vector<bool> adam;
  std::vector<const void*> optimizers;
};

}  // namespace

TEST(Stages, RecipeErrorsNameTheKey) {
  TempDir dir;
  auto error = [&](const std::string& stages) {
    return error_of([&] { build_experiment(recipe_node(small_recipe(dir.file("run"), stages, "lenet300", 256, 1))); });
  };
  auto e = error("  stages:\n    - {name: a, epochs: 1}\n    - {name: a, epochs: 1}\n");
  EXPECT_NE(e.find("train.stages[1].name"), std::string::npos) << e;
  EXPECT_NE(e.find("already defined"), std::string::npos) << e;
  e = error("  stages:\n    - {name: a, epochs: 0}\n");
  EXPECT_NE(e.find("train.stages[0].epochs"), std::string::npos) << e;
  e = error("  stages:\n    - {name: a, epochs: 1, lr: 0.1}\n");
  EXPECT_NE(e.find("train.stages[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("'lr'"), std::string::npos) << e;
  e = error("  stages:\n    - {name: a, epochs: 1, optimizer: {name: adamm}}\n");
  EXPECT_NE(e.find("train.stages[0].optimizer.name"), std::string::npos) << e;
  e = error("  stages:\n    - {name: a, epochs: 0.001}\n");
  EXPECT_NE(e.find("no optimizer step"), std::string::npos) << e;
}

TEST(Stages, EachStageHasItsOwnOptimizerAndScheduleAndResumesExactly) {
  TempDir dir;
  auto make = [&](const std::string& run) {
    // 256 examples, batch 64: 4 steps per epoch; stages of 1 epoch each replace train.epochs (5).
    return build_experiment(recipe_node(small_recipe(dir.file(run), kStages, "lenet300", 256, 5)));
  };
  auto e = make("full");
  auto log = std::make_unique<OptimizerLog>();
  auto* steps = log.get();
  e.callbacks.push_back(std::move(log));
  TrainOptions o;
  o.run_dir = dir.file("full");
  o.quiet = true;
  auto result = train(e, o);
  EXPECT_EQ(result.steps, 8);
  ASSERT_EQ(steps->lrs.size(), 8u);
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(steps->adam[i]) << i;
  for (int i = 4; i < 8; ++i) EXPECT_TRUE(steps->adam[i]) << i;
  EXPECT_NE(steps->optimizers[3], steps->optimizers[4]);  // a fresh optimizer (and state) at the boundary
  // Stage 1: cosine from 0.05 over its own 4 steps; stage 2: adam's constant 0.001.
  EXPECT_NEAR(steps->lrs[0], 0.05, 1e-12);
  EXPECT_NEAR(steps->lrs[2], 0.05 * 0.5 * (1 + std::cos(M_PI * 2 / 4)), 1e-9);
  for (int i = 4; i < 8; ++i) EXPECT_NEAR(steps->lrs[i], 0.001, 1e-12) << i;
  EXPECT_NE(test::read_file(dir.file("full/log.txt")).find("stage 'adam' from step 4 to 8"), std::string::npos);

  // Stopped in the second stage and resumed: the same weights as without the stop.
  auto interrupted = make("resumed");
  interrupted.callbacks.push_back(std::make_unique<StopAt>(6));
  o.run_dir = dir.file("resumed");
  EXPECT_TRUE(train(interrupted, o).interrupted);
  clear_stop_request();
  auto resumed = make("resumed");
  o.resume = true;
  EXPECT_EQ(train(resumed, o).steps, 8);
  auto a = e.model->named_parameters(), b = resumed.model->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();

  // Stopped exactly at the boundary (the checkpoint holds the SGD state of stage 1): the Adam
  // stage starts fresh, as it does without the stop.
  auto at_boundary = make("boundary");
  at_boundary.callbacks.push_back(std::make_unique<StopAt>(4));
  o.run_dir = dir.file("boundary");
  o.resume = false;
  EXPECT_TRUE(train(at_boundary, o).interrupted);
  clear_stop_request();
  auto continued = make("boundary");
  o.resume = true;
  EXPECT_EQ(train(continued, o).steps, 8);
  auto c = continued.model->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), c[item.key()])) << item.key();
}

TEST(Stages, BoundariesComeFromCumulativeEpochs) {
  Recipe r = Recipe::parse(recipe_node(small_recipe("unused",
                                                    "  stages:\n    - {name: a, epochs: 0.5}\n"
                                                    "    - {name: b, epochs: 0.5}\n    - {name: c, epochs: 1}\n")));
  // 7 steps per epoch: 0.5 -> 4 (3.5 rounds up), 1.0 -> 7, 2.0 -> 14; per-stage rounding would give 4 + 4 + 7.
  auto stages = parse_stages(r, 7);
  ASSERT_EQ(stages.size(), 3u);
  EXPECT_EQ(stages[0].end_step, 4);
  EXPECT_EQ(stages[1].end_step, 7);
  EXPECT_EQ(stages[2].end_step, 14);
  EXPECT_EQ(stage_at(stages, 6).name, "b");
  EXPECT_EQ(stage_at(stages, 99).name, "c");
}
