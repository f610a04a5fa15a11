// Built-in datasets "fashion_mnist" and "mnist": 28x28 grey images in 10 classes, stored as
// four IDX files (raw or .gz) in one folder:
//   train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
// Images stay uint8 [N, 1, 28, 28] in memory and load as x / 255; the loader applies
// (x - mean) / std after the transforms when `normalize` is set.
#include <filesystem>
#include <string>

#include "shrink/config/options.h"
#include "shrink/data/data_errors.h"
#include "shrink/data/dataset.h"
#include "shrink/data/idx.h"

namespace shrink {
namespace {

struct FashionMnistDefaults {
  static constexpr const char* kName = "Fashion-MNIST";
  static constexpr const char* kRoot = "data/fashion-mnist";
  static constexpr double kMean = 0.2860;  // mean of the train images in [0, 1]
  static constexpr double kStd = 0.3530;
  static std::vector<std::string> classes() {
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  }
};
struct MnistDefaults {
  static constexpr const char* kName = "MNIST";
  static constexpr const char* kRoot = "data/mnist";
  static constexpr double kMean = 0.1307;
  static constexpr double kStd = 0.3081;
  static std::vector<std::string> classes() { return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}; }
};

/// Options of the MNIST-format datasets (defaults differ only by dataset).
template <class D>
struct MnistFormatOptions {
  std::string root = D::kRoot;
  bool normalize = true;
  double mean = D::kMean;
  double std = D::kStd;
};

template <class D>
OptionSchema<MnistFormatOptions<D>> mnist_schema() {
  using O = MnistFormatOptions<D>;
  OptionSchema<O> s;
  s.add("root", &O::root,
        "Folder with the four IDX files (raw or .gz); relative paths are from the working directory.");
  s.add("normalize", &O::normalize,
        "Subtract `mean` and divide by `std` after the transforms (pixels are in [0, 1]).");
  s.add("mean", &O::mean, "Pixel mean used by `normalize`.");
  s.add("std", &O::std, "Pixel standard deviation used by `normalize` (> 0).");
  return s;
}

constexpr int64_t kNumClasses = 10;

template <class D>
DatasetPtr load_mnist_format(const ConfigNode& data, Split split) {
  const auto options = mnist_schema<D>().parse(data, dataset_common_keys());
  if (!(options.std > 0))
    fail_at_key(data, "std", "must be positive (got " + detail::format_value(options.std) + ")");

  std::error_code ec;
  if (!std::filesystem::is_directory(options.root, ec))
    fail_at_key(data, "root",
            std::string(D::kName) + " folder '" + options.root +
                "' does not exist; run scripts/setup.sh to download it, or set data.root");

  const bool train = split == Split::Train;
  const std::string prefix = train ? "train" : "t10k";
  std::string images_path, labels_path;
  try {
    images_path = resolve_idx(options.root, prefix + "-images-idx3-ubyte");
    labels_path = resolve_idx(options.root, prefix + "-labels-idx1-ubyte");
  } catch (const UserError& e) {
    fail_at_key(data, "root", std::string(e.what()) + "; run scripts/setup.sh to download " + D::kName);
  }

  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  if (images.dim() != 3)
    throw UserError("'" + images_path + "' should hold images [N, H, W], found " +
                    std::to_string(images.dim()) + " dimensions");
  if (labels.dim() != 1)
    throw UserError("'" + labels_path + "' should hold labels [N], found " +
                    std::to_string(labels.dim()) + " dimensions");
  if (images.size(0) != labels.size(0))
    throw UserError("'" + images_path + "' holds " + std::to_string(images.size(0)) + " images but '" +
                    labels_path + "' holds " + std::to_string(labels.size(0)) + " labels");
  if (labels.numel() > 0 && labels.max().item<int64_t>() >= kNumClasses)
    throw UserError("'" + labels_path + "' holds label " + std::to_string(labels.max().item<int64_t>()) +
                    "; expected 0.." + std::to_string(kNumClasses - 1));

  auto normalization = make_normalization(options.normalize, {options.mean}, {options.std}, 1, data);
  return std::make_shared<TensorDataset>(images.unsqueeze(1).contiguous(), labels.to(torch::kInt64), kNumClasses,
                                         normalization, D::classes());
}

template <class D>
void add_mnist_format(Registry<DatasetFactory>& registry, const std::string& name,
                      const std::string& description) {
  registry.add({name, description, &load_mnist_format<D>, mnist_schema<D>().docs()});
}

}  // namespace

namespace detail {

void register_mnist_datasets(Registry<DatasetFactory>& registry) {
  add_mnist_format<FashionMnistDefaults>(
      registry, "fashion_mnist", "Fashion-MNIST: 28x28 grey clothing images, 10 classes, 60000 train / 10000 test");
  add_mnist_format<MnistDefaults>(
      registry, "mnist", "MNIST: 28x28 grey handwritten digits, 10 classes, 60000 train / 10000 test");
}

}  // namespace detail
}  // namespace shrink
