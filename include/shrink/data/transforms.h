#pragma once
// Per-example image transforms, applied by the loader in the order the recipe writes them:
//
//   data:
//     transforms:
//       train:
//         - random_crop: {size: 32, padding: 4}
//         - horizontal_flip: {p: 0.5}
//         - cutout: {size: 16}
//       test: []
//
// Each transform takes a float image [C, H, W] and a per-example generator (core/rng.h), so
// the result depends only on (seed, epoch, position in the epoch), never on the worker count.
// Built-ins: random_crop, horizontal_flip, random_resized_crop, resize, center_crop,
// normalize, cutout. Users add their own with SHRINK_REGISTER_TRANSFORM.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/core/registry.h"
#include "shrink/core/rng.h"

namespace shrink {

class Transform {
 public:
  virtual ~Transform() = default;
  /// Transforms one image float [C, H, W]; may return a new tensor or modify a private copy.
  virtual torch::Tensor apply(const torch::Tensor& image, Rng& rng) const = 0;
  /// Shape produced from an input of shape {C, H, W}; {} when the input shape is unknown and
  /// the output shape depends on it.
  virtual std::vector<int64_t> output_shape(const std::vector<int64_t>& input) const { return input; }
  /// One line, for logs: "random_crop(size=32, padding=4)".
  virtual std::string describe() const = 0;
};
using TransformPtr = std::shared_ptr<const Transform>;

/// The transforms of one split, in order.
class TransformPipeline {
 public:
  TransformPipeline() = default;
  explicit TransformPipeline(std::vector<TransformPtr> steps) : steps_(std::move(steps)) {}
  torch::Tensor apply(torch::Tensor image, Rng& rng) const;
  std::vector<int64_t> output_shape(std::vector<int64_t> input) const;
  bool empty() const { return steps_.empty(); }
  const std::vector<TransformPtr>& steps() const { return steps_; }
  std::string describe() const;  ///< "a -> b -> c", or "none"

 private:
  std::vector<TransformPtr> steps_;
};

/// Builds a transform from its options (a map, possibly empty).
using TransformFactory = std::function<TransformPtr(const ConfigNode& options)>;
Registry<TransformFactory>& transform_registry();

/// Parses a list of one-key maps `- name: {options}` (or a bare `- name`). An invalid node
/// (absent key) gives an empty pipeline.
TransformPipeline parse_transforms(const ConfigNode& list);

/// The pipeline of a split from `data.transforms.<train|test>`; the validation split uses the
/// test transforms.
TransformPipeline split_transforms(const ConfigNode& data, bool train);

// ---------------------------------------------------------------------------------------------
// Built-in transforms from C++: an options struct (the same fields the recipe sets by name)
// and a constructor that validates it (a UserError names the transform, the option and the
// bad value). A `size` list is [s] (square; for resize: the shorter side) or [height, width].

/// random_crop: pad every side by `padding` pixels of `fill`, then crop a `size` window at a
/// position uniform over all valid ones (torchvision RandomCrop).
struct RandomCropOptions {
  std::vector<int64_t> size;  ///< required
  int64_t padding = 0;
  double fill = 0.0;
  static OptionSchema<RandomCropOptions> schema();
};
TransformPtr make_random_crop(const RandomCropOptions& options);

/// horizontal_flip: mirrors left-right with probability p.
struct HorizontalFlipOptions {
  double p = 0.5;
  static OptionSchema<HorizontalFlipOptions> schema();
};
TransformPtr make_horizontal_flip(const HorizontalFlipOptions& options);

/// random_resized_crop: a random box of area fraction in `scale` and aspect ratio (w / h) in
/// `ratio` (torchvision's 10 attempts, then a center crop), resized bilinearly to `size`.
struct RandomResizedCropOptions {
  std::vector<int64_t> size;  ///< required
  std::vector<double> scale{0.08, 1.0};
  std::vector<double> ratio{3.0 / 4.0, 4.0 / 3.0};
  static OptionSchema<RandomResizedCropOptions> schema();
};
TransformPtr make_random_resized_crop(const RandomResizedCropOptions& options);

/// resize: bilinear (align_corners false, no antialias) to [height, width], or the shorter
/// side to `size` keeping the aspect ratio (torchvision Resize(int): long = int(size * long / short)).
struct ResizeOptions {
  std::vector<int64_t> size;  ///< required
  static OptionSchema<ResizeOptions> schema();
};
TransformPtr make_resize(const ResizeOptions& options);

/// center_crop: the central `size` window (torchvision CenterCrop: zero padding where the
/// image is smaller, offsets int(round((H - h) / 2.0)) with round-half-to-even).
struct CenterCropOptions {
  std::vector<int64_t> size;  ///< required
  static OptionSchema<CenterCropOptions> schema();
};
TransformPtr make_center_crop(const CenterCropOptions& options);

/// normalize: (x - mean[c]) / std[c], computed as (x - mean[c]) * (1 / std[c]) (within an ulp or
/// two of dividing, several times faster); a one-value list applies to every channel.
struct NormalizeOptions {
  std::vector<double> mean;  ///< required
  std::vector<double> std;   ///< required, every value > 0
  static OptionSchema<NormalizeOptions> schema();
};
TransformPtr make_normalize(const NormalizeOptions& options);

/// cutout (DeVries & Taylor 2017): with probability p, fills one size x size square whose
/// center is uniform over the image; the square is clipped at the borders.
struct CutoutOptions {
  int64_t size = 16;
  double p = 1.0;
  double fill = 0.0;
  static OptionSchema<CutoutOptions> schema();
};
TransformPtr make_cutout(const CutoutOptions& options);

namespace detail {

/// A window of an image; top/left may be negative (padding) in crop().
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

/// torchvision RandomResizedCrop.get_params for an image of height x width: up to 10 draws of
/// (area fraction uniform in scale, log-uniform ratio, then top, left), else the whole image
/// center-cropped to the nearest allowed ratio.
CropBox random_resized_crop_box(int64_t height, int64_t width, const std::vector<double>& scale,
                                const std::vector<double>& ratio, Rng& rng);

/// The box of image [C, H, W] as a new tensor; pixels outside the image are `fill`.
torch::Tensor crop(const torch::Tensor& image, const CropBox& box, double fill);

/// The box of image [C, H, W] (inside the image) resized to out_height x out_width like
/// torch::nn::functional::interpolate(bilinear, align_corners=false) of the cropped window.
torch::Tensor resize_bilinear(const torch::Tensor& image, const CropBox& box, int64_t out_height,
                              int64_t out_width);

/// Output {height, width} of resize(size) on a height x width image.
std::pair<int64_t, int64_t> resize_output_size(int64_t height, int64_t width, const std::vector<int64_t>& size);

}  // namespace detail

}  // namespace shrink

#define SHRINK_REGISTER_TRANSFORM(NAME, FN, DESCRIPTION) \
  static const bool SHRINK_UNIQUE_NAME(shrink_transform_) = (::shrink::transform_registry().add({NAME, DESCRIPTION, FN, {}}), true)
