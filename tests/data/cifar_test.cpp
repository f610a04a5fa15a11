// CIFAR readers on files written byte by byte here (not by the converter).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/data/cifar.h"
#include "shrink/data/dataset.h"
#include "data_test_util.h"
#include "test_util.h"

namespace {

using shrink::test::data_node;
using shrink::test::dataset_error;

using shrink::ConfigNode;
using shrink::ConfigValue;
using shrink::test::TempDir;



/// The pixel stored at (c, y, x) of record `i` of file `f`.
uint8_t pixel(int f, int i, int c, int y, int x) { return static_cast<uint8_t>((f * 31 + i * 17 + c * 7 + y * 3 + x * 5) % 256); }

/// A CIFAR file of `labels.size()` records; each record's label bytes then 3 planes of 32x32.
std::string cifar_file(int f, const std::vector<std::vector<uint8_t>>& labels) {
  std::string bytes;
  for (size_t i = 0; i < labels.size(); ++i) {
    for (uint8_t l : labels[i]) bytes.push_back(static_cast<char>(l));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) bytes.push_back(static_cast<char>(pixel(f, static_cast<int>(i), c, y, x)));
  }
  return bytes;
}

/// CIFAR-10 layout: data_batch_1..5 with 2, 3, 1, 0, 2 records, test_batch with 3 records.
/// Label of record i of file f: (f + i) % 10 (f = 0 is test_batch).
void write_cifar10(const TempDir& dir) {
  const int counts[6] = {3, 2, 3, 1, 0, 2};
  for (int f = 0; f <= 5; ++f) {
    std::vector<std::vector<uint8_t>> labels;
    for (int i = 0; i < counts[f]; ++i) labels.push_back({static_cast<uint8_t>((f + i) % 10)});
    const std::string name = f == 0 ? "test_batch.bin" : "data_batch_" + std::to_string(f) + ".bin";
    shrink::test::write_file(dir.file(name), cifar_file(f, labels));
  }
}

void expect_records(const shrink::DatasetPtr& ds, const std::vector<std::pair<int, int>>& file_records) {
  auto* tensors = dynamic_cast<shrink::TensorDataset*>(ds.get());
  ASSERT_NE(tensors, nullptr);
  const auto& images = tensors->images();
  ASSERT_EQ(images.scalar_type(), torch::kUInt8);
  ASSERT_EQ(images.sizes().vec(), (std::vector<int64_t>{static_cast<int64_t>(file_records.size()), 3, 32, 32}));
  auto a = images.accessor<uint8_t, 4>();
  for (size_t n = 0; n < file_records.size(); ++n) {
    const auto [f, i] = file_records[n];
    int wrong = 0;
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) wrong += a[n][c][y][x] != pixel(f, i, c, y, x);
    EXPECT_EQ(wrong, 0) << "record " << n << " (file " << f << ", record " << i << ")";
  }
}

TEST(Cifar, Cifar10ReadsPixelsAndLabelsExactly) {
  TempDir dir;
  write_cifar10(dir);
  auto node = data_node({{"name", "cifar10"}, {"root", dir.path().string()}, {"normalize", "false"}});
  auto train = shrink::build_dataset(node, shrink::Split::Train);
  ASSERT_EQ(train->size(), 8);
  expect_records(train, {{1, 0}, {1, 1}, {2, 0}, {2, 1}, {2, 2}, {3, 0}, {5, 0}, {5, 1}});
  auto labels = train->get_batch({0, 1, 2, 3, 4, 5, 6, 7}).targets;
  EXPECT_TRUE(torch::equal(labels, torch::tensor({1, 2, 2, 3, 4, 3, 5, 6}, torch::kInt64))) << labels;
  EXPECT_EQ(train->num_classes(), 10);
  EXPECT_EQ(train->sample_shape(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_FALSE(train->normalization().has_value());
  EXPECT_EQ(train->class_names().front(), "airplane");
  EXPECT_EQ(train->class_names().back(), "truck");

  // get() gives x / 255 in [C, H, W].
  auto example = train->get(3);
  EXPECT_EQ(example.label, 3);
  EXPECT_FLOAT_EQ(example.image[2][31][7].item<float>(), pixel(2, 1, 2, 31, 7) / 255.0f);

  auto test = shrink::build_dataset(node, shrink::Split::Test);
  ASSERT_EQ(test->size(), 3);
  expect_records(test, {{0, 0}, {0, 1}, {0, 2}});
  EXPECT_EQ(test->get(2).label, 2);
}

TEST(Cifar, Cifar10NormalizationAndClassNamesFile) {
  TempDir dir;
  write_cifar10(dir);
  std::string names;
  for (int i = 0; i < 10; ++i) names += "name" + std::to_string(i) + (i == 3 ? "  \r\n" : "\n");
  shrink::test::write_file(dir.file("batches.meta.txt"), names + "\n\n");
  auto ds = shrink::build_dataset(data_node({{"name", "cifar10"}, {"root", dir.path().string()}}), shrink::Split::Test);
  ASSERT_EQ(ds->class_names().size(), 10u);
  EXPECT_EQ(ds->class_names()[3], "name3");
  ASSERT_TRUE(ds->normalization().has_value());
  EXPECT_EQ(ds->normalization()->mean, (std::vector<double>{0.4914, 0.4822, 0.4465}));
  EXPECT_EQ(ds->normalization()->std, (std::vector<double>{0.2470, 0.2435, 0.2616}));

  shrink::test::write_file(dir.file("batches.meta.txt"), "a\nb\n");
  auto msg = dataset_error(data_node({{"name", "cifar10"}, {"root", dir.path().string()}}), shrink::Split::Test);
  EXPECT_NE(msg.find("batches.meta.txt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 classes"), std::string::npos) << msg;
}

TEST(Cifar, Cifar10Errors) {
  TempDir dir;
  write_cifar10(dir);
  const auto root = dir.path().string();
  auto node = data_node({{"name", "cifar10"}, {"root", root}});

  // Truncated: two records and 100 bytes of a third.
  const auto truncated = dir.file("data_batch_3.bin");
  shrink::test::write_file(truncated, cifar_file(3, {{1}, {2}, {3}}).substr(0, 2 * 3073 + 100));
  auto msg = dataset_error(node, shrink::Split::Train);
  EXPECT_NE(msg.find("'" + truncated + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(2 * 3073 + 100) + " bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3073-byte record"), std::string::npos) << msg;

  // A label out of range names the file and the record.
  const auto test_batch = dir.file("test_batch.bin");
  shrink::test::write_file(test_batch, cifar_file(0, {{1}, {10}}));
  msg = dataset_error(node, shrink::Split::Test);
  EXPECT_NE(msg.find("'" + test_batch + "' record 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("label 10"), std::string::npos) << msg;

  // A missing file names its path, says where CIFAR comes from, and sits at data.root.
  std::filesystem::remove(test_batch);
  msg = dataset_error(node, shrink::Split::Test);
  EXPECT_NE(msg.find("data.root"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'" + test_batch + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("https://www.cs.toronto.edu/~kriz/cifar.html"), std::string::npos) << msg;
  EXPECT_NE(msg.find("binary version"), std::string::npos) << msg;

  msg = dataset_error(data_node({{"name", "cifar10"}, {"root", root + "/nope"}}), shrink::Split::Test);
  EXPECT_NE(msg.find("'" + root + "/nope'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("binary version"), std::string::npos) << msg;

  // Options are checked at their keys.
  msg = dataset_error(data_node({{"name", "cifar10"}, {"root", root}, {"std", "0"}}), shrink::Split::Train);
  EXPECT_NE(msg.find("data.std"), std::string::npos) << msg;
  msg = dataset_error(data_node({{"name", "cifar10"}, {"root", root}, {"labels", "fine"}}), shrink::Split::Train);
  EXPECT_NE(msg.find("labels"), std::string::npos) << msg;
}

TEST(Cifar, Cifar100FineAndCoarse) {
  TempDir dir;
  // Records (coarse, fine): train (3, 30), (19, 99), (0, 0), (7, 42); test (1, 2).
  shrink::test::write_file(dir.file("train.bin"), cifar_file(1, {{3, 30}, {19, 99}, {0, 0}, {7, 42}}));
  shrink::test::write_file(dir.file("test.bin"), cifar_file(2, {{1, 2}}));
  const auto root = dir.path().string();

  auto fine = shrink::build_dataset(data_node({{"name", "cifar100"}, {"root", root}}), shrink::Split::Train);
  ASSERT_EQ(fine->size(), 4);
  EXPECT_EQ(fine->num_classes(), 100);
  EXPECT_TRUE(fine->class_names().empty());
  expect_records(fine, {{1, 0}, {1, 1}, {1, 2}, {1, 3}});
  EXPECT_TRUE(torch::equal(fine->get_batch({0, 1, 2, 3}).targets, torch::tensor({30, 99, 0, 42}, torch::kInt64)));
  EXPECT_EQ(fine->normalization()->mean, (std::vector<double>{0.5071, 0.4865, 0.4409}));

  shrink::test::write_file(dir.file("coarse_label_names.txt"), [] {
    std::string s;
    for (int i = 0; i < 20; ++i) s += "super" + std::to_string(i) + "\n";
    return s;
  }());
  auto coarse = shrink::build_dataset(data_node({{"name", "cifar100"}, {"root", root}, {"labels", "coarse"}}),
                                      shrink::Split::Train);
  EXPECT_EQ(coarse->num_classes(), 20);
  EXPECT_TRUE(torch::equal(coarse->get_batch({0, 1, 2, 3}).targets, torch::tensor({3, 19, 0, 7}, torch::kInt64)));
  ASSERT_EQ(coarse->class_names().size(), 20u);
  EXPECT_EQ(coarse->class_names()[19], "super19");

  auto test = shrink::build_dataset(data_node({{"name", "cifar100"}, {"root", root}}), shrink::Split::Test);
  EXPECT_EQ(test->get(0).label, 2);
  expect_records(test, {{2, 0}});

  // A CIFAR-10 file is not a whole number of CIFAR-100 records.
  shrink::test::write_file(dir.file("test.bin"), cifar_file(2, {{1}}));
  auto msg = dataset_error(data_node({{"name", "cifar100"}, {"root", root}}), shrink::Split::Test);
  EXPECT_NE(msg.find("'" + dir.file("test.bin") + "' has 3073 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3074-byte record"), std::string::npos) << msg;

  // Coarse labels are checked even when learning the fine ones.
  shrink::test::write_file(dir.file("test.bin"), cifar_file(2, {{1, 2}, {1, 2}, {20, 2}}));
  msg = dataset_error(data_node({{"name", "cifar100"}, {"root", root}}), shrink::Split::Test);
  EXPECT_NE(msg.find("record 2: coarse label 20"), std::string::npos) << msg;

  msg = dataset_error(data_node({{"name", "cifar100"}, {"root", root}, {"labels", "fin"}}), shrink::Split::Test);
  EXPECT_NE(msg.find("data.labels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'fine'"), std::string::npos) << msg;
}

TEST(Cifar, CifarFormatTakesTheClassCountFromTheNamesFile) {
  TempDir dir;
  write_cifar10(dir);
  const auto root = dir.path().string();
  auto node = data_node({{"name", "cifar_format"}, {"root", root}});
  auto msg = dataset_error(node, shrink::Split::Train);
  EXPECT_NE(msg.find("data.num_classes"), std::string::npos) << msg;

  shrink::test::write_file(dir.file("batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\n");
  msg = dataset_error(node, shrink::Split::Train);  // labels up to 6 < 7: fine; test_batch has labels 0..2
  EXPECT_EQ(msg, "(no error)");
  auto ds = shrink::build_dataset(node, shrink::Split::Train);
  EXPECT_EQ(ds->num_classes(), 7);
  EXPECT_FALSE(ds->normalization().has_value());

  shrink::test::write_file(dir.file("batches.meta.txt"), "a\nb\nc\n");
  msg = dataset_error(node, shrink::Split::Train);
  EXPECT_NE(msg.find("record"), std::string::npos) << msg;  // label 3 >= 3 classes
  msg = dataset_error(data_node({{"name", "cifar_format"}, {"root", root}, {"num_classes", "10"}}), shrink::Split::Train);
  EXPECT_NE(msg.find("data.num_classes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("names 3 classes"), std::string::npos) << msg;
}

}  // namespace
