#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/data/dataset.h"
#include "shrink/data/loader.h"
#include "data_test_util.h"
#include "test_util.h"

namespace {

using shrink::test::data_node;
using shrink::test::dataset_error;

using shrink::ConfigNode;
using shrink::ConfigValue;



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
  EXPECT_EQ(names, (std::vector<std::string>{"root", "normalize", "mean", "std"}));
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
  EXPECT_EQ(ds->class_names().at(0), "T-shirt/top");
  auto* tensors = dynamic_cast<shrink::TensorDataset*>(ds.get());
  ASSERT_NE(tensors, nullptr);
  EXPECT_EQ(tensors->images().scalar_type(), torch::kUInt8);  // 47 MB instead of 188
  // The loader applies the dataset's normalization: the train images then have mean 0, std 1.
  shrink::DataSource source(ds, {});
  std::vector<int64_t> all(60000);
  for (int64_t i = 0; i < 60000; ++i) all[i] = i;
  auto batch = source.load(all, 0, 0, 0);
  EXPECT_EQ(batch.inputs.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(batch.inputs.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(batch.inputs.std().item<double>(), 1.0, 0.01);
  auto raw = ds->get_batch({0, 1});
  EXPECT_EQ(raw.inputs.sizes().vec(), (std::vector<int64_t>{2, 1, 28, 28}));
  EXPECT_EQ(raw.targets.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::allclose(raw.inputs[1], ds->get(1).image));
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
  std::vector<int64_t> all(50);
  for (int64_t i = 0; i < 50; ++i) all[i] = i;
  auto images = test->get_batch(all).inputs;
  EXPECT_GE(images.min().item<double>(), 0.0);
  EXPECT_LE(images.max().item<double>(), 1.0);
  EXPECT_GT(images.max().item<double>(), 0.9);
  EXPECT_FALSE(test->normalization().has_value());

  // The first test labels of Fashion-MNIST: ankle boot, pullover, trouser, trouser, shirt.
  auto first = test->get_batch({0, 1, 2, 3, 4}).targets;
  EXPECT_TRUE(torch::equal(first, torch::tensor({9, 2, 1, 1, 6}, torch::kInt64))) << first;
}

TEST(Dataset, ValidationSplitIsSeededAndDisjoint) {
  auto node = data_node({{"name", "fashion_mnist"},
                         {"root", shrink::test::fashion_mnist_dir()},
                         {"train_subset", "1000"},
                         {"validation_fraction", "0.2"},
                         {"validation_seed", "3"}});
  auto train = shrink::build_dataset(node, shrink::Split::Train);
  auto val = shrink::build_dataset(node, shrink::Split::Validation);
  ASSERT_EQ(train->size(), 800);
  ASSERT_EQ(val->size(), 200);
  auto* t = dynamic_cast<shrink::SubsetDataset*>(train.get());
  auto* v = dynamic_cast<shrink::SubsetDataset*>(val.get());
  ASSERT_TRUE(t && v);
  std::vector<int> seen(1000, 0);
  for (auto i : t->indices()) seen.at(i) += 1;
  for (auto i : v->indices()) seen.at(i) += 2;
  for (int s : seen) EXPECT_TRUE(s == 1 || s == 2);  // every example in exactly one split
  // Not simply the last 200: a seeded shuffle chose them, and the same seed chooses the same.
  EXPECT_LT(*std::min_element(v->indices().begin(), v->indices().end()), 100);
  auto again = shrink::build_dataset(node, shrink::Split::Validation);
  EXPECT_EQ(dynamic_cast<shrink::SubsetDataset*>(again.get())->indices(), v->indices());
  auto other = data_node({{"name", "fashion_mnist"},
                          {"root", shrink::test::fashion_mnist_dir()},
                          {"train_subset", "1000"},
                          {"validation_fraction", "0.2"},
                          {"validation_seed", "4"}});
  auto val4 = shrink::build_dataset(other, shrink::Split::Validation);
  EXPECT_NE(dynamic_cast<shrink::SubsetDataset*>(val4.get())->indices(), v->indices());
  // Without a fraction there is no validation split.
  auto none = data_node({{"name", "fashion_mnist"}, {"root", shrink::test::fashion_mnist_dir()}});
  auto msg = dataset_error(none, shrink::Split::Validation);
  EXPECT_NE(msg.find("validation_fraction"), std::string::npos) << msg;
}

TEST(Dataset, ErrorsNameTheOption) {
  auto missing = data_node({{"name", "fashion_mnist"}, {"root", "/nonexistent/fmnist"}});
  auto msg = dataset_error(missing, shrink::Split::Train);
  EXPECT_NE(msg.find("data.root"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'/nonexistent/fmnist'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("scripts/setup.sh"), std::string::npos) << msg;
  EXPECT_THROW(shrink::build_dataset(missing, shrink::Split::Train), shrink::ConfigError);

  auto too_many = data_node({{"name", "fashion_mnist"},
                             {"root", shrink::test::fashion_mnist_dir()},
                             {"test_subset", "10001"}});
  msg = dataset_error(too_many, shrink::Split::Test);
  EXPECT_NE(msg.find("data.test_subset"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at most 10000"), std::string::npos) << msg;

  auto unknown = data_node({{"name", "fashion_mnist"}, {"roots", "x"}});
  msg = dataset_error(unknown, shrink::Split::Train);
  EXPECT_NE(msg.find("roots"), std::string::npos) << msg;

  auto bad_name = data_node({{"name", "fashion_mnis"}});
  msg = dataset_error(bad_name, shrink::Split::Train);
  EXPECT_NE(msg.find("unknown dataset 'fashion_mnis'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.name"), std::string::npos) << msg;

  auto bad_std = data_node({{"name", "mnist"}, {"std", "0"}});
  msg = dataset_error(bad_std, shrink::Split::Train);
  EXPECT_NE(msg.find("data.std"), std::string::npos) << msg;
}

TEST(Dataset, MnistDefaultRootIsReported) {
  // No data/mnist here: the error names the default folder at the data section.
  if (std::filesystem::exists("data/mnist")) GTEST_SKIP() << "data/mnist exists";
  auto msg = dataset_error(data_node({{"name", "mnist"}}), shrink::Split::Test);
  EXPECT_NE(msg.find("'data/mnist'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("scripts/setup.sh"), std::string::npos) << msg;
}

}  // namespace
