#pragma once
// Generated datasets.
//   "synthetic"                random images for tests and benchmarks, generated once into memory.
//   "cluttered_fashion_mnist"  the cluttered setup of Dynamic Capacity Networks (Almahairi et al.
//                              2016), after the cluttered MNIST of Mnih et al. (2014): each
//                              Fashion-MNIST item at a random position of a larger canvas, with
//                              pieces of other training items scattered around it as clutter.
// Both are deterministic functions of their options: example i of a split depends only on
// (seed, split, i), never on the order or the thread it is generated in.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/data/dataset.h"

namespace shrink {

/// Options of "synthetic".
struct SyntheticOptions {
  int64_t channels = 3;
  int64_t height = 32;
  int64_t width = 32;
  int64_t num_classes = 10;
  int64_t train_size = 1024;
  int64_t test_size = 256;
  int64_t seed = 0;
  /// true: each class has a fixed random template and an image is template + noise * N(0, 1)
  /// clipped to [0, 1] (a model can learn it); false: uniform noise with random labels.
  bool learnable = true;
  double noise = 0.5;  ///< standard deviation of the noise added to the templates
  bool normalize = false;
  std::vector<double> mean = {0.5};
  std::vector<double> std = {0.25};
  static OptionSchema<SyntheticOptions> schema();
};

/// Generates one split (Train or Test) as a float TensorDataset. Labels are drawn uniformly per
/// example; the class templates are shared by both splits. `data` only places errors.
DatasetPtr make_synthetic(const SyntheticOptions& options, Split split, const ConfigNode& data = {});

/// Options of "cluttered_fashion_mnist".
struct ClutteredOptions {
  std::string root = "data/fashion-mnist";  ///< Fashion-MNIST's IDX files (raw or .gz)
  int64_t canvas = 100;                     ///< height and width of the generated images
  int64_t clutter = 4;                      ///< clutter pieces per image
  int64_t clutter_size = 8;                 ///< side of each square clutter piece
  int64_t seed = 0;
  int64_t train_size = 0;  ///< first N training items (0 = all 60000)
  int64_t test_size = 0;   ///< first N test items (0 = all 10000)
  bool normalize = false;
  double mean = 0.0320;  ///< measured on the default train split (seed 0)
  double std = 0.1489;
  static OptionSchema<ClutteredOptions> schema();
};

/// Images [1, canvas, canvas] generated in get() from the 28x28 items held in memory as uint8:
/// the clutter pieces (clutter_size squares cut at random positions of random other training
/// items) and the item itself are placed at random positions, combined by a pixel-wise maximum,
/// so every pixel of the item is present and nothing saturates.
class ClutteredDataset : public Dataset {
 public:
  /// `items` uint8 [N, 28, 28] with `labels` int64 [N] are the split's items; `clutter_source`
  /// uint8 [M, 28, 28] are the training items the clutter is cut from (M >= 2).
  ClutteredDataset(torch::Tensor items, torch::Tensor labels, torch::Tensor clutter_source, ClutteredOptions options,
                   Split split, std::optional<Normalization> normalization = std::nullopt,
                   std::vector<std::string> class_names = {});
  /// Reads Fashion-MNIST from options.root. `data` only places errors.
  static DatasetPtr load(const ClutteredOptions& options, Split split, const ConfigNode& data = {});

  int64_t size() const override { return items_.size(0); }
  int64_t num_classes() const override { return 10; }
  std::vector<int64_t> sample_shape() const override { return {1, options_.canvas, options_.canvas}; }
  Example get(int64_t index) const override;
  std::vector<std::string> class_names() const override { return class_names_; }
  std::optional<Normalization> normalization() const override { return normalization_; }

  /// The uint8 canvas [canvas, canvas] of example `index` (get() returns it as float / 255).
  torch::Tensor render(int64_t index) const;

 private:
  torch::Tensor items_, labels_, clutter_source_;
  ClutteredOptions options_;
  Split split_;
  std::optional<Normalization> normalization_;
  std::vector<std::string> class_names_;
};

}  // namespace shrink
