// Generated datasets: "synthetic" and "cluttered_fashion_mnist" (on small IDX files written here).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/data/dataset.h"
#include "shrink/data/synthetic.h"
#include "data_test_util.h"
#include "test_util.h"

namespace {

using shrink::test::data_node;
using shrink::test::dataset_error;

using shrink::ConfigNode;
using shrink::ConfigValue;
using shrink::test::TempDir;



const torch::Tensor& images_of(const shrink::DatasetPtr& ds) {
  auto* t = dynamic_cast<shrink::TensorDataset*>(ds.get());
  EXPECT_NE(t, nullptr);
  return t->images();
}

TEST(Synthetic, DeterministicPerSeed) {
  auto node = [](const std::string& seed) {
    return data_node({{"name", "synthetic"}, {"channels", "2"}, {"height", "5"}, {"width", "4"},
                      {"num_classes", "3"}, {"train_size", "40"}, {"test_size", "7"}, {"seed", seed}});
  };
  auto a = shrink::build_dataset(node("1"), shrink::Split::Train);
  auto b = shrink::build_dataset(node("1"), shrink::Split::Train);
  auto c = shrink::build_dataset(node("2"), shrink::Split::Train);
  auto test = shrink::build_dataset(node("1"), shrink::Split::Test);
  ASSERT_EQ(a->size(), 40);
  EXPECT_EQ(test->size(), 7);
  EXPECT_EQ(a->sample_shape(), (std::vector<int64_t>{2, 5, 4}));
  EXPECT_EQ(a->num_classes(), 3);
  EXPECT_FALSE(a->normalization().has_value());
  EXPECT_TRUE(torch::equal(images_of(a), images_of(b)));
  EXPECT_FALSE(torch::equal(images_of(a), images_of(c)));
  EXPECT_FALSE(torch::equal(images_of(a).narrow(0, 0, 7), images_of(test)));
  EXPECT_GE(images_of(a).min().item<float>(), 0.0f);
  EXPECT_LE(images_of(a).max().item<float>(), 1.0f);
  // Every class is drawn.
  auto labels = dynamic_cast<shrink::TensorDataset*>(a.get())->labels();
  std::set<int64_t> drawn(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel());
  EXPECT_EQ(drawn, (std::set<int64_t>{0, 1, 2}));
}

TEST(Synthetic, LearnableImagesAreClassTemplates) {
  auto ds = shrink::build_dataset(data_node({{"name", "synthetic"}, {"num_classes", "4"}, {"train_size", "64"},
                                             {"noise", "0"}, {"height", "8"}, {"width", "8"}}),
                                  shrink::Split::Train);
  auto test = shrink::build_dataset(data_node({{"name", "synthetic"}, {"num_classes", "4"}, {"test_size", "16"},
                                               {"noise", "0"}, {"height", "8"}, {"width", "8"}}),
                                    shrink::Split::Test);
  auto* t = dynamic_cast<shrink::TensorDataset*>(ds.get());
  ASSERT_NE(t, nullptr);
  // Without noise an image is its class template: equal within a class (in both splits), different across.
  std::vector<torch::Tensor> templates(4);
  for (int64_t i = 0; i < ds->size(); ++i) {
    auto ex = ds->get(i);
    auto& tmpl = templates[ex.label];
    if (!tmpl.defined()) tmpl = ex.image;
    EXPECT_TRUE(torch::equal(tmpl, ex.image)) << i;
  }
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(templates[i].defined()) << "class " << i << " never drawn";
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j) EXPECT_GT((templates[i] - templates[j]).abs().mean().item<float>(), 0.1f);
  for (int64_t i = 0; i < test->size(); ++i) {
    auto ex = test->get(i);
    EXPECT_TRUE(torch::equal(templates[ex.label], ex.image)) << i;
  }

  // With noise, images of a class are closer to their template than to the others'.
  auto noisy = shrink::build_dataset(data_node({{"name", "synthetic"}, {"num_classes", "4"}, {"train_size", "20"},
                                                {"height", "8"}, {"width", "8"}}),
                                     shrink::Split::Train);
  for (int64_t i = 0; i < noisy->size(); ++i) {
    auto ex = noisy->get(i);
    EXPECT_FALSE(torch::equal(ex.image, templates[ex.label]));
    const float own = (ex.image - templates[ex.label]).abs().mean().item<float>();
    for (int j = 0; j < 4; ++j)
      if (j != ex.label) EXPECT_LT(own, (ex.image - templates[j]).abs().mean().item<float>()) << i;
  }

  // Not learnable: no two images of a class are equal even without noise.
  auto random = shrink::build_dataset(data_node({{"name", "synthetic"}, {"num_classes", "2"}, {"train_size", "8"},
                                                 {"learnable", "false"}, {"noise", "0"}}),
                                      shrink::Split::Train);
  EXPECT_FALSE(torch::equal(random->get(0).image, random->get(2).image));
  EXPECT_FALSE(torch::equal(random->get(0).image, random->get(1).image));
}

TEST(Synthetic, Errors) {
  auto msg = dataset_error(data_node({{"name", "synthetic"}, {"channels", "0"}}), shrink::Split::Train);
  EXPECT_NE(msg.find("data.channels"), std::string::npos) << msg;
  msg = dataset_error(data_node({{"name", "synthetic"}, {"mean", "0.5"}, {"std", "-1"}, {"normalize", "true"}}),
                 shrink::Split::Train);
  EXPECT_NE(msg.find("data.std"), std::string::npos) << msg;
  msg = dataset_error(data_node({{"name", "synthetic"}, {"height", "4096"}, {"width", "4096"}, {"train_size", "1000"}}),
                 shrink::Split::Train);
  EXPECT_NE(msg.find("data.train_size"), std::string::npos) << msg;
}

// ---- cluttered_fashion_mnist ----

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

/// Items [n, 28, 28] with every pixel in 1..255 (so every pixel of an item is visible).
torch::Tensor make_items(int64_t n, int64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(1, 256, {n, 28, 28}, g, torch::kUInt8);
}

void write_idx(const std::string& path, const torch::Tensor& t) {
  std::string s = be32(t.dim() == 3 ? 0x803 : 0x801);
  for (int64_t d : t.sizes()) s += be32(static_cast<uint32_t>(d));
  auto c = t.contiguous();
  s.append(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
  shrink::test::write_file(path, s);
}

struct FakeFashion {
  TempDir dir;
  torch::Tensor train = make_items(12, 1), test = make_items(5, 2);
  FakeFashion() {
    write_idx(dir.file("train-images-idx3-ubyte"), train);
    write_idx(dir.file("train-labels-idx1-ubyte"), torch::arange(12, torch::kInt64).remainder(10).to(torch::kUInt8));
    write_idx(dir.file("t10k-images-idx3-ubyte"), test);
    write_idx(dir.file("t10k-labels-idx1-ubyte"), torch::tensor({9, 8, 7, 6, 5}, torch::kUInt8));
  }
};

/// Where `item` (uint8 [28, 28]) lies on `canvas` with every pixel of the canvas there >= the
/// item's; {-1, -1} when nowhere.
std::pair<int64_t, int64_t> find_item(const torch::Tensor& canvas, const torch::Tensor& item) {
  const int64_t side = canvas.size(0);
  auto c = canvas.contiguous(), it = item.contiguous();
  const uint8_t* cp = c.data_ptr<uint8_t>();
  const uint8_t* ip = it.data_ptr<uint8_t>();
  for (int64_t y = 0; y + 28 <= side; ++y)
    for (int64_t x = 0; x + 28 <= side; ++x) {
      bool covered = true;
      for (int64_t p = 0; p < 28 * 28 && covered; ++p) covered = cp[(y + p / 28) * side + x + p % 28] >= ip[p];
      if (covered) return {y, x};
    }
  return {-1, -1};
}

TEST(Cluttered, ItemAndClutterOnTheCanvas) {
  FakeFashion fashion;
  auto node = data_node({{"name", "cluttered_fashion_mnist"}, {"root", fashion.dir.path().string()}, {"seed", "3"}});
  auto ds = shrink::build_dataset(node, shrink::Split::Train);
  ASSERT_EQ(ds->size(), 12);
  EXPECT_EQ(ds->num_classes(), 10);
  EXPECT_EQ(ds->sample_shape(), (std::vector<int64_t>{1, 100, 100}));
  EXPECT_EQ(ds->class_names().front(), "T-shirt/top");
  EXPECT_FALSE(ds->normalization().has_value());
  auto* cluttered = dynamic_cast<shrink::ClutteredDataset*>(ds.get());
  ASSERT_NE(cluttered, nullptr);

  auto again = shrink::build_dataset(node, shrink::Split::Train);
  for (int64_t i = 0; i < 6; ++i) {
    auto ex = ds->get(i);
    EXPECT_EQ(ex.label, i % 10);
    ASSERT_EQ(ex.image.sizes().vec(), (std::vector<int64_t>{1, 100, 100}));
    EXPECT_TRUE(torch::equal(ex.image, again->get(i).image)) << i;  // deterministic per index
    EXPECT_TRUE(torch::equal(ex.image, ds->get(i).image)) << i;
    auto canvas = cluttered->render(i);
    EXPECT_TRUE(torch::equal(canvas.to(torch::kFloat32).div(255.0).unsqueeze(0), ex.image));
    const auto item = fashion.train[i];
    EXPECT_GE(canvas.sum().item<int64_t>(), item.sum().item<int64_t>()) << i;
    EXPECT_NE(find_item(canvas, item).first, -1) << "item " << i << " not on its canvas";
    // Clutter: nonzero pixels outside any single 28x28 item.
    EXPECT_GT(canvas.ne(0).sum().item<int64_t>(), 28 * 28) << i;
  }
  EXPECT_FALSE(torch::equal(ds->get(0).image, ds->get(1).image));
  auto batch = ds->get_batch({2, 0});
  EXPECT_EQ(batch.inputs.sizes().vec(), (std::vector<int64_t>{2, 1, 100, 100}));
  EXPECT_TRUE(torch::equal(batch.inputs[1], ds->get(0).image));

  // Another seed moves things.
  auto other = shrink::build_dataset(
      data_node({{"name", "cluttered_fashion_mnist"}, {"root", fashion.dir.path().string()}, {"seed", "4"}}),
      shrink::Split::Train);
  EXPECT_FALSE(torch::equal(ds->get(0).image, other->get(0).image));
}

TEST(Cluttered, WithoutClutterTheCanvasHoldsOnlyTheItem) {
  FakeFashion fashion;
  auto node = data_node({{"name", "cluttered_fashion_mnist"}, {"root", fashion.dir.path().string()},
                         {"clutter", "0"}, {"canvas", "40"}, {"test_size", "3"}});
  auto test = shrink::build_dataset(node, shrink::Split::Test);
  ASSERT_EQ(test->size(), 3);
  auto* cluttered = dynamic_cast<shrink::ClutteredDataset*>(test.get());
  ASSERT_NE(cluttered, nullptr);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(test->get(i).label, 9 - i);
    auto canvas = cluttered->render(i);
    ASSERT_EQ(canvas.sizes().vec(), (std::vector<int64_t>{40, 40}));
    EXPECT_EQ(canvas.sum().item<int64_t>(), fashion.test[i].sum().item<int64_t>());
    auto [y, x] = find_item(canvas, fashion.test[i]);
    ASSERT_NE(y, -1);
    EXPECT_TRUE(torch::equal(canvas.narrow(0, y, 28).narrow(1, x, 28), fashion.test[i]));
  }
}

TEST(Cluttered, Errors) {
  FakeFashion fashion;
  const auto root = fashion.dir.path().string();
  auto msg = dataset_error(data_node({{"name", "cluttered_fashion_mnist"}, {"root", root}, {"train_size", "13"}}),
                      shrink::Split::Train);
  EXPECT_NE(msg.find("data.train_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at most 12"), std::string::npos) << msg;
  msg = dataset_error(data_node({{"name", "cluttered_fashion_mnist"}, {"root", root + "/nope"}}), shrink::Split::Test);
  EXPECT_NE(msg.find("data.root"), std::string::npos) << msg;
  msg = dataset_error(data_node({{"name", "cluttered_fashion_mnist"}, {"root", root}, {"canvas", "20"}}),
                 shrink::Split::Test);
  EXPECT_NE(msg.find("data.canvas"), std::string::npos) << msg;
}

}  // namespace
