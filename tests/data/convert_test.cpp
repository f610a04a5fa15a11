// Converters: a small in-memory dataset written as CIFAR binaries and as an image folder, then
// read back with Shrink's own readers.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/data/convert.h"
#include "shrink/data/dataset.h"
#include "data_test_util.h"
#include "test_util.h"

namespace {

using shrink::test::data_node;

namespace fs = std::filesystem;
using shrink::ConfigNode;
using shrink::ConfigValue;
using shrink::test::TempDir;


const std::vector<std::string> kFashion = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                           "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/// n random grey 28x28 uint8 images; labels (i * 7) % 10, so every class appears when n >= 10.
std::shared_ptr<shrink::TensorDataset> grey_dataset(int64_t n, int64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto images = torch::randint(0, 256, {n, 1, 28, 28}, g, torch::kUInt8);
  auto labels = torch::arange(n, torch::kInt64).mul(7).remainder(10);
  return std::make_shared<shrink::TensorDataset>(images, labels, 10, std::nullopt, kFashion);
}

/// The uint8 images of a TensorDataset-backed split.
torch::Tensor stored_images(const shrink::DatasetPtr& ds) {
  auto* t = dynamic_cast<shrink::TensorDataset*>(ds.get());
  EXPECT_NE(t, nullptr);
  return t ? t->images() : torch::Tensor();
}

TEST(Convert, CifarPadsAndReplicatesExactly) {
  auto train = grey_dataset(30, 1), test = grey_dataset(10, 2);
  TempDir out;
  auto summary = shrink::write_cifar_binary(*train, *test, out.path().string());
  EXPECT_EQ(summary.train, 30);
  EXPECT_EQ(summary.test, 10);
  EXPECT_EQ(summary.num_classes, 10);
  for (int i = 1; i <= 5; ++i)  // 30 records split evenly
    EXPECT_EQ(fs::file_size(out.path() / ("data_batch_" + std::to_string(i) + ".bin")), 6u * 3073) << i;
  EXPECT_FALSE(fs::exists(out.path() / "test_batch.bin.tmp"));

  auto node = data_node({{"name", "cifar10"}, {"root", out.path().string()}, {"normalize", "false"}});
  auto read_train = shrink::build_dataset(node, shrink::Split::Train);
  auto read_test = shrink::build_dataset(node, shrink::Split::Test);
  ASSERT_EQ(read_train->size(), 30);
  ASSERT_EQ(read_test->size(), 10);
  EXPECT_EQ(read_train->class_names(), kFashion);  // from batches.meta.txt

  // 28 -> 32: two zero pixels on each side; grey replicated to R, G, B.
  auto expected = torch::constant_pad_nd(train->images(), {2, 2, 2, 2}, 0).expand({30, 3, 32, 32});
  EXPECT_TRUE(torch::equal(stored_images(read_train), expected));
  EXPECT_TRUE(torch::equal(dynamic_cast<shrink::TensorDataset*>(read_train.get())->labels(), train->labels()));
  auto expected_test = torch::constant_pad_nd(test->images(), {2, 2, 2, 2}, 0).expand({10, 3, 32, 32});
  EXPECT_TRUE(torch::equal(stored_images(read_test), expected_test));
}

TEST(Convert, CifarHundredLayoutWithCoarseLabels) {
  auto train = grey_dataset(12, 3), test = grey_dataset(4, 4);
  TempDir out;
  shrink::CifarWriteOptions options;
  options.layout = "cifar100";
  options.coarse_of_fine = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4};
  options.coarse_names = {"tops", "bottoms", "wraps", "feet", "other"};
  std::vector<int64_t> progress;
  options.progress = [&](const std::string& split, int64_t done, int64_t total) {
    if (split == "train") progress.push_back(done);
    EXPECT_LE(done, total);
  };
  shrink::write_cifar_binary(*train, *test, out.path().string(), options);
  EXPECT_EQ(progress.back(), 12);
  EXPECT_EQ(fs::file_size(out.path() / "train.bin"), 12u * 3074);

  const auto root = out.path().string();
  auto fine = shrink::build_dataset(
      data_node({{"name", "cifar_format"}, {"root", root}, {"layout", "cifar100"}}), shrink::Split::Train);
  EXPECT_EQ(fine->num_classes(), 10);
  EXPECT_EQ(fine->class_names(), kFashion);
  EXPECT_TRUE(torch::equal(dynamic_cast<shrink::TensorDataset*>(fine.get())->labels(), train->labels()));
  auto coarse = shrink::build_dataset(
      data_node({{"name", "cifar_format"}, {"root", root}, {"layout", "cifar100"}, {"labels", "coarse"}}),
      shrink::Split::Test);
  EXPECT_EQ(coarse->num_classes(), 5);
  EXPECT_EQ(coarse->class_names()[1], "bottoms");
  EXPECT_TRUE(torch::equal(dynamic_cast<shrink::TensorDataset*>(coarse.get())->labels(),
                           test->labels().div(2, "floor")));
}

TEST(Convert, CifarImageGeometry) {
  // RGB 31 x 30: top margin 0 (odd margin 1 goes after), left 1, right 1.
  auto image = torch::rand({3, 31, 30});
  auto q = shrink::to_cifar_image(image);
  ASSERT_EQ(q.sizes().vec(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(torch::equal(q.narrow(1, 0, 31).narrow(2, 1, 30),
                           image.mul(255).round().clamp(0, 255).to(torch::kUInt8)));
  EXPECT_EQ(q.narrow(1, 31, 1).sum().item<int64_t>(), 0);
  EXPECT_EQ(q.narrow(2, 0, 1).sum().item<int64_t>() + q.narrow(2, 31, 1).sum().item<int64_t>(), 0);

  auto big = torch::full({1, 40, 36}, 0.5);
  EXPECT_THROW(shrink::to_cifar_image(big), shrink::UserError);
  auto resized = shrink::to_cifar_image(big, true);
  EXPECT_EQ(resized.sizes().vec(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(resized.min().item<int64_t>(), 128);
  EXPECT_EQ(resized.max().item<int64_t>(), 128);
  EXPECT_THROW(shrink::to_cifar_image(torch::rand({2, 8, 8})), shrink::UserError);
}

TEST(Convert, ImageFolderPngRoundTrip) {
  auto train = grey_dataset(30, 5), test = grey_dataset(10, 6);
  TempDir out;
  shrink::ImageFolderWriteOptions options;
  options.format = "png";
  auto summary = shrink::write_image_folder(*train, *test, out.path().string(), options);
  EXPECT_EQ(summary.train, 30);
  EXPECT_TRUE(fs::exists(out.path() / "train" / "0_T-shirt_top" / "00.png"));
  EXPECT_TRUE(fs::exists(out.path() / "val" / "9_Ankle_boot" / "7.png"));  // test example 7: label 49 % 10

  auto node = data_node({{"name", "image_folder"}, {"root", out.path().string()}, {"channels", "1"},
                         {"normalize", "false"}});
  for (auto split : {shrink::Split::Train, shrink::Split::Test}) {
    const auto& original = split == shrink::Split::Train ? train : test;
    auto read = shrink::build_dataset(node, split);
    ASSERT_EQ(read->size(), original->size());
    EXPECT_EQ(read->num_classes(), 10);
    // The reader lists class by class, then in file (= original) order.
    std::vector<int64_t> order;
    for (int64_t label = 0; label < 10; ++label)
      for (int64_t i = 0; i < original->size(); ++i)
        if (original->labels()[i].item<int64_t>() == label) order.push_back(i);
    for (int64_t k = 0; k < read->size(); ++k) {
      auto ex = read->get(k);
      auto want = original->get(order[k]);
      EXPECT_EQ(ex.label, want.label) << k;
      EXPECT_TRUE(torch::equal(ex.image, want.image)) << k;
    }
  }
  auto read = shrink::build_dataset(node, shrink::Split::Train);
  EXPECT_EQ(read->class_names()[0], "0_T-shirt_top");

  // RGB output of a grey dataset: three equal planes.
  TempDir rgb;
  options.channels = 3;
  shrink::write_image_folder(*train, *test, rgb.path().string(), options);
  auto rgb_read = shrink::build_dataset(
      data_node({{"name", "image_folder"}, {"root", rgb.path().string()}, {"normalize", "false"}}),
      shrink::Split::Train);
  auto image = rgb_read->get(0).image;
  ASSERT_EQ(image.size(0), 3);
  EXPECT_TRUE(torch::equal(image[0], image[2]));
  EXPECT_TRUE(torch::equal(image[0], train->get(0).image[0]));
}

TEST(Convert, ImageFolderJpegIsClose) {
  // Smooth RGB images: JPEG at quality 95 stays within a few levels.
  const int64_t n = 10;
  auto y = torch::linspace(0, 1, 24).view({1, 24, 1}), x = torch::linspace(0, 1, 20).view({1, 1, 20});
  std::vector<torch::Tensor> images;
  for (int64_t i = 0; i < n; ++i)
    images.push_back(torch::cat({(y * 0.8 + i * 0.02).expand({1, 24, 20}), (x * 0.6).expand({1, 24, 20}),
                                 ((x + y) * 0.4 + 0.1).expand({1, 24, 20})}));
  auto data = torch::stack(images);
  auto labels = torch::arange(n, torch::kInt64).remainder(2);
  shrink::TensorDataset train(data, labels, 2), test(data.narrow(0, 0, 2), labels.narrow(0, 0, 2), 2);
  TempDir out;
  shrink::write_image_folder(train, test, out.path().string());
  EXPECT_TRUE(fs::exists(out.path() / "train" / "0" / "0.JPEG"));
  auto read = shrink::build_dataset(
      data_node({{"name", "image_folder"}, {"root", out.path().string()}, {"normalize", "false"}}),
      shrink::Split::Train);
  ASSERT_EQ(read->size(), n);
  auto ex = read->get(1);  // class 0, second file: example 2
  EXPECT_EQ(ex.label, 0);
  ASSERT_EQ(ex.image.sizes().vec(), (std::vector<int64_t>{3, 24, 20}));
  // 4:2:0 chroma subsampling costs a few levels on the colour gradients.
  const auto err = (ex.image - data[2]).abs();
  EXPECT_LT(err.mean().item<float>(), 2.0f / 255) << err.mean();
  EXPECT_LT(err.max().item<float>(), 16.0f / 255) << err.max();
  // Channel order survives: red grows down, green across.
  EXPECT_GT(ex.image[0][23][0].item<float>(), ex.image[0][0][0].item<float>() + 0.5f);
  EXPECT_GT(ex.image[1][0][19].item<float>(), ex.image[1][0][0].item<float>() + 0.4f);
}

TEST(Convert, RefusesANonEmptyFolder) {
  auto train = grey_dataset(10, 7), test = grey_dataset(3, 8);
  TempDir out;
  shrink::test::write_file(out.file("keep.txt"), "mine");
  try {
    shrink::write_cifar_binary(*train, *test, out.path().string());
    ADD_FAILURE() << "no error";
  } catch (const shrink::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("not empty"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(out.path().string()), std::string::npos) << e.what();
  }
  EXPECT_THROW(shrink::write_image_folder(*train, *test, out.path().string()), shrink::UserError);
  EXPECT_FALSE(fs::exists(out.path() / "train"));

  shrink::CifarWriteOptions cifar;
  cifar.overwrite = true;
  EXPECT_NO_THROW(shrink::write_cifar_binary(*train, *test, out.path().string(), cifar));
  EXPECT_TRUE(fs::exists(out.file("keep.txt")));

  // Overwriting an image folder removes the earlier train/val trees.
  shrink::ImageFolderWriteOptions folder;
  folder.overwrite = true;
  folder.format = "png";
  fs::create_directories(out.path() / "train" / "stale");
  EXPECT_NO_THROW(shrink::write_image_folder(*train, *test, out.path().string(), folder));
  EXPECT_FALSE(fs::exists(out.path() / "train" / "stale"));
}

TEST(Convert, ImageFolderNeedsEveryClassInTrain) {
  auto train = grey_dataset(5, 9), test = grey_dataset(3, 10);  // labels 0, 7, 4, 1, 8
  TempDir out;
  try {
    shrink::write_image_folder(*train, *test, out.path().string());
    ADD_FAILURE() << "no error";
  } catch (const shrink::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("2_Pullover"), std::string::npos) << e.what();
  }
}

TEST(Convert, ClassFolderNames) {
  EXPECT_EQ(shrink::class_folder_name(0, 10, "T-shirt/top"), "0_T-shirt_top");
  EXPECT_EQ(shrink::class_folder_name(9, 10, "Ankle boot"), "9_Ankle_boot");
  EXPECT_EQ(shrink::class_folder_name(7, 100, "bed"), "07_bed");
  EXPECT_EQ(shrink::class_folder_name(42, 1000, ""), "042");
  EXPECT_EQ(shrink::class_folder_name(0, 1, "x"), "0_x");
}

}  // namespace
