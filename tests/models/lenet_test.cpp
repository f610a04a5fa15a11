#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/models/lenet.h"
#include "shrink/models/model.h"

namespace {

using shrink::ConfigNode;
using shrink::ConfigValue;

const shrink::DataInfo kMnist{{1, 28, 28}, 10};

ConfigNode model_node(const std::string& name, const std::string& num_classes = "") {
  auto map = ConfigValue::make_map();
  map->set("name", ConfigValue::make_scalar(name));
  if (!num_classes.empty()) map->set("num_classes", ConfigValue::make_scalar(num_classes));
  return ConfigNode(map, "model");
}

int64_t count_parameters(const shrink::ModelPtr& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

std::vector<std::string> parameter_names(const shrink::ModelPtr& model) {
  std::vector<std::string> names;
  for (const auto& p : model->named_parameters()) names.push_back(p.key());
  return names;
}

TEST(LeNet, RegistryHasBuiltins) {
  EXPECT_TRUE(shrink::model_registry().contains("lenet300"));
  EXPECT_TRUE(shrink::model_registry().contains("lenet5"));
}

TEST(LeNet, LeNet300) {
  auto model = shrink::build_model(model_node("lenet300"), kMnist);
  EXPECT_EQ(count_parameters(model), 266610);
  EXPECT_EQ(parameter_names(model), (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                                              "fc3.weight", "fc3.bias"}));
  auto y = model->forward(torch::randn({4, 1, 28, 28}));
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{4, 10}));
  auto* lenet = dynamic_cast<shrink::LeNet300Impl*>(model.get());
  ASSERT_NE(lenet, nullptr);
  EXPECT_EQ(lenet->fc1->weight.sizes().vec(), (std::vector<int64_t>{300, 784}));
}

TEST(LeNet, LeNet5) {
  auto model = shrink::build_model(model_node("lenet5"), kMnist);
  EXPECT_EQ(count_parameters(model), 431080);
  EXPECT_EQ(parameter_names(model),
            (std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                      "fc1.bias", "fc2.weight", "fc2.bias"}));
  std::vector<std::string> modules;
  for (const auto& m : model->named_modules("", /*include_self=*/false)) modules.push_back(m.key());
  EXPECT_EQ(modules, (std::vector<std::string>{"conv1", "conv2", "fc1", "fc2"}));
  auto y = model->forward(torch::randn({3, 1, 28, 28}));
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{3, 10}));
}

TEST(LeNet, ShapesFollowTheData) {
  shrink::DataInfo cifar{{3, 32, 32}, 10};
  auto lenet5 = shrink::build_model(model_node("lenet5", "7"), cifar);
  // 32 -> 28 -> 14 -> 10 -> 5: fc1 has 50*5*5 inputs
  auto* l5 = dynamic_cast<shrink::LeNet5Impl*>(lenet5.get());
  ASSERT_NE(l5, nullptr);
  EXPECT_EQ(l5->fc1->options.in_features(), 1250);
  EXPECT_EQ(l5->conv1->options.in_channels(), 3);
  EXPECT_EQ(lenet5->forward(torch::randn({2, 3, 32, 32})).sizes().vec(), (std::vector<int64_t>{2, 7}));

  auto lenet300 = shrink::build_model(model_node("lenet300"), cifar);
  EXPECT_EQ(lenet300->forward(torch::randn({2, 3, 32, 32})).sizes().vec(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(dynamic_cast<shrink::LeNet300Impl*>(lenet300.get())->fc1->options.in_features(), 3072);
}

TEST(LeNet, DirectConstructionWithoutYaml) {
  shrink::LeNet5Impl::Options options;
  options.num_classes = 5;
  auto model = std::make_shared<shrink::LeNet5Impl>(options, kMnist);
  EXPECT_EQ(model->forward(torch::zeros({1, 1, 28, 28})).size(1), 5);
}

TEST(LeNet, Errors) {
  EXPECT_THROW(shrink::build_model(model_node("lenet5"), shrink::DataInfo{{1, 8, 8}, 10}), shrink::UserError);
  EXPECT_THROW(shrink::build_model(model_node("lenet300"), shrink::DataInfo{{1, 28, 28}, 0}), shrink::UserError);
  try {
    shrink::build_model(model_node("lenet50"), kMnist);
    FAIL() << "expected ConfigError";
  } catch (const shrink::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model 'lenet50'"), std::string::npos) << e.what();
  }
  auto bad = model_node("lenet300");
  bad.value()->set("hidden", ConfigValue::make_scalar("3"));
  EXPECT_THROW(shrink::build_model(bad, kMnist), shrink::ConfigError);
  EXPECT_THROW(shrink::build_model(model_node("lenet300", "-1"), kMnist), shrink::ConfigError);
}

}  // namespace
