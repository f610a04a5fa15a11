// Optimizers, parameter groups and LR schedules against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "shrink/train/optim.h"
#include "train_test_util.h"

using namespace shrink;

namespace {

std::unique_ptr<LrSchedule> schedule(const std::string& yaml) {
  return build_schedule(test::recipe_node(yaml));
}

struct TinyModel : ModelImpl {
  TinyModel() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) override { return fc->forward(x); }
  torch::nn::Linear fc{nullptr};
};

TrainConfig train_config(const std::string& yaml) {
  return Recipe::parse(test::recipe_node("data: {name: fashion_mnist}\nmodel: {name: lenet300}\ntrain:\n" + yaml)).train;
}

}  // namespace

TEST(Schedule, ConstantWithWarmup) {
  auto s = schedule("name: constant\nwarmup_epochs: 1\nwarmup_start_factor: 0.1");
  EXPECT_DOUBLE_EQ(s->factor(0, 10, 100), 0.1);
  EXPECT_DOUBLE_EQ(s->factor(5, 10, 100), 0.1 + 0.9 * 0.5);
  EXPECT_DOUBLE_EQ(s->factor(10, 10, 100), 1.0);
  EXPECT_DOUBLE_EQ(s->factor(99, 10, 100), 1.0);
}

TEST(Schedule, StepAndMultistep) {
  auto step = schedule("name: step\nstep_size: 2\ngamma: 0.5");
  EXPECT_DOUBLE_EQ(step->factor(19, 10, 100), 1.0);   // epoch 1
  EXPECT_DOUBLE_EQ(step->factor(20, 10, 100), 0.5);   // epoch 2
  EXPECT_DOUBLE_EQ(step->factor(45, 10, 100), 0.25);  // epoch 4
  auto multi = schedule("name: multistep\nmilestones: [3, 6]\ngamma: 0.1");
  EXPECT_DOUBLE_EQ(multi->factor(29, 10, 100), 1.0);
  EXPECT_NEAR(multi->factor(30, 10, 100), 0.1, 1e-15);
  EXPECT_NEAR(multi->factor(60, 10, 100), 0.01, 1e-15);
}

TEST(Schedule, CosineFollowsFormula) {
  auto s = schedule("name: cosine\nmin_factor: 0.1");
  for (int64_t step : {0, 25, 50, 99, 100}) {
    double t = std::min(1.0, step / 100.0);
    EXPECT_NEAR(s->factor(step, 10, 100), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * t)), 1e-12) << step;
  }
}

TEST(Schedule, BadMilestonesAreErrors) {
  try {
    schedule("name: multistep\nmilestones: [6, 3]");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "test.yaml:2:13: milestones: milestones must be increasing non-negative epochs");
  }
}

TEST(Optimizer, SgdStepMatchesReference) {
  torch::manual_seed(0);
  auto model = std::make_shared<TinyModel>();
  auto cfg = train_config("  optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.01}\n");
  auto built = build_optimizer(model, cfg);
  auto w0 = model->fc->weight.detach().clone();
  auto x = torch::randn({4, 3});
  auto loss = model->forward(x).pow(2).sum();
  loss.backward();
  auto g = model->fc->weight.grad().clone();
  built.optimizer->step();
  // First SGD step: buffer = g + wd * w; w -= lr * buffer.
  EXPECT_TRUE(torch::allclose(model->fc->weight, w0 - 0.1 * (g + 0.01 * w0), 1e-6, 1e-7));
}

TEST(Optimizer, ParamGroupsOverrideWeightDecayAndLr) {
  auto model = std::make_shared<TinyModel>();
  auto cfg = train_config(
      "  optimizer: {name: adamw, lr: 0.002, weight_decay: 0.05}\n"
      "  param_groups:\n    - match: ['*.bias']\n      weight_decay: 0\n      lr_scale: 0.5\n");
  auto built = build_optimizer(model, cfg);
  auto& groups = built.optimizer->param_groups();
  ASSERT_EQ(groups.size(), 2u);
  ASSERT_EQ(groups[0].params().size(), 1u);
  EXPECT_TRUE(groups[0].params()[0].is_same(model->fc->bias));
  EXPECT_DOUBLE_EQ(get_weight_decay(groups[0].options()), 0.0);
  EXPECT_DOUBLE_EQ(groups[0].options().get_lr(), 0.001);
  EXPECT_DOUBLE_EQ(get_weight_decay(groups[1].options()), 0.05);
  EXPECT_DOUBLE_EQ(built.base_lrs[1], 0.002);
}

TEST(Optimizer, UnknownNameListsRegistered) {
  auto model = std::make_shared<TinyModel>();
  auto cfg = train_config("  optimizer: {name: sgdd}\n");
  try {
    build_optimizer(model, cfg);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "test.yaml:4:21: train.optimizer.name: unknown optimizer 'sgdd' (did you mean 'sgd'?); registered: "
              "adam, adamw, sgd");
  }
}
