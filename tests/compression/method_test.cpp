// The framework part of compression methods: globs, schedules, target binding, and the
// built-in L1 regularizer against its reference gradient.
#include <gtest/gtest.h>

#include "shrink/compression/builtin.h"
#include "shrink/config/recipe_file.h"
#include "shrink/models/model.h"

using namespace shrink;

namespace {

ConfigNode node(const std::string& yaml) { return ConfigNode(read_yaml_string(yaml, "m.yaml"), "compression[0]"); }

struct Tiny : ModelImpl {
  Tiny() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 3));
    fc2 = register_module("fc2", torch::nn::Linear(3, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) override { return fc2->forward(torch::relu(fc1->forward(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

}  // namespace

TEST(Glob, StarMatchesDotsAndQuestionMarkOneCharacter) {
  EXPECT_TRUE(glob_match("*", "layer1.0.conv1.weight"));
  EXPECT_TRUE(glob_match("fc*", "fc1.weight"));
  EXPECT_TRUE(glob_match("*.bias", "layer1.0.bn1.bias"));
  EXPECT_TRUE(glob_match("layer?.*.weight", "layer2.1.weight"));
  EXPECT_FALSE(glob_match("fc?", "fc10"));
  EXPECT_FALSE(glob_match("*.bias", "fc1.weight"));
  EXPECT_TRUE(glob_match("a*b*c", "axxbyyc"));
  EXPECT_FALSE(glob_match("a*b*c", "axxbyy"));
}

TEST(MethodSchedule, FractionalEpochsStepsAndFrequency) {
  auto spec = parse_method_spec(node("method: l1_regularization\nstart_epoch: 0.5\nend_epoch: 2\nfrequency: 3\n"));
  const auto& s = spec.schedule;
  EXPECT_EQ(s.begin(10), 5);
  EXPECT_EQ(s.end(10, 100), 20);
  EXPECT_FALSE(s.active(4, 10, 100));
  EXPECT_TRUE(s.active(5, 10, 100));
  EXPECT_FALSE(s.active(20, 10, 100));
  EXPECT_TRUE(s.due(5, 10, 100));
  EXPECT_FALSE(s.due(6, 10, 100));
  EXPECT_TRUE(s.due(8, 10, 100));
  auto open = parse_method_spec(node("method: l1_regularization\nstart_step: 7\n")).schedule;
  EXPECT_EQ(open.begin(10), 7);
  EXPECT_EQ(open.end(10, 100), 100);
}

TEST(MethodSchedule, ConflictsAndOrderAreErrors) {
  auto error_of = [](const std::string& yaml) -> std::string {
    try {
      parse_method_spec(node(yaml));
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of("method: x\nstart_step: 10\nend_step: 10\n"),
            "m.yaml:3:11: compression[0].end_step: must be greater than start_step (got 10 <= 10)");
  EXPECT_EQ(error_of("method: x\nstart_epoch: 1\nstart_step: 3\n"),
            "m.yaml:3:13: compression[0].start_step: give start_epoch or start_step, not both");
  EXPECT_EQ(error_of("method: x\nfrequency: 0\n"), "m.yaml:2:12: compression[0].frequency: must be >= 1 (got 0)");
}

TEST(CompressionMethod, BindResolvesTargetsWithExclude) {
  auto model = std::make_shared<Tiny>();
  auto method = build_method(node("method: l1_regularization\ntargets: ['fc*']\nexclude: ['*.bias']\n"));
  method->bind(model);
  std::vector<std::string> names;
  for (const auto& [name, p] : method->target_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc2.weight"}));
  std::vector<std::string> modules;
  for (const auto& [name, m] : method->target_modules()) modules.push_back(name);
  EXPECT_EQ(modules, (std::vector<std::string>{"fc1", "fc2"}));
}

TEST(L1Regularization, AddsStrengthTimesSignToTheGradient) {
  torch::manual_seed(3);
  auto model = std::make_shared<Tiny>();
  auto method = build_method(node("method: l1_regularization\ntargets: [fc1.weight]\nstrength: 0.01\n"));
  method->bind(model);
  auto loss = model->forward(torch::randn({5, 4})).sum();
  loss.backward();
  auto g1 = model->fc1->weight.grad().clone(), g2 = model->fc2->weight.grad().clone();
  TrainContext ctx;
  ctx.model = model;
  ctx.steps_per_epoch = 10;
  ctx.total_steps = 10;
  method->on_before_optimizer_step(ctx);
  // Reference: d/dw (0.01 * sum |w|) = 0.01 * sign(w), only on the target.
  EXPECT_TRUE(torch::allclose(model->fc1->weight.grad(), g1 + 0.01 * model->fc1->weight.sign()));
  EXPECT_TRUE(torch::equal(model->fc2->weight.grad(), g2));
}
