#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/data/transforms.h"
#include "test_util.h"

namespace shrink {
namespace {

namespace F = torch::nn::functional;

// ---------------------------------------------------------------------------------------------
// Slow, obvious references

/// A [C, H, W] image with distinct values in [0, 1).
torch::Tensor test_image(int64_t c, int64_t h, int64_t w, uint64_t seed = 1) {
  Rng rng(seed);
  auto t = torch::empty({c, h, w});
  auto a = t.accessor<float, 3>();
  for (int64_t k = 0; k < c; ++k)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) a[k][y][x] = static_cast<float>(rng.uniform());
  return t;
}

/// Pads every side by `padding` pixels of `fill`, then takes the window at (top, left) of the
/// padded image.
torch::Tensor ref_pad_crop(const torch::Tensor& image, int64_t padding, float fill, int64_t top, int64_t left,
                           int64_t h, int64_t w) {
  const int64_t c = image.size(0), H = image.size(1), W = image.size(2);
  auto src = image.accessor<float, 3>();
  auto out = torch::empty({c, h, w});
  auto dst = out.accessor<float, 3>();
  for (int64_t k = 0; k < c; ++k)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sy = top + y - padding, sx = left + x - padding;
        dst[k][y][x] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? src[k][sy][sx] : fill;
      }
  return out;
}

/// Bilinear resize (align_corners false) of the window (top, left, h, w), in double.
torch::Tensor ref_bilinear(const torch::Tensor& image, int64_t top, int64_t left, int64_t h, int64_t w,
                           int64_t out_h, int64_t out_w) {
  const int64_t c = image.size(0);
  auto src = image.accessor<float, 3>();
  auto out = torch::empty({c, out_h, out_w});
  auto dst = out.accessor<float, 3>();
  auto source = [](int64_t d, int64_t in, int64_t out_size, int64_t& i0, int64_t& i1, double& frac) {
    double s = (d + 0.5) * static_cast<double>(in) / static_cast<double>(out_size) - 0.5;
    if (s < 0) s = 0;
    i0 = static_cast<int64_t>(std::floor(s));
    i1 = std::min(i0 + 1, in - 1);
    frac = s - static_cast<double>(i0);
  };
  for (int64_t k = 0; k < c; ++k)
    for (int64_t y = 0; y < out_h; ++y)
      for (int64_t x = 0; x < out_w; ++x) {
        int64_t y0, y1, x0, x1;
        double fy, fx;
        source(y, h, out_h, y0, y1, fy);
        source(x, w, out_w, x0, x1, fx);
        auto at = [&](int64_t yy, int64_t xx) { return static_cast<double>(src[k][top + yy][left + xx]); };
        const double v = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) +
                         fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
        dst[k][y][x] = static_cast<float>(v);
      }
  return out;
}

torch::Tensor torch_bilinear(const torch::Tensor& image, int64_t out_h, int64_t out_w) {
  return F::interpolate(image.unsqueeze(0),
                        F::InterpolateFuncOptions().size(std::vector<int64_t>{out_h, out_w}).mode(torch::kBilinear).align_corners(false))
      .squeeze(0);
}

/// Python's round(): half to even.
int64_t py_round(double x) {
  const double r = std::round(x);
  if (std::fabs(x - std::trunc(x)) == 0.5) return static_cast<int64_t>(2.0 * std::round(x / 2.0));
  return static_cast<int64_t>(r);
}

/// torchvision RandomResizedCrop.get_params, written out again with the same draws.
detail::CropBox ref_rrc_box(int64_t H, int64_t W, double s0, double s1, double r0, double r1, Rng& rng) {
  const double area = static_cast<double>(H * W);
  for (int i = 0; i < 10; ++i) {
    const double target = area * (s0 + (s1 - s0) * rng.uniform());
    const double ar = std::exp(std::log(r0) + (std::log(r1) - std::log(r0)) * rng.uniform());
    const int64_t w = py_round(std::sqrt(target * ar));
    const int64_t h = py_round(std::sqrt(target / ar));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      const int64_t top = rng.integer(0, H - h);
      const int64_t left = rng.integer(0, W - w);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
  int64_t w = W, h = H;
  if (in_ratio < r0) {
    h = py_round(W / r0);
  } else if (in_ratio > r1) {
    w = py_round(H * r1);
  }
  return {(H - h) / 2, (W - w) / 2, h, w};
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = (a - b).abs().max().item<double>();
  EXPECT_LE(diff, tol) << what;
}

std::vector<int64_t> shape_of(const torch::Tensor& t) { return std::vector<int64_t>(t.sizes().begin(), t.sizes().end()); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

template <class F>
std::string user_error_of(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

/// Parses one transform from YAML text such as "random_crop: {size: 32}".
TransformPtr one(const std::string& yaml) {
  auto tree = read_yaml_string("- " + yaml + "\n", "t.yaml");
  auto pipeline = parse_transforms(ConfigNode(tree, "transforms"));
  EXPECT_EQ(pipeline.steps().size(), 1u);
  return pipeline.steps().at(0);
}

// ---------------------------------------------------------------------------------------------
// Registry and parsing

/// A user transform registered from the test binary, as a user's executable would.
class ScaleBy : public Transform {
 public:
  explicit ScaleBy(double factor) : factor_(factor) {}
  torch::Tensor apply(const torch::Tensor& image, Rng&) const override { return image * factor_; }
  std::string describe() const override { return "test_scale_by(" + std::to_string(factor_) + ")"; }

 private:
  double factor_;
};
SHRINK_REGISTER_TRANSFORM(
    "test_scale_by",
    [](const ConfigNode& options) -> TransformPtr {
      options.check_keys({"factor"});
      return std::make_shared<ScaleBy>(options.get_or<double>("factor", 1.0));
    },
    "Multiplies by a factor (test only).");

TEST(TransformRegistry, UserTransformsFromTheMacro) {
  auto tree = read_yaml_string("- test_scale_by: {factor: 2}\n- horizontal_flip: {p: 1}\n", "u.yaml");
  auto pipeline = parse_transforms(ConfigNode(tree, "transforms"));
  ASSERT_EQ(pipeline.steps().size(), 2u);
  Rng rng(0);
  auto out = pipeline.apply(torch::ones({1, 2, 2}), rng);
  EXPECT_TRUE(torch::equal(out, torch::full({1, 2, 2}, 2.0f)));
}

TEST(TransformRegistry, HasBuiltinsWithOptionDocs) {
  auto& registry = transform_registry();
  for (const char* name : {"random_crop", "horizontal_flip", "random_resized_crop", "resize", "center_crop",
                           "normalize", "cutout"}) {
    ASSERT_TRUE(registry.contains(name)) << name;
    const auto& entry = registry.get(name);
    EXPECT_FALSE(entry.description.empty()) << name;
    EXPECT_FALSE(entry.options.empty()) << name;
  }
  const auto& crop = registry.get("random_crop");
  ASSERT_EQ(crop.options.size(), 3u);
  EXPECT_EQ(crop.options[0].name, "size");
  EXPECT_EQ(crop.options[0].default_value, "required");
  EXPECT_EQ(crop.options[0].type, "int or [height, width]");
  EXPECT_EQ(crop.options[1].name, "padding");
  EXPECT_EQ(crop.options[1].default_value, "0");
  const auto& rrc = registry.get("random_resized_crop");
  EXPECT_EQ(rrc.options[1].default_value, "[0.08, 1]");
}

/// A recipe whose `data.transforms.train` list is `items` (starting on line 5), loaded from a file.
struct Recipe {
  test::TempDir dir;
  std::string path;
  ConfigNode data;
  explicit Recipe(const std::string& transforms_body) {
    path = dir.file("recipe.yaml");
    test::write_file(path, "data:\n  name: fashion_mnist\n  transforms:\n" + transforms_body);
    data = ConfigNode(read_yaml_file(path), "")["data"];
  }
  std::string train_error() const {
    try {
      split_transforms(data, true);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  }
};

Recipe train_list(const std::string& items) { return Recipe("    train:\n" + items); }

TEST(TransformParse, ReadsBothSplits) {
  Recipe r(
      "    train:\n"
      "      - random_crop: {size: 32, padding: 4}\n"
      "      - horizontal_flip\n"
      "      - horizontal_flip:\n"
      "      - cutout:\n"
      "          size: 8\n"
      "      - normalize: {mean: [0.5, 0.4, 0.3], std: 0.25}\n"
      "    test:\n"
      "      - center_crop: {size: [28, 30]}\n");
  auto train = split_transforms(r.data, true);
  auto test = split_transforms(r.data, false);
  EXPECT_EQ(train.describe(),
            "random_crop(size=32, padding=4) -> horizontal_flip(p=0.5) -> horizontal_flip(p=0.5) -> cutout(size=8) -> "
            "normalize(mean=[0.5, 0.4, 0.3], std=[0.25])");
  EXPECT_EQ(test.describe(), "center_crop(size=[28, 30])");
  EXPECT_EQ(train.output_shape({3, 32, 32}), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(test.output_shape({1, 28, 28}), (std::vector<int64_t>{1, 28, 30}));
}

TEST(TransformParse, AbsentOrEmptyGivesEmptyPipeline) {
  Recipe none("    test: []\n");
  EXPECT_TRUE(split_transforms(none.data, true).empty());
  EXPECT_TRUE(split_transforms(none.data, false).empty());
  EXPECT_EQ(split_transforms(none.data, false).describe(), "none");
  auto tree = read_yaml_string("name: mnist\n", "d.yaml");
  EXPECT_TRUE(split_transforms(ConfigNode(tree, "data"), true).empty());
  EXPECT_TRUE(split_transforms(ConfigNode(), true).empty());
  EXPECT_TRUE(parse_transforms(ConfigNode()).empty());
}

TEST(TransformParse, ErrorsNameFileLineAndKey) {
  struct Case {
    std::string items;
    std::string where;    // ":line:" after the file name
    std::string message;  // key path and message
  };
  const std::vector<Case> cases = {
      {"      - horizontal_flip\n      - random_crp: {size: 32}\n", ":6:",
       "data.transforms.train[1]: unknown transform 'random_crp' (did you mean 'random_crop'?); registered: "
       "center_crop, cutout, horizontal_flip, normalize, random_crop, random_resized_crop, resize"},
      {"      - random_crop: {size: 32, paddin: 4}\n", ":5:",
       "data.transforms.train[0].random_crop.paddin: unknown key 'paddin' (did you mean 'padding'?)"},
      {"      - random_crop: {size: big}\n", ":5:",
       "data.transforms.train[0].random_crop.size: expected an integer (got 'big')"},
      {"      - random_crop: {size: [32, 32, 3]}\n", ":5:",
       "data.transforms.train[0].random_crop.size: must be one positive int or [height, width] (got [32, 32, 3])"},
      {"      - random_crop: {size: 32, padding: -1}\n", ":5:",
       "data.transforms.train[0].random_crop.padding: must be >= 0 (got -1)"},
      {"      - random_crop: {padding: 4}\n", ":5:",
       "data.transforms.train[0].random_crop: missing required option 'size' of random_crop"},
      {"      - horizontal_flip\n      - random_crop\n", ":6:",
       "data.transforms.train[1].random_crop: missing required option 'size' of random_crop"},
      {"      - horizontal_flip: {p: 1.5}\n", ":5:",
       "data.transforms.train[0].horizontal_flip.p: must be in [0, 1] (got 1.5)"},
      {"      - horizontal_flip: 0.5\n", ":5:", "data.transforms.train[0].horizontal_flip: expected a map of options"},
      {"      - random_crop:\n          size: 32\n        horizontal_flip: {}\n", ":5:",
       "data.transforms.train[0]: expected one transform per list item, `- name: {options}` (got 2 keys: "
       "random_crop, horizontal_flip)"},
      {"      - [random_crop]\n", ":5:", "data.transforms.train[0]: expected a transform name or `name: {options}`"},
      {"      - normalize: {mean: [0.5, 0.5], std: [0.5, 0]}\n", ":5:",
       "data.transforms.train[0].normalize.std: every value must be positive and finite (got [0.5, 0])"},
      {"      - normalize: {mean: [0.5, 0.5], std: [0.5, 0.5, 0.5]}\n", ":5:",
       "data.transforms.train[0].normalize.std: has 3 values but mean has 2"},
      {"      - normalize: {std: 0.5}\n", ":5:",
       "data.transforms.train[0].normalize: missing required option 'mean' of normalize"},
      {"      - random_resized_crop: {size: 224, scale: [0.5, 0.1]}\n", ":5:",
       "data.transforms.train[0].random_resized_crop.scale: must be [min, max] with 0 < min <= max <= 1 (got "
       "[0.5, 0.1])"},
      {"      - random_resized_crop: {size: 224, ratio: [0.75]}\n", ":5:",
       "data.transforms.train[0].random_resized_crop.ratio: must be [min, max] with 0 < min <= max (got [0.75])"},
      {"      - cutout: {size: 0}\n", ":5:", "data.transforms.train[0].cutout.size: must be >= 1 (got 0)"},
  };
  for (const auto& c : cases) {
    auto r = train_list(c.items);
    const auto msg = r.train_error();
    EXPECT_TRUE(contains(msg, r.path + c.where)) << c.items << "\n -> " << msg;
    EXPECT_TRUE(contains(msg, c.message)) << c.items << "\n -> " << msg;
  }
}

TEST(TransformParse, BadListAndSectionShapes) {
  {
    Recipe r("    train: random_crop\n");
    const auto msg = r.train_error();
    EXPECT_TRUE(contains(msg, r.path + ":4:")) << msg;
    EXPECT_TRUE(contains(msg, "data.transforms.train: expected a list of transforms")) << msg;
  }
  {
    Recipe r("    train: {random_crop: {size: 32}}\n");
    EXPECT_TRUE(contains(r.train_error(), "data.transforms.train: expected a list of transforms")) << r.train_error();
  }
  {
    Recipe r("    train: []\n    valid: []\n");
    const auto msg = r.train_error();
    EXPECT_TRUE(contains(msg, r.path + ":5:")) << msg;
    EXPECT_TRUE(contains(msg, "data.transforms.valid: unknown key 'valid'")) << msg;
  }
  {
    Recipe r("    - random_crop: {size: 32}\n");
    const auto msg = r.train_error();
    EXPECT_TRUE(contains(msg, "data.transforms: expected a map with keys 'train' and 'test'")) << msg;
  }
}

TEST(TransformParse, CxxConstructorsValidate) {
  EXPECT_TRUE(contains(user_error_of([] { make_random_crop({}); }), "random_crop: size: must be one positive int"));
  NormalizeOptions n;
  n.mean = {0.5};
  n.std = {-1};
  EXPECT_TRUE(contains(user_error_of([&] { make_normalize(n); }), "normalize: std: every value must be positive"));
  RandomCropOptions c;
  c.size = {32};
  c.padding = 4;
  EXPECT_EQ(make_random_crop(c)->describe(), "random_crop(size=32, padding=4)");
}

// ---------------------------------------------------------------------------------------------
// Each transform against its reference

TEST(TransformRandomCrop, MatchesReferenceWithTheSameDraws) {
  auto image = test_image(3, 10, 12);
  RandomCropOptions o;
  o.size = {8, 14};
  o.padding = 3;
  o.fill = -0.5;
  auto t = make_random_crop(o);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng a(seed), b(seed);
    auto out = t->apply(image, a);
    const int64_t top = b.integer(0, 10 + 6 - 8), left = b.integer(0, 12 + 6 - 14);
    EXPECT_TRUE(torch::equal(out, ref_pad_crop(image, 3, -0.5f, top, left, 8, 14))) << seed;
  }
  EXPECT_EQ(t->output_shape({3, 10, 12}), (std::vector<int64_t>{3, 8, 14}));
  EXPECT_EQ(t->output_shape({}), std::vector<int64_t>{});
  EXPECT_EQ(t->describe(), "random_crop(size=[8, 14], padding=3, fill=-0.5)");
}

TEST(TransformRandomCrop, CoversEveryOffsetUniformly) {
  auto image = test_image(1, 4, 4);
  auto t = one("random_crop: {size: 4, padding: 2}");
  std::vector<torch::Tensor> candidates;  // the 25 possible crops, by offset
  for (int64_t top = 0; top <= 4; ++top)
    for (int64_t left = 0; left <= 4; ++left) candidates.push_back(ref_pad_crop(image, 2, 0, top, left, 4, 4));
  std::vector<int> counts(candidates.size(), 0);
  const int draws = 2500;
  for (int i = 0; i < draws; ++i) {
    auto rng = Rng::for_item(3, 0, i);
    auto out = t->apply(image, rng);
    int found = -1;
    for (size_t k = 0; k < candidates.size(); ++k)
      if (torch::equal(out, candidates[k])) found = static_cast<int>(k);
    ASSERT_GE(found, 0) << "draw " << i << " is not one of the valid crops";
    ++counts[found];
  }
  for (size_t k = 0; k < counts.size(); ++k) {  // expected 100 each; sd ~10
    EXPECT_GT(counts[k], 55) << "offset " << k / 5 << "," << k % 5;
    EXPECT_LT(counts[k], 145) << "offset " << k / 5 << "," << k % 5;
  }
}

TEST(TransformRandomCrop, TooLargeCropIsAClearError) {
  auto t = one("random_crop: {size: 32, padding: 1}");
  Rng rng(0);
  const auto msg = user_error_of([&] { t->apply(test_image(1, 28, 28), rng); });
  EXPECT_TRUE(contains(msg, "random_crop(size=32, padding=1): the crop 32x32 is larger than the padded image 30x30"))
      << msg;
  EXPECT_TRUE(contains(user_error_of([&] { t->output_shape({1, 28, 28}); }), "larger than the padded image"));
  EXPECT_TRUE(contains(user_error_of([&] { t->apply(torch::zeros({28, 28}), rng); }),
                       "random_crop: expects an image [C, H, W], got shape 28x28"));
}

TEST(TransformHorizontalFlip, FlipsAboutHalfAndMatchesReference) {
  auto image = test_image(2, 3, 5);
  auto flipped = torch::empty_like(image);
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t x = 0; x < 5; ++x) flipped[k][y][x] = image[k][y][4 - x];
  auto t = one("horizontal_flip");
  const auto original = image.clone();
  int flips = 0;
  const int draws = 2000;
  for (int i = 0; i < draws; ++i) {
    auto rng = Rng::for_item(1, 2, i);
    auto out = t->apply(image, rng);
    if (torch::equal(out, flipped)) {
      ++flips;
    } else {
      ASSERT_TRUE(torch::equal(out, image));
    }
  }
  EXPECT_GT(flips, 900);  // binomial(2000, 0.5): sd 22
  EXPECT_LT(flips, 1100);
  EXPECT_TRUE(torch::equal(image, original)) << "the input must not be modified";
  Rng rng(0);
  EXPECT_TRUE(torch::equal(one("horizontal_flip: {p: 1}")->apply(image, rng), flipped));
  EXPECT_TRUE(torch::equal(one("horizontal_flip: {p: 0}")->apply(image, rng), image));
}

TEST(TransformRandomResizedCrop, BoxMatchesTorchvisionAlgorithm) {
  for (auto hw : {std::pair<int64_t, int64_t>{64, 64}, {30, 90}, {90, 30}, {7, 5}}) {
    for (uint64_t seed = 0; seed < 200; ++seed) {
      Rng a(seed), b(seed);
      auto box = detail::random_resized_crop_box(hw.first, hw.second, {0.08, 1.0}, {0.75, 4.0 / 3.0}, a);
      auto ref = ref_rrc_box(hw.first, hw.second, 0.08, 1.0, 0.75, 4.0 / 3.0, b);
      ASSERT_EQ(std::vector<int64_t>({box.top, box.left, box.height, box.width}),
                std::vector<int64_t>({ref.top, ref.left, ref.height, ref.width}))
          << hw.first << "x" << hw.second << " seed " << seed;
    }
  }
}

TEST(TransformRandomResizedCrop, BoxRespectsScaleAndRatioBounds) {
  const int64_t H = 48, W = 64;
  const double s0 = 0.25, s1 = 0.6, r0 = 0.5, r1 = 2.0;
  std::set<std::vector<int64_t>> distinct;
  for (uint64_t seed = 0; seed < 500; ++seed) {
    Rng rng(seed);
    auto b = detail::random_resized_crop_box(H, W, {s0, s1}, {r0, r1}, rng);
    distinct.insert({b.top, b.left, b.height, b.width});
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, H);
    ASSERT_LE(b.left + b.width, W);
    // Sides are rounded to whole pixels: some real w', h' within 0.5 of them meet the bounds.
    const double h = static_cast<double>(b.height), w = static_cast<double>(b.width);
    EXPECT_GE((w + 0.5) * (h + 0.5), s0 * H * W) << seed;
    EXPECT_LE((w - 0.5) * (h - 0.5), s1 * H * W) << seed;
    EXPECT_GE((w + 0.5) / (h - 0.5), r0) << seed;
    EXPECT_LE((w - 0.5) / (h + 0.5), r1) << seed;
  }
  EXPECT_GT(distinct.size(), 400u);
}

TEST(TransformRandomResizedCrop, FallbackIsCenterCropClampedToRatio) {
  // Area fraction 1 with a ratio of at least 2 never fits a square: the fallback takes the
  // full width and height width / 2, centered.
  Rng rng(5);
  auto b = detail::random_resized_crop_box(32, 32, {1.0, 1.0}, {2.0, 3.0}, rng);
  EXPECT_EQ(std::vector<int64_t>({b.top, b.left, b.height, b.width}), std::vector<int64_t>({8, 0, 16, 32}));
  b = detail::random_resized_crop_box(32, 32, {1.0, 1.0}, {0.25, 0.5}, rng);
  EXPECT_EQ(std::vector<int64_t>({b.top, b.left, b.height, b.width}), std::vector<int64_t>({0, 8, 32, 16}));
  b = detail::random_resized_crop_box(20, 30, {1.0, 1.0}, {1.0, 1.0}, rng);  // ratio 1.5 > 1: w = h
  EXPECT_EQ(std::vector<int64_t>({b.top, b.left, b.height, b.width}), std::vector<int64_t>({0, 5, 20, 20}));
}

TEST(TransformRandomResizedCrop, OutputIsTheBilinearResizeOfTheBox) {
  auto image = test_image(3, 64, 48);
  for (auto size : {std::vector<int64_t>{24}, std::vector<int64_t>{20, 36}, std::vector<int64_t>{96}}) {
    RandomResizedCropOptions o;
    o.size = size;
    auto t = make_random_resized_crop(o);
    const int64_t oh = size[0], ow = size.size() == 2 ? size[1] : size[0];
    for (uint64_t seed = 0; seed < 6; ++seed) {
      Rng a(seed), b(seed);
      auto out = t->apply(image, a);
      auto box = detail::random_resized_crop_box(64, 48, o.scale, o.ratio, b);
      auto window = image.slice(1, box.top, box.top + box.height).slice(2, box.left, box.left + box.width);
      expect_close(out, torch_bilinear(window, oh, ow), 1e-6, "vs interpolate, seed " + std::to_string(seed));
      expect_close(out, ref_bilinear(image, box.top, box.left, box.height, box.width, oh, ow), 2e-5,
                   "vs reference, seed " + std::to_string(seed));
    }
    EXPECT_EQ(t->output_shape({3, 64, 48}), (std::vector<int64_t>{3, oh, ow}));
  }
}

TEST(TransformResize, ShorterSideAndExplicitSizeMatchInterpolate) {
  struct Case {
    int64_t c, h, w;
    std::string yaml;
    int64_t oh, ow;
  };
  const std::vector<Case> cases = {
      {3, 20, 30, "resize: {size: 10}", 10, 15},       // landscape: h is the shorter side
      {1, 30, 20, "resize: {size: 7}", 10, 7},         // int(7 * 30 / 20) = int(10.5) = 10
      {3, 20, 30, "resize: {size: 33}", 33, 49},       // int(33 * 30 / 20) = int(49.5) = 49; upscale
      {2, 17, 17, "resize: {size: 40}", 40, 40},
      {3, 20, 30, "resize: {size: [37, 11]}", 37, 11},
  };
  for (const auto& c : cases) {
    auto image = test_image(c.c, c.h, c.w, 9);
    auto t = one(c.yaml);
    Rng rng(0);
    auto out = t->apply(image, rng);
    ASSERT_EQ(shape_of(out), (std::vector<int64_t>{c.c, c.oh, c.ow})) << c.yaml;
    EXPECT_EQ(t->output_shape({c.c, c.h, c.w}), shape_of(out)) << c.yaml;
    expect_close(out, torch_bilinear(image, c.oh, c.ow), 1e-6, c.yaml + " vs interpolate");
    expect_close(out, ref_bilinear(image, 0, 0, c.h, c.w, c.oh, c.ow), 2e-5, c.yaml + " vs reference");
  }
  Rng rng(0);
  auto same = test_image(3, 8, 12);
  EXPECT_TRUE(torch::equal(one("resize: {size: 8}")->apply(same, rng), same));
  EXPECT_EQ(one("resize: {size: 8}")->output_shape({}), std::vector<int64_t>{});
  EXPECT_EQ(one("resize: {size: [8, 9]}")->output_shape({}), std::vector<int64_t>{});
  EXPECT_EQ(one("resize: {size: 8}")->describe(), "resize(size=8)");
}

TEST(TransformCenterCrop, MatchesTorchvisionRounding) {
  // torchvision: smaller images are padded by (crop - in) // 2 before; then the offset is
  // int(round((in - crop) / 2.0)) with Python's half-to-even round.
  auto ref = [](const torch::Tensor& image, int64_t h, int64_t w) {
    const int64_t H = image.size(1), W = image.size(2);
    const int64_t pad_top = h > H ? (h - H) / 2 : 0, pad_left = w > W ? (w - W) / 2 : 0;
    const int64_t ph = std::max(H, h), pw = std::max(W, w);
    const int64_t top = py_round((ph - h) / 2.0), left = py_round((pw - w) / 2.0);
    // Crop of the padded image at (top, left) = window of the original at (top - pad_top, left - pad_left).
    auto out = torch::zeros({image.size(0), h, w});
    auto src = image.accessor<float, 3>();
    auto dst = out.accessor<float, 3>();
    for (int64_t k = 0; k < image.size(0); ++k)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const int64_t sy = top + y - pad_top, sx = left + x - pad_left;
          if (sy >= 0 && sy < H && sx >= 0 && sx < W) dst[k][y][x] = src[k][sy][sx];
        }
    return out;
  };
  Rng rng(0);
  for (auto in : {std::pair<int64_t, int64_t>{5, 7}, {7, 5}, {8, 8}, {9, 4}, {3, 3}, {10, 13}}) {
    auto image = test_image(2, in.first, in.second);
    for (auto size : {std::pair<int64_t, int64_t>{2, 2}, {4, 6}, {8, 8}, {3, 11}, {12, 5}}) {
      CenterCropOptions o;
      o.size = {size.first, size.second};
      auto t = make_center_crop(o);
      auto out = t->apply(image, rng);
      EXPECT_TRUE(torch::equal(out, ref(image, size.first, size.second)))
          << in.first << "x" << in.second << " -> " << size.first << "x" << size.second;
      EXPECT_EQ(t->output_shape({2, in.first, in.second}), shape_of(out));
    }
  }
  // (5 - 2) / 2 = 1.5 rounds to 2; (7 - 2) / 2 = 2.5 rounds to 2.
  auto image = test_image(1, 5, 7);
  auto out = one("center_crop: {size: 2}")->apply(image, rng);
  EXPECT_TRUE(torch::equal(out, image.slice(1, 2, 4).slice(2, 2, 4)));
}

TEST(TransformNormalize, PerChannelAndBroadcast) {
  auto image = test_image(3, 4, 5);
  auto ref = [&](std::vector<float> mean, std::vector<float> std) {
    auto out = torch::empty_like(image);
    for (int64_t k = 0; k < 3; ++k)
      for (int64_t y = 0; y < 4; ++y)
        for (int64_t x = 0; x < 5; ++x) {
          const float m = mean.size() == 1 ? mean[0] : mean[k], s = std.size() == 1 ? std[0] : std[k];
          out[k][y][x] = (image[k][y][x].item<float>() - m) / s;
        }
    return out;
  };
  Rng rng(0);
  auto t = one("normalize: {mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.243, 0.261]}");
  // The transform multiplies by 1 / std: within a few ulps of dividing (values here are below 10).
  expect_close(t->apply(image, rng), ref({0.4914f, 0.4822f, 0.4465f}, {0.247f, 0.243f, 0.261f}), 2e-6, "per channel");
  expect_close(one("normalize: {mean: 0.5, std: [0.1, 0.2, 0.3]}")->apply(image, rng), ref({0.5f}, {0.1f, 0.2f, 0.3f}),
               2e-6, "one mean for all channels");
  expect_close(one("normalize: {mean: [0.1, 0.2, 0.3], std: 0.5}")->apply(image, rng), ref({0.1f, 0.2f, 0.3f}, {0.5f}),
               2e-6, "one std for all channels");
  EXPECT_EQ(t->output_shape({3, 4, 5}), (std::vector<int64_t>{3, 4, 5}));

  const auto msg = user_error_of([&] { t->apply(test_image(1, 4, 4), rng); });
  EXPECT_TRUE(contains(msg, "normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.243, 0.261]): mean has 3 "
                            "values but the image has 1 channel"))
      << msg;
  EXPECT_TRUE(contains(user_error_of([&] { t->output_shape({1, 28, 28}); }), "but the image has 1 channel"));
}

TEST(TransformCutout, SquareSizeAndClipping) {
  const int64_t H = 10, W = 12;
  auto image = torch::ones({2, H, W});
  for (int64_t size : {4, 5}) {
    CutoutOptions o;
    o.size = size;
    o.fill = -1;
    auto t = make_cutout(o);
    int full = 0, clipped = 0;
    for (uint64_t seed = 0; seed < 300; ++seed) {
      Rng a(seed), b(seed);
      auto out = t->apply(image, a);
      ASSERT_TRUE(b.bernoulli(1.0));
      const int64_t cy = b.integer(0, H - 1), cx = b.integer(0, W - 1);
      auto ref = image.clone();
      int64_t cells = 0;
      for (int64_t y = cy - size / 2; y < cy - size / 2 + size; ++y)
        for (int64_t x = cx - size / 2; x < cx - size / 2 + size; ++x)
          if (y >= 0 && y < H && x >= 0 && x < W) {
            ref.select(1, y).select(1, x).fill_(-1);
            ++cells;
          }
      ASSERT_TRUE(torch::equal(out, ref)) << "size " << size << " seed " << seed;
      EXPECT_EQ((out[0] == -1).sum().item<int64_t>(), cells);
      EXPECT_TRUE(torch::equal(out[0], out[1])) << "the same square in every channel";
      (cells == size * size ? full : clipped) += 1;
    }
    EXPECT_GT(full, 50) << size;
    EXPECT_GT(clipped, 50) << size;
  }
  EXPECT_TRUE(torch::equal(image, torch::ones({2, H, W}))) << "the input must not be modified";
  Rng rng(0);
  EXPECT_TRUE(torch::equal(one("cutout: {size: 3, p: 0}")->apply(image, rng), image));
  // A square larger than the image covers all of it.
  EXPECT_EQ((one("cutout: {size: 40}")->apply(image, rng) == 0).sum().item<int64_t>(), 2 * H * W);
}

// ---------------------------------------------------------------------------------------------
// Pipelines

TEST(TransformPipeline, ReproducibleForASeedAndDifferentAcrossSeeds) {
  auto tree = read_yaml_string(
      "- random_resized_crop: {size: 20, scale: [0.3, 1.0]}\n"
      "- random_crop: {size: 20, padding: 2}\n"
      "- horizontal_flip\n"
      "- cutout: {size: 6, p: 0.5}\n"
      "- normalize: {mean: 0.5, std: 0.25}\n",
      "p.yaml");
  auto pipeline = parse_transforms(ConfigNode(tree, "transforms"));
  auto image = test_image(3, 32, 32);
  std::vector<torch::Tensor> outs;
  for (uint64_t i = 0; i < 8; ++i) {
    auto r1 = Rng::for_item(42, 1, i), r2 = Rng::for_item(42, 1, i);
    auto a = pipeline.apply(image, r1), b = pipeline.apply(image, r2);
    ASSERT_TRUE(torch::equal(a, b)) << i;
    EXPECT_EQ(shape_of(a), (std::vector<int64_t>{3, 20, 20}));
    outs.push_back(a);
  }
  for (size_t i = 0; i < outs.size(); ++i)
    for (size_t j = i + 1; j < outs.size(); ++j) EXPECT_FALSE(torch::equal(outs[i], outs[j])) << i << " " << j;
  auto other_seed = Rng::for_item(43, 1, 0);
  EXPECT_FALSE(torch::equal(pipeline.apply(image, other_seed), outs[0]));
}

TEST(TransformPipeline, OutputShapeAgreesWithApply) {
  auto tree = read_yaml_string(
      "- resize: {size: 40}\n"
      "- center_crop: {size: 36}\n"
      "- random_crop: {size: [30, 32], padding: 1}\n"
      "- horizontal_flip\n"
      "- normalize: {mean: [0.5, 0.5, 0.5], std: 0.5}\n"
      "- cutout: {size: 8}\n",
      "p.yaml");
  auto pipeline = parse_transforms(ConfigNode(tree, "transforms"));
  for (auto shape : {std::vector<int64_t>{3, 50, 80}, std::vector<int64_t>{3, 64, 48}, std::vector<int64_t>{3, 20, 20}}) {
    Rng rng(1);
    auto out = pipeline.apply(test_image(shape[0], shape[1], shape[2]), rng);
    EXPECT_EQ(pipeline.output_shape(shape), shape_of(out));
    EXPECT_EQ(pipeline.output_shape(shape), (std::vector<int64_t>{3, 30, 32}));
  }
  // An unknown input shape stays unknown (the channel count is unknown).
  EXPECT_EQ(pipeline.output_shape({}), std::vector<int64_t>{});
  EXPECT_EQ(TransformPipeline().output_shape({1, 28, 28}), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(pipeline.describe(),
            "resize(size=40) -> center_crop(size=36) -> random_crop(size=[30, 32], padding=1) -> "
            "horizontal_flip(p=0.5) -> normalize(mean=[0.5, 0.5, 0.5], std=[0.5]) -> cutout(size=8)");
}

}  // namespace
}  // namespace shrink
