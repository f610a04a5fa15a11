// The built-in transforms. Each runs per example in a loader thread, so the kernels are plain
// loops over raw float pointers (no threads, no at::parallel_for, few tensor ops): one output
// allocation per step, and steps that change nothing return their input.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>

#include "shrink/data/transforms.h"

namespace shrink {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s.empty() ? "(empty)" : s;
}

std::string shape_text(const torch::Tensor& t) {
  auto sizes = t.sizes();
  return shape_text(std::vector<int64_t>(sizes.begin(), sizes.end()));
}

/// `image` as a contiguous float CPU tensor [C, H, W]; `who` names the transform in errors.
torch::Tensor as_image(const torch::Tensor& image, const std::string& who) {
  if (!image.defined() || image.dim() != 3)
    throw UserError(who + ": expects an image [C, H, W], got shape " +
                    (image.defined() ? shape_text(image) : std::string("(undefined)")));
  TORCH_CHECK(image.device().is_cpu(), who, ": images must be on the CPU, got ", image.device());
  if (image.scalar_type() != torch::kFloat) return image.to(torch::kFloat).contiguous();
  return image.contiguous();
}

/// Checks an input shape for output_shape(); false when it is unknown ({}).
bool known_image_shape(const std::vector<int64_t>& input, const std::string& who) {
  if (input.empty()) return false;
  if (input.size() != 3) throw UserError(who + ": expects images [C, H, W], got shape " + shape_text(input));
  return true;
}

std::string size_text(int64_t h, int64_t w) {
  return h == w ? std::to_string(h) : "[" + std::to_string(h) + ", " + std::to_string(w) + "]";
}

int64_t size_h(const std::vector<int64_t>& size) { return size.at(0); }
int64_t size_w(const std::vector<int64_t>& size) { return size.size() == 2 ? size[1] : size.at(0); }

/// A bad option value: which option and why.
struct Problem {
  std::string key, message;
};
using Check = std::optional<Problem>;

Check check_size(const std::vector<int64_t>& size) {
  bool ok = size.size() == 1 || size.size() == 2;
  for (int64_t v : size) ok = ok && v >= 1;
  if (ok) return std::nullopt;
  return Problem{"size", "must be one positive int or [height, width] (got " + detail::format_value(size) + ")"};
}

Check check_pair(const std::vector<double>& v, const std::string& key, double upper) {
  if (v.size() == 2 && v[0] > 0 && v[0] <= v[1] && v[1] <= upper) return std::nullopt;
  std::string bound = std::isinf(upper) ? "" : " <= " + detail::format_value(upper);
  return Problem{key, "must be [min, max] with 0 < min <= max" + bound + " (got " + detail::format_value(v) + ")"};
}

Check check(const RandomCropOptions& o) {
  if (auto p = check_size(o.size)) return p;
  if (o.padding < 0) return Problem{"padding", "must be >= 0 (got " + std::to_string(o.padding) + ")"};
  return std::nullopt;
}
Check check(const HorizontalFlipOptions& o) {
  if (!(o.p >= 0 && o.p <= 1)) return Problem{"p", "must be in [0, 1] (got " + detail::format_value(o.p) + ")"};
  return std::nullopt;
}
Check check(const RandomResizedCropOptions& o) {
  if (auto p = check_size(o.size)) return p;
  if (auto p = check_pair(o.scale, "scale", 1.0)) return p;
  if (auto p = check_pair(o.ratio, "ratio", std::numeric_limits<double>::infinity())) return p;
  if (!std::isfinite(o.ratio[1])) return Problem{"ratio", "must be finite (got " + detail::format_value(o.ratio) + ")"};
  return std::nullopt;
}
Check check(const ResizeOptions& o) { return check_size(o.size); }
Check check(const CenterCropOptions& o) { return check_size(o.size); }
Check check(const NormalizeOptions& o) {
  if (o.mean.empty()) return Problem{"mean", "must hold one value, or one per channel (got [])"};
  if (o.std.empty()) return Problem{"std", "must hold one value, or one per channel (got [])"};
  for (double s : o.std)
    if (!(s > 0) || !std::isfinite(s))
      return Problem{"std", "every value must be positive and finite (got " + detail::format_value(o.std) + ")"};
  for (double m : o.mean)
    if (!std::isfinite(m)) return Problem{"mean", "every value must be finite (got " + detail::format_value(o.mean) + ")"};
  if (o.mean.size() > 1 && o.std.size() > 1 && o.mean.size() != o.std.size())
    return Problem{"std", "has " + std::to_string(o.std.size()) + " values but mean has " +
                              std::to_string(o.mean.size()) + "; give one per channel, or one for all"};
  return std::nullopt;
}
Check check(const CutoutOptions& o) {
  if (o.size < 1) return Problem{"size", "must be >= 1 (got " + std::to_string(o.size) + ")"};
  if (!(o.p >= 0 && o.p <= 1)) return Problem{"p", "must be in [0, 1] (got " + detail::format_value(o.p) + ")"};
  return std::nullopt;
}

/// For the C++ constructors: a UserError naming the transform and the option.
template <class O>
void throw_if_invalid(const char* name, const O& options) {
  if (auto p = check(options)) throw UserError(std::string(name) + ": " + p->key + ": " + p->message);
}

void fill_floats(float* p, int64_t n, float value) { std::fill(p, p + n, value); }

// ---------------------------------------------------------------------------------------------

class RandomCrop : public Transform {
 public:
  explicit RandomCrop(RandomCropOptions o) : o_(std::move(o)), h_(size_h(o_.size)), w_(size_w(o_.size)) {}

  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override {
    auto img = as_image(image, "random_crop");
    check_fits(img.size(1), img.size(2));
    const int64_t p = o_.padding;
    const int64_t top = rng.integer(0, img.size(1) + 2 * p - h_);
    const int64_t left = rng.integer(0, img.size(2) + 2 * p - w_);
    return detail::crop(img, {top - p, left - p, h_, w_}, o_.fill);
  }

  std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const override {
    if (!known_image_shape(input, "random_crop")) return {};
    check_fits(input[1], input[2]);
    return {input[0], h_, w_};
  }

  std::string describe() const override {
    std::string s = "random_crop(size=" + size_text(h_, w_);
    if (o_.padding) s += ", padding=" + std::to_string(o_.padding);
    if (o_.fill != 0) s += ", fill=" + detail::format_value(o_.fill);
    return s + ")";
  }

 private:
  void check_fits(int64_t height, int64_t width) const {
    const int64_t ph = height + 2 * o_.padding, pw = width + 2 * o_.padding;
    if (ph < h_ || pw < w_)
      throw UserError(describe() + ": the crop " + std::to_string(h_) + "x" + std::to_string(w_) +
                      " is larger than the padded image " + std::to_string(ph) + "x" + std::to_string(pw) +
                      " (image " + std::to_string(height) + "x" + std::to_string(width) + ")");
  }

  RandomCropOptions o_;
  int64_t h_, w_;
};

class HorizontalFlip : public Transform {
 public:
  explicit HorizontalFlip(HorizontalFlipOptions o) : o_(o) {}

  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override {
    auto img = as_image(image, "horizontal_flip");
    if (!rng.bernoulli(o_.p)) return img;
    const int64_t rows = img.size(0) * img.size(1), w = img.size(2);
    auto out = torch::empty_like(img);
    const float* src = img.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = src + r * w;
      float* d = dst + r * w;
      for (int64_t x = 0; x < w; ++x) d[x] = s[w - 1 - x];
    }
    return out;
  }

  std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const override {
    known_image_shape(input, "horizontal_flip");
    return input;
  }

  std::string describe() const override { return "horizontal_flip(p=" + detail::format_value(o_.p) + ")"; }

 private:
  HorizontalFlipOptions o_;
};

class RandomResizedCrop : public Transform {
 public:
  explicit RandomResizedCrop(RandomResizedCropOptions o)
      : o_(std::move(o)), h_(size_h(o_.size)), w_(size_w(o_.size)) {}

  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override {
    auto img = as_image(image, "random_resized_crop");
    if (img.size(1) == 0 || img.size(2) == 0)
      throw UserError(describe() + ": the image is empty (" + shape_text(img) + ")");
    const auto box = detail::random_resized_crop_box(img.size(1), img.size(2), o_.scale, o_.ratio, rng);
    return detail::resize_bilinear(img, box, h_, w_);
  }

  std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const override {
    if (!known_image_shape(input, "random_resized_crop")) return {};
    return {input[0], h_, w_};
  }

  std::string describe() const override {
    const RandomResizedCropOptions defaults;
    std::string s = "random_resized_crop(size=" + size_text(h_, w_);
    if (o_.scale != defaults.scale) s += ", scale=" + detail::format_value(o_.scale);
    if (o_.ratio != defaults.ratio) s += ", ratio=" + detail::format_value(o_.ratio);
    return s + ")";
  }

 private:
  RandomResizedCropOptions o_;
  int64_t h_, w_;
};

class Resize : public Transform {
 public:
  explicit Resize(ResizeOptions o) : o_(std::move(o)) {}

  torch::Tensor apply(const torch::Tensor& image, Rng&) const override {
    auto img = as_image(image, "resize");
    const int64_t h = img.size(1), w = img.size(2);
    if (h == 0 || w == 0) throw UserError(describe() + ": the image is empty (" + shape_text(img) + ")");
    const auto out = detail::resize_output_size(h, w, o_.size);
    if (out.first == h && out.second == w) return img;
    return detail::resize_bilinear(img, {0, 0, h, w}, out.first, out.second);
  }

  std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const override {
    if (!known_image_shape(input, "resize")) return {};
    const auto out = detail::resize_output_size(input[1], input[2], o_.size);
    return {input[0], out.first, out.second};
  }

  std::string describe() const override {
    return "resize(size=" + (o_.size.size() == 2 ? detail::format_value(o_.size) : std::to_string(o_.size[0])) + ")";
  }

 private:
  ResizeOptions o_;
};

class CenterCrop : public Transform {
 public:
  explicit CenterCrop(CenterCropOptions o) : o_(std::move(o)), h_(size_h(o_.size)), w_(size_w(o_.size)) {}

  torch::Tensor apply(const torch::Tensor& image, Rng&) const override {
    auto img = as_image(image, "center_crop");
    const int64_t height = img.size(1), width = img.size(2);
    if (height == h_ && width == w_) return img;
    return detail::crop(img, {offset(height, h_), offset(width, w_), h_, w_}, 0.0);
  }

  std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const override {
    if (!known_image_shape(input, "center_crop")) return {};
    return {input[0], h_, w_};
  }

  std::string describe() const override { return "center_crop(size=" + size_text(h_, w_) + ")"; }

 private:
  /// torchvision: pad (crop - in) // 2 before when the crop is larger, else int(round((in - crop) / 2.0)).
  static int64_t offset(int64_t in, int64_t crop) {
    if (crop > in) return -((crop - in) / 2);
    return static_cast<int64_t>(std::nearbyint((in - crop) / 2.0));  // half to even, as Python's round
  }

  CenterCropOptions o_;
  int64_t h_, w_;
};

class Normalize : public Transform {
 public:
  explicit Normalize(NormalizeOptions o) : o_(std::move(o)) {}

  torch::Tensor apply(const torch::Tensor& image, Rng&) const override {
    auto img = as_image(image, "normalize");
    const int64_t c = img.size(0), n = img.size(1) * img.size(2);
    check_channels(c);
    auto out = torch::empty_like(img);
    const float* src = img.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    for (int64_t k = 0; k < c; ++k) {
      // Multiplying by 1 / std is several times faster than dividing (division bound at 224x224)
      // and differs from torchvision's sub_(mean).div_(std) by at most an ulp or two.
      const float m = static_cast<float>(o_.mean[o_.mean.size() == 1 ? 0 : k]);
      const float inv = static_cast<float>(1.0 / o_.std[o_.std.size() == 1 ? 0 : k]);
      const float* a = src + k * n;
      float* b = dst + k * n;
      for (int64_t i = 0; i < n; ++i) b[i] = (a[i] - m) * inv;
    }
    return out;
  }

  std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const override {
    if (known_image_shape(input, "normalize")) check_channels(input[0]);
    return input;
  }

  std::string describe() const override {
    return "normalize(mean=" + detail::format_value(o_.mean) + ", std=" + detail::format_value(o_.std) + ")";
  }

 private:
  void check_channels(int64_t c) const {
    for (const auto* v : {&o_.mean, &o_.std})
      if (v->size() != 1 && static_cast<int64_t>(v->size()) != c)
        throw UserError(describe() + ": " + (v == &o_.mean ? "mean" : "std") + " has " +
                        std::to_string(v->size()) + " values but the image has " + std::to_string(c) +
                        (c == 1 ? " channel" : " channels") + "; give one value per channel, or one for all");
  }

  NormalizeOptions o_;
};

class Cutout : public Transform {
 public:
  explicit Cutout(CutoutOptions o) : o_(o) {}

  torch::Tensor apply(const torch::Tensor& image, Rng& rng) const override {
    auto img = as_image(image, "cutout");
    const int64_t c = img.size(0), h = img.size(1), w = img.size(2);
    if (!rng.bernoulli(o_.p) || h == 0 || w == 0) return img;
    const int64_t cy = rng.integer(0, h - 1), cx = rng.integer(0, w - 1);
    const int64_t y0 = std::max<int64_t>(cy - o_.size / 2, 0), y1 = std::min(cy - o_.size / 2 + o_.size, h);
    const int64_t x0 = std::max<int64_t>(cx - o_.size / 2, 0), x1 = std::min(cx - o_.size / 2 + o_.size, w);
    auto out = img.clone();
    float* dst = out.data_ptr<float>();
    const float fill = static_cast<float>(o_.fill);
    for (int64_t k = 0; k < c; ++k)
      for (int64_t y = y0; y < y1; ++y) fill_floats(dst + (k * h + y) * w + x0, x1 - x0, fill);
    return out;
  }

  std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const override {
    known_image_shape(input, "cutout");
    return input;
  }

  std::string describe() const override {
    std::string s = "cutout(size=" + std::to_string(o_.size);
    if (o_.p != 1) s += ", p=" + detail::format_value(o_.p);
    if (o_.fill != 0) s += ", fill=" + detail::format_value(o_.fill);
    return s + ")";
  }

 private:
  CutoutOptions o_;
};

// ---------------------------------------------------------------------------------------------
// Registration

/// A factory that parses O from the recipe, points errors at the option, and builds with `make`.
template <class O>
TransformFactory factory_of(std::string name, std::vector<std::string> required, TransformPtr (*make)(const O&)) {
  return [name, required, make](const ConfigNode& node) {
    const O options = O::schema().parse(node);
    for (const auto& key : required)
      if (!node.has(key)) node.fail("missing required option '" + key + "' of " + name);
    if (auto p = check(options)) {
      if (node.has(p->key)) node[p->key].fail(p->message);
      node.fail(p->key + ": " + p->message);
    }
    return make(options);
  };
}

/// The schema's docs, with required options and the int-or-pair `size` spelled out.
template <class O>
std::vector<OptionDoc> docs_of(const std::vector<std::string>& required) {
  auto docs = O::schema().docs();
  for (auto& d : docs) {
    if (std::find(required.begin(), required.end(), d.name) != required.end()) d.default_value = "required";
    if (d.name == "size" && d.type == "list of int") d.type = "int or [height, width]";
  }
  return docs;
}

template <class O>
void add_builtin(Registry<TransformFactory>& r, const std::string& name, const std::string& description,
                 std::vector<std::string> required, TransformPtr (*make)(const O&)) {
  r.add({name, description, factory_of<O>(name, required, make), docs_of<O>(required)});
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options and constructors

OptionSchema<RandomCropOptions> RandomCropOptions::schema() {
  using O = RandomCropOptions;
  OptionSchema<O> s;
  s.add("size", &O::size, "Crop size: one int (square) or [height, width].");
  s.add("padding", &O::padding, "Pixels of `fill` added on every side before cropping.").min(0);
  s.add("fill", &O::fill, "Value of the padding pixels.");
  return s;
}
TransformPtr make_random_crop(const RandomCropOptions& options) {
  throw_if_invalid("random_crop", options);
  return std::make_shared<RandomCrop>(options);
}

OptionSchema<HorizontalFlipOptions> HorizontalFlipOptions::schema() {
  using O = HorizontalFlipOptions;
  OptionSchema<O> s;
  s.add("p", &O::p, "Probability of flipping.").range(0, 1);
  return s;
}
TransformPtr make_horizontal_flip(const HorizontalFlipOptions& options) {
  throw_if_invalid("horizontal_flip", options);
  return std::make_shared<HorizontalFlip>(options);
}

OptionSchema<RandomResizedCropOptions> RandomResizedCropOptions::schema() {
  using O = RandomResizedCropOptions;
  OptionSchema<O> s;
  s.add("size", &O::size, "Output size: one int (square) or [height, width].");
  s.add("scale", &O::scale, "[min, max] fraction of the image area kept by the crop (0 < min <= max <= 1).");
  s.add("ratio", &O::ratio, "[min, max] aspect ratio (width / height) of the crop, drawn log-uniformly.");
  return s;
}
TransformPtr make_random_resized_crop(const RandomResizedCropOptions& options) {
  throw_if_invalid("random_resized_crop", options);
  return std::make_shared<RandomResizedCrop>(options);
}

OptionSchema<ResizeOptions> ResizeOptions::schema() {
  using O = ResizeOptions;
  OptionSchema<O> s;
  s.add("size", &O::size, "One int: the shorter side (aspect ratio kept); or [height, width].");
  return s;
}
TransformPtr make_resize(const ResizeOptions& options) {
  throw_if_invalid("resize", options);
  return std::make_shared<Resize>(options);
}

OptionSchema<CenterCropOptions> CenterCropOptions::schema() {
  using O = CenterCropOptions;
  OptionSchema<O> s;
  s.add("size", &O::size, "Crop size: one int (square) or [height, width]; smaller images are zero-padded.");
  return s;
}
TransformPtr make_center_crop(const CenterCropOptions& options) {
  throw_if_invalid("center_crop", options);
  return std::make_shared<CenterCrop>(options);
}

OptionSchema<NormalizeOptions> NormalizeOptions::schema() {
  using O = NormalizeOptions;
  OptionSchema<O> s;
  s.add("mean", &O::mean, "Subtracted per channel (one value: every channel).");
  s.add("std", &O::std, "Divisor per channel (one value: every channel); each > 0.");
  return s;
}
TransformPtr make_normalize(const NormalizeOptions& options) {
  throw_if_invalid("normalize", options);
  return std::make_shared<Normalize>(options);
}

OptionSchema<CutoutOptions> CutoutOptions::schema() {
  using O = CutoutOptions;
  OptionSchema<O> s;
  s.add("size", &O::size, "Side of the square, in pixels.").min(1);
  s.add("p", &O::p, "Probability of applying it.").range(0, 1);
  s.add("fill", &O::fill, "Value written into the square.");
  return s;
}
TransformPtr make_cutout(const CutoutOptions& options) {
  throw_if_invalid("cutout", options);
  return std::make_shared<Cutout>(options);
}

namespace detail {

void register_builtin_transforms(Registry<TransformFactory>& r) {
  add_builtin<RandomCropOptions>(r, "random_crop",
                                 "Pad, then crop a window at a uniformly random position (torchvision RandomCrop).",
                                 {"size"}, &make_random_crop);
  add_builtin<HorizontalFlipOptions>(r, "horizontal_flip", "Mirror left-right with probability p.", {},
                                     &make_horizontal_flip);
  add_builtin<RandomResizedCropOptions>(
      r, "random_resized_crop",
      "Crop a random area and aspect ratio, then resize bilinearly (torchvision RandomResizedCrop).", {"size"},
      &make_random_resized_crop);
  add_builtin<ResizeOptions>(r, "resize", "Bilinear resize to [height, width], or of the shorter side to an int.",
                             {"size"}, &make_resize);
  add_builtin<CenterCropOptions>(r, "center_crop", "Crop the central window (torchvision CenterCrop).", {"size"},
                                 &make_center_crop);
  add_builtin<NormalizeOptions>(r, "normalize", "Per-channel (x - mean) / std.", {"mean", "std"}, &make_normalize);
  add_builtin<CutoutOptions>(r, "cutout", "Fill one random square (DeVries & Taylor 2017), clipped at the borders.",
                             {}, &make_cutout);
}

CropBox random_resized_crop_box(int64_t height, int64_t width, const std::vector<double>& scale,
                                const std::vector<double>& ratio, Rng& rng) {
  TORCH_CHECK(scale.size() == 2 && ratio.size() == 2, "random_resized_crop_box: scale and ratio must be pairs");
  const double area = static_cast<double>(height) * static_cast<double>(width);
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale[0], scale[1]);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    // Python's round() rounds half to even, as nearbyint in the default rounding mode.
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t top = rng.integer(0, height - h);
      const int64_t left = rng.integer(0, width - w);
      return {top, left, h, w};
    }
  }
  // Fallback: the whole image, center-cropped to the nearest allowed aspect ratio.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  const double lo = std::min(ratio[0], ratio[1]), hi = std::max(ratio[0], ratio[1]);
  int64_t w = width, h = height;
  if (in_ratio < lo) {
    h = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(w / lo)));
  } else if (in_ratio > hi) {
    w = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(h * hi)));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

torch::Tensor crop(const torch::Tensor& image, const CropBox& box, double fill) {
  auto img = as_image(image, "crop");
  TORCH_CHECK(box.height >= 0 && box.width >= 0, "crop: negative size ", box.height, "x", box.width);
  const int64_t c = img.size(0), h = img.size(1), w = img.size(2);
  auto out = torch::empty({c, box.height, box.width}, img.options());
  const float* src = img.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const float f = static_cast<float>(fill);
  // Output columns [x_begin, x_end) read inside the image; the rest are fill.
  const int64_t x_begin = std::min(std::max<int64_t>(-box.left, 0), box.width);
  const int64_t x_end = std::max(x_begin, std::min(w - box.left, box.width));
  for (int64_t k = 0; k < c; ++k) {
    for (int64_t y = 0; y < box.height; ++y) {
      float* row = dst + (k * box.height + y) * box.width;
      const int64_t sy = box.top + y;
      if (sy < 0 || sy >= h) {
        fill_floats(row, box.width, f);
        continue;
      }
      fill_floats(row, x_begin, f);
      if (x_end > x_begin)
        std::memcpy(row + x_begin, src + (k * h + sy) * w + box.left + x_begin, (x_end - x_begin) * sizeof(float));
      fill_floats(row + x_end, box.width - x_end, f);
    }
  }
  return out;
}

namespace {

/// Source taps of each output index as ATen's bilinear kernel computes them: a float scale
/// in / out, the source position scale * (d + 0.5) - 0.5 in double clamped at 0, float weights.
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<float> l0, l1;
};

Taps bilinear_taps(int64_t in_size, int64_t out_size, int64_t offset) {
  Taps t;
  t.i0.resize(out_size);
  t.i1.resize(out_size);
  t.l0.resize(out_size);
  t.l1.resize(out_size);
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  for (int64_t d = 0; d < out_size; ++d) {
    double real = static_cast<double>(scale) * (static_cast<double>(d) + 0.5) - 0.5;
    if (real < 0) real = 0;
    const auto i0 = static_cast<int64_t>(real);
    const auto l1 = static_cast<float>(real - static_cast<double>(i0));
    t.i0[d] = offset + i0;
    t.i1[d] = offset + i0 + (i0 < in_size - 1 ? 1 : 0);
    t.l1[d] = l1;
    t.l0[d] = 1.0f - l1;
  }
  return t;
}

}  // namespace

torch::Tensor resize_bilinear(const torch::Tensor& image, const CropBox& box, int64_t out_height,
                              int64_t out_width) {
  auto img = as_image(image, "resize");
  const int64_t c = img.size(0), h = img.size(1), w = img.size(2);
  TORCH_CHECK(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 && box.top + box.height <= h &&
                  box.left + box.width <= w,
              "resize_bilinear: box (top ", box.top, ", left ", box.left, ", ", box.height, "x", box.width,
              ") is not inside the image ", h, "x", w);
  TORCH_CHECK(out_height > 0 && out_width > 0, "resize_bilinear: bad output size ", out_height, "x", out_width);
  if (box.height == out_height && box.width == out_width) return crop(img, box, 0.0);  // exact identity
  const Taps ty = bilinear_taps(box.height, out_height, box.top);
  const Taps tx = bilinear_taps(box.width, out_width, box.left);
  auto out = torch::empty({c, out_height, out_width}, img.options());
  const float* src = img.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t* x0 = tx.i0.data();
  const int64_t* x1 = tx.i1.data();
  const float* wx0 = tx.l0.data();
  const float* wx1 = tx.l1.data();
  // Separable: each source row of the box is interpolated along the width once (when first
  // used), then each output row mixes two of those rows. The arithmetic is ATen's, in its
  // order (width, then height), but the second pass runs over contiguous rows and vectorizes.
  std::unique_ptr<float[]> rows(new float[static_cast<size_t>(box.height * out_width)]);  // no zero fill
  std::vector<char> ready(static_cast<size_t>(box.height));
  for (int64_t k = 0; k < c; ++k) {
    const float* plane = src + k * h * w;
    std::fill(ready.begin(), ready.end(), 0);
    auto row_of = [&](int64_t y) {  // y: source row in the image
      const int64_t r = y - box.top;
      float* hr = rows.get() + r * out_width;
      if (!ready[r]) {
        const float* in = plane + y * w;
        for (int64_t ox = 0; ox < out_width; ++ox) hr[ox] = in[x0[ox]] * wx0[ox] + in[x1[ox]] * wx1[ox];
        ready[r] = 1;
      }
      return static_cast<const float*>(hr);
    };
    for (int64_t oy = 0; oy < out_height; ++oy) {
      const float* a = row_of(ty.i0[oy]);
      const float* b = row_of(ty.i1[oy]);
      const float wy0 = ty.l0[oy], wy1 = ty.l1[oy];
      float* row = dst + (k * out_height + oy) * out_width;
      for (int64_t ox = 0; ox < out_width; ++ox) row[ox] = a[ox] * wy0 + b[ox] * wy1;
    }
  }
  return out;
}

std::pair<int64_t, int64_t> resize_output_size(int64_t height, int64_t width, const std::vector<int64_t>& size) {
  TORCH_CHECK(size.size() == 1 || size.size() == 2, "resize_output_size: size must have 1 or 2 values");
  if (size.size() == 2) return {size[0], size[1]};
  // torchvision Resize(int): the shorter side becomes `size`, the longer int(size * long / short).
  const int64_t s = size[0];
  if (height == 0 || width == 0) return {height == 0 ? 0 : s, width == 0 ? 0 : s};
  if (width <= height)
    return {static_cast<int64_t>(static_cast<double>(s * height) / static_cast<double>(width)), s};
  return {s, static_cast<int64_t>(static_cast<double>(s * width) / static_cast<double>(height))};
}

}  // namespace detail
}  // namespace shrink
