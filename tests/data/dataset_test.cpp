#include <gtest/gtest.h>

#include <string>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/data/dataset.h"
#include "test_util.h"

namespace {

using shrink::ConfigNode;
using shrink::ConfigValue;

/// A `data:` section built without YAML.
ConfigNode data_node(const std::vector<std::pair<std::string, std::string>>& entries) {
  auto map = ConfigValue::make_map();
  for (const auto& kv : entries) map->set(kv.first, ConfigValue::make_scalar(kv.second));
  return ConfigNode(map, "data");
}

std::string error_of(const ConfigNode& node, shrink::Split split) {
  try {
    shrink::build_dataset(node, split);
  } catch (const shrink::UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Dataset, SplitNames) {
  EXPECT_STREQ(shrink::split_name(shrink::Split::Train), "train");
  EXPECT_STREQ(shrink::split_name(shrink::Split::Test), "test");
}

TEST(Dataset, RegistryHasBuiltins) {
  auto& registry = shrink::dataset_registry();
  EXPECT_TRUE(registry.contains("fashion_mnist"));
  EXPECT_TRUE(registry.contains("mnist"));
  const auto& entry = registry.get("fashion_mnist");
  std::vector<std::string> names;
  for (const auto& doc : entry.options) names.push_back(doc.name);
  EXPECT_EQ(names, (std::vector<std::string>{"root", "normalize", "mean", "std", "train_subset", "test_subset"}));
}

TEST(Dataset, TensorDatasetBatches) {
  auto images = torch::arange(5 * 1 * 2 * 2, torch::kFloat32).reshape({5, 1, 2, 2});
  auto labels = torch::tensor({0, 1, 2, 0, 1}, torch::kInt64);
  shrink::TensorDataset ds(images, labels, 3);
  EXPECT_EQ(ds.size(), 5);
  auto info = ds.info();
  EXPECT_EQ(info.sample_shape, (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ(info.num_classes, 3);
  auto batch = ds.get_batch({4, 0, 4});
  EXPECT_EQ(batch.inputs.sizes().vec(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_TRUE(torch::equal(batch.inputs[0], images[4]));
  EXPECT_TRUE(torch::equal(batch.inputs[1], images[0]));
  EXPECT_EQ(batch.targets.scalar_type(), torch::kInt64);
  EXPECT_EQ(batch.targets[0].item<int64_t>(), 1);
  EXPECT_EQ(batch.targets[1].item<int64_t>(), 0);
  EXPECT_THROW(ds.get_batch({5}), c10::Error);
}

TEST(Dataset, FashionMnistTrainNormalized) {
  auto node = data_node({{"name", "fashion_mnist"}, {"root", shrink::test::fashion_mnist_dir()}});
  auto ds = shrink::build_dataset(node, shrink::Split::Train);
  ASSERT_EQ(ds->size(), 60000);
  auto info = ds->info();
  EXPECT_EQ(info.sample_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(info.num_classes, 10);
  auto* tensors = dynamic_cast<shrink::TensorDataset*>(ds.get());
  ASSERT_NE(tensors, nullptr);
  EXPECT_EQ(tensors->images().scalar_type(), torch::kFloat32);
  EXPECT_NEAR(tensors->images().mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(tensors->images().std().item<double>(), 1.0, 0.01);
  auto batch = ds->get_batch({0, 1});
  EXPECT_EQ(batch.inputs.sizes().vec(), (std::vector<int64_t>{2, 1, 28, 28}));
  EXPECT_EQ(batch.targets.scalar_type(), torch::kInt64);
}

TEST(Dataset, SubsetsTakeTheFirstExamples) {
  auto node = data_node({{"name", "fashion_mnist"},
                         {"root", shrink::test::fashion_mnist_dir()},
                         {"normalize", "false"},
                         {"train_subset", "100"},
                         {"test_subset", "50"}});
  auto train = shrink::build_dataset(node, shrink::Split::Train);
  auto test = shrink::build_dataset(node, shrink::Split::Test);
  EXPECT_EQ(train->size(), 100);
  EXPECT_EQ(test->size(), 50);
  auto* t = dynamic_cast<shrink::TensorDataset*>(test.get());
  ASSERT_NE(t, nullptr);
  EXPECT_GE(t->images().min().item<double>(), 0.0);
  EXPECT_LE(t->images().max().item<double>(), 1.0);
  EXPECT_GT(t->images().max().item<double>(), 0.9);

  // The first test labels of Fashion-MNIST: ankle boot, pullover, trouser, trouser, shirt.
  auto first = test->get_batch({0, 1, 2, 3, 4}).targets;
  EXPECT_TRUE(torch::equal(first, torch::tensor({9, 2, 1, 1, 6}, torch::kInt64))) << first;
}

TEST(Dataset, ErrorsNameTheOption) {
  auto missing = data_node({{"name", "fashion_mnist"}, {"root", "/nonexistent/fmnist"}});
  auto msg = error_of(missing, shrink::Split::Train);
  EXPECT_NE(msg.find("data.root"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'/nonexistent/fmnist'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("scripts/setup.sh"), std::string::npos) << msg;
  EXPECT_THROW(shrink::build_dataset(missing, shrink::Split::Train), shrink::ConfigError);

  auto too_many = data_node({{"name", "fashion_mnist"},
                             {"root", shrink::test::fashion_mnist_dir()},
                             {"test_subset", "10001"}});
  msg = error_of(too_many, shrink::Split::Test);
  EXPECT_NE(msg.find("data.test_subset"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at most 10000"), std::string::npos) << msg;

  auto unknown = data_node({{"name", "fashion_mnist"}, {"roots", "x"}});
  msg = error_of(unknown, shrink::Split::Train);
  EXPECT_NE(msg.find("roots"), std::string::npos) << msg;

  auto bad_name = data_node({{"name", "fashion_mnis"}});
  msg = error_of(bad_name, shrink::Split::Train);
  EXPECT_NE(msg.find("unknown dataset 'fashion_mnis'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.name"), std::string::npos) << msg;

  auto bad_std = data_node({{"name", "mnist"}, {"std", "0"}});
  msg = error_of(bad_std, shrink::Split::Train);
  EXPECT_NE(msg.find("data.std"), std::string::npos) << msg;
}

TEST(Dataset, MnistDefaultRootIsReported) {
  // No data/mnist here: the error names the default folder at the data section.
  if (std::filesystem::exists("data/mnist")) GTEST_SKIP() << "data/mnist exists";
  auto msg = error_of(data_node({{"name", "mnist"}}), shrink::Split::Test);
  EXPECT_NE(msg.find("'data/mnist'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("scripts/setup.sh"), std::string::npos) << msg;
}

}  // namespace
