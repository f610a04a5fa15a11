// The image_folder reader, on BMP and PGM files written byte by byte here (so that channel order
// and pixel values are checked independently of OpenCV's writers).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/data/dataset.h"
#include "shrink/data/image_folder.h"
#include "data_test_util.h"
#include "test_util.h"

namespace {

using shrink::test::data_node;
using shrink::test::dataset_error;

namespace fs = std::filesystem;
using shrink::ConfigNode;
using shrink::ConfigValue;
using shrink::test::TempDir;



/// RGB value of pixel (y, x) of image `seed`.
uint8_t value(int seed, int c, int y, int x) { return static_cast<uint8_t>((seed * 41 + c * 80 + y * 13 + x * 7) % 256); }

void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}

/// A 24-bit BMP of w x h: rows bottom-up, pixels stored B, G, R, rows padded to 4 bytes.
std::string bmp(int seed, int w, int h) {
  const int row = (3 * w + 3) / 4 * 4;
  std::string s = "BM";
  put32(s, 54 + row * h);
  put32(s, 0);
  put32(s, 54);
  put32(s, 40);
  put32(s, w);
  put32(s, h);
  put16(s, 1);
  put16(s, 24);
  put32(s, 0);
  put32(s, row * h);
  put32(s, 2835);
  put32(s, 2835);
  put32(s, 0);
  put32(s, 0);
  for (int y = h - 1; y >= 0; --y) {
    for (int x = 0; x < w; ++x)
      for (int c = 2; c >= 0; --c) s.push_back(static_cast<char>(value(seed, c, y, x)));
    s.append(row - 3 * w, '\0');
  }
  return s;
}

/// A binary PGM (grey) of w x h with the red plane of bmp(seed).
std::string pgm(int seed, int w, int h) {
  std::string s = "P5\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) s.push_back(static_cast<char>(value(seed, 0, y, x)));
  return s;
}

void write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  shrink::test::write_file(path.string(), bytes);
}

/// root/train/{b_dog: 2 images, a_cat: 2 images + notes.txt, C_up: 1 image in a sub-folder};
/// root/val/{a_cat: 1 image}. Seeds: file name digits.
void write_tree(const fs::path& root) {
  write(root / "train" / "b_dog" / "img_2.BMP", bmp(2, 5, 3));
  write(root / "train" / "b_dog" / "img_1.bmp", bmp(1, 4, 4));
  write(root / "train" / "a_cat" / "img_3.bmp", bmp(3, 6, 2));
  write(root / "train" / "a_cat" / "img_4.pgm", pgm(4, 3, 3));
  write(root / "train" / "a_cat" / "notes.txt", "not an image");
  write(root / "train" / "C_up" / "deeper" / "img_5.bmp", bmp(5, 2, 2));
  write(root / "train" / ".hidden" / "img_6.bmp", bmp(6, 2, 2));
  write(root / "val" / "a_cat" / "img_7.bmp", bmp(7, 3, 5));
}

void expect_rgb(const torch::Tensor& image, int seed, int w, int h) {
  ASSERT_EQ(image.sizes().vec(), (std::vector<int64_t>{3, h, w}));
  int wrong = 0;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) wrong += image[c][y][x].item<float>() != value(seed, c, y, x) / 255.0f;
  EXPECT_EQ(wrong, 0) << "image " << seed;
}

TEST(ImageFolder, ReadsClassesAndPixelsInOrder) {
  TempDir dir;
  write_tree(dir.path());
  auto node = data_node({{"name", "image_folder"}, {"root", dir.path().string()}, {"normalize", "false"}});
  auto train = shrink::build_dataset(node, shrink::Split::Train);
  // Byte order: upper case first.
  EXPECT_EQ(train->class_names(), (std::vector<std::string>{"C_up", "a_cat", "b_dog"}));
  EXPECT_EQ(train->num_classes(), 3);
  EXPECT_TRUE(train->sample_shape().empty());
  EXPECT_FALSE(train->normalization().has_value());
  ASSERT_EQ(train->size(), 5);
  auto* folder = dynamic_cast<shrink::ImageFolderDataset*>(train.get());
  ASSERT_NE(folder, nullptr);
  std::vector<std::string> names;
  for (const auto& f : folder->files()) names.push_back(fs::path(f).filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"img_5.bmp", "img_3.bmp", "img_4.pgm", "img_1.bmp", "img_2.BMP"}));
  EXPECT_EQ(folder->labels(), (std::vector<int64_t>{0, 1, 1, 2, 2}));

  expect_rgb(train->get(0).image, 5, 2, 2);
  expect_rgb(train->get(1).image, 3, 6, 2);
  expect_rgb(train->get(4).image, 2, 5, 3);
  EXPECT_EQ(train->get(4).label, 2);
  // A grey file read as RGB: three equal planes.
  auto grey = train->get(2).image;
  ASSERT_EQ(grey.sizes().vec(), (std::vector<int64_t>{3, 3, 3}));
  EXPECT_TRUE(torch::equal(grey[0], grey[2]));
  EXPECT_FLOAT_EQ(grey[1][2][1].item<float>(), value(4, 0, 2, 1) / 255.0f);

  // The test split uses the training classes: a_cat is label 1.
  auto val = shrink::build_dataset(node, shrink::Split::Test);
  ASSERT_EQ(val->size(), 1);
  EXPECT_EQ(val->num_classes(), 3);
  EXPECT_EQ(val->get(0).label, 1);
  expect_rgb(val->get(0).image, 7, 3, 5);

  // Loading from several threads at once gives the same images.
  std::vector<torch::Tensor> a(5), b(5);
  std::thread t1([&] {
    for (int i = 0; i < 5; ++i) a[i] = train->get(i).image;
  });
  std::thread t2([&] {
    for (int i = 4; i >= 0; --i) b[i] = train->get(i).image;
  });
  t1.join();
  t2.join();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
}

TEST(ImageFolder, GreyChannelsAndNormalization) {
  TempDir dir;
  write_tree(dir.path());
  const auto root = dir.path().string();
  auto ds = shrink::build_dataset(data_node({{"name", "image_folder"}, {"root", root}, {"channels", "1"}}),
                                  shrink::Split::Train);
  auto image = ds->get(2).image;  // the PGM, exact
  ASSERT_EQ(image.sizes().vec(), (std::vector<int64_t>{1, 3, 3}));
  EXPECT_FLOAT_EQ(image[0][1][2].item<float>(), value(4, 0, 1, 2) / 255.0f);
  ASSERT_TRUE(ds->normalization().has_value());
  ASSERT_EQ(ds->normalization()->mean.size(), 1u);
  EXPECT_NEAR(ds->normalization()->mean[0], (0.485 + 0.456 + 0.406) / 3, 1e-12);

  auto rgb = shrink::build_dataset(data_node({{"name", "image_folder"}, {"root", root}}), shrink::Split::Train);
  EXPECT_EQ(rgb->normalization()->mean, (std::vector<double>{0.485, 0.456, 0.406}));
  EXPECT_EQ(rgb->normalization()->std, (std::vector<double>{0.229, 0.224, 0.225}));
}

TEST(ImageFolder, CorruptFilesFailOrAreSkipped) {
  TempDir dir;
  write_tree(dir.path());
  const auto corrupt = dir.path() / "train" / "a_cat" / "x.jpg";
  write(corrupt, "this is not a JPEG at all, just some bytes");
  const auto root = dir.path().string();

  auto ds = shrink::build_dataset(data_node({{"name", "image_folder"}, {"root", root}}), shrink::Split::Train);
  ASSERT_EQ(ds->size(), 6);  // found, not yet decoded
  EXPECT_EQ(ds->skipped(), 0);
  try {
    ds->get(3);  // a_cat: img_3.bmp, img_4.pgm, x.jpg
    ADD_FAILURE() << "no error";
  } catch (const shrink::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + corrupt.string() + "'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("skip_corrupt"), std::string::npos) << e.what();
  }

  auto skipping = shrink::build_dataset(
      data_node({{"name", "image_folder"}, {"root", root}, {"skip_corrupt", "true"}}), shrink::Split::Train);
  EXPECT_EQ(skipping->size(), 5);
  EXPECT_EQ(skipping->skipped(), 1);
  auto* folder = dynamic_cast<shrink::ImageFolderDataset*>(skipping.get());
  ASSERT_NE(folder, nullptr);
  EXPECT_EQ(folder->skipped_files(), (std::vector<std::string>{corrupt.string()}));
  EXPECT_NE(folder->describe().find("1 skipped"), std::string::npos) << folder->describe();
  for (int64_t i = 0; i < skipping->size(); ++i) EXPECT_NO_THROW(skipping->get(i));
}

TEST(ImageFolder, ErrorsNameTheFolder) {
  TempDir dir;
  write_tree(dir.path());
  const auto root = dir.path().string();
  auto node = data_node({{"name", "image_folder"}, {"root", root}});

  // A class folder only in val.
  write(dir.path() / "val" / "zebra" / "img_8.bmp", bmp(8, 2, 2));
  auto msg = dataset_error(node, shrink::Split::Test);
  EXPECT_NE(msg.find("'" + (dir.path() / "val" / "zebra").string() + "'"), std::string::npos) << msg;
  EXPECT_EQ(dataset_error(node, shrink::Split::Train), "(no error)");
  fs::remove_all(dir.path() / "val" / "zebra");

  // A class folder without images.
  fs::create_directories(dir.path() / "train" / "d_empty");
  write(dir.path() / "train" / "d_empty" / "readme.md", "nothing here");
  msg = dataset_error(node, shrink::Split::Train);
  EXPECT_NE(msg.find("'" + (dir.path() / "train" / "d_empty").string() + "'"), std::string::npos) << msg;
  fs::remove_all(dir.path() / "train" / "d_empty");

  // Another test folder name.
  msg = dataset_error(data_node({{"name", "image_folder"}, {"root", root}, {"test_dir", "test"}}), shrink::Split::Test);
  EXPECT_NE(msg.find("data.test_dir"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'" + (dir.path() / "test").string() + "'"), std::string::npos) << msg;
  fs::rename(dir.path() / "val", dir.path() / "test");
  EXPECT_EQ(dataset_error(data_node({{"name", "image_folder"}, {"root", root}, {"test_dir", "test"}}), shrink::Split::Test),
            "(no error)");

  msg = dataset_error(data_node({{"name", "image_folder"}, {"root", root + "/missing"}}), shrink::Split::Train);
  EXPECT_NE(msg.find("data.root"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'" + root + "/missing'"), std::string::npos) << msg;

  TempDir empty;
  fs::create_directories(empty.path() / "train");
  msg = dataset_error(data_node({{"name", "image_folder"}, {"root", empty.path().string()}}), shrink::Split::Train);
  EXPECT_NE(msg.find("no class sub-folders"), std::string::npos) << msg;

  msg = dataset_error(data_node({{"name", "image_folder"}, {"root", root}, {"channels", "2"}}), shrink::Split::Train);
  EXPECT_NE(msg.find("data.channels"), std::string::npos) << msg;
}

TEST(ImageFolder, ImageExtensions) {
  EXPECT_TRUE(shrink::has_image_extension("a/b/n01440764_10026.JPEG"));
  EXPECT_TRUE(shrink::has_image_extension("x.Png"));
  EXPECT_TRUE(shrink::has_image_extension("x.webp"));
  EXPECT_FALSE(shrink::has_image_extension("x.txt"));
  EXPECT_FALSE(shrink::has_image_extension("jpg"));
}

}  // namespace
