#include "shrink/data/synthetic.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <utility>

#include "shrink/core/rng.h"
#include "shrink/data/data_errors.h"
#include "shrink/data/idx.h"

namespace shrink {
namespace {

// Stream ids for Rng::for_item(seed, stream, index).
constexpr uint64_t kTrainStream = 0;
constexpr uint64_t kTestStream = 1;
constexpr uint64_t kTemplateStream = 2;

uint64_t split_stream(Split split) { return split == Split::Train ? kTrainStream : kTestStream; }

/// Two independent standard normals by Box-Muller.
std::pair<double, double> normal_pair(Rng& rng) {
  const double u1 = 1.0 - rng.uniform();  // (0, 1]
  const double u2 = 6.283185307179586 * rng.uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  return {r * std::cos(u2), r * std::sin(u2)};
}

std::vector<std::string> fashion_classes() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

}  // namespace

OptionSchema<SyntheticOptions> SyntheticOptions::schema() {
  using O = SyntheticOptions;
  OptionSchema<O> s;
  s.add("channels", &O::channels, "Image channels.").range(1, 64);
  s.add("height", &O::height, "Image height.").range(1, 4096);
  s.add("width", &O::width, "Image width.").range(1, 4096);
  s.add("num_classes", &O::num_classes, "Number of classes.").range(1, 100000);
  s.add("train_size", &O::train_size, "Training examples.").min(1);
  s.add("test_size", &O::test_size, "Test examples.").min(1);
  s.add("seed", &O::seed, "Seed of the images, labels and class templates.").min(0);
  s.add("learnable", &O::learnable,
        "true: image = class template + noise * N(0, 1), clipped to [0, 1] (learnable); false: uniform noise "
        "with random labels.");
  s.add("noise", &O::noise, "Standard deviation of the noise added to the class templates.").min(0);
  s.add("normalize", &O::normalize, "Subtract `mean` and divide by `std` per channel after the transforms.");
  s.add("mean", &O::mean, "Mean used by `normalize` (one value, or one per channel).");
  s.add("std", &O::std, "Standard deviation used by `normalize` (> 0).");
  return s;
}

DatasetPtr make_synthetic(const SyntheticOptions& options, Split split, const ConfigNode& data) {
  const int64_t c = options.channels, h = options.height, w = options.width, k = options.num_classes;
  if (c < 1 || h < 1 || w < 1 || k < 1)
    throw UserError(fmt::format("synthetic: channels, height, width and num_classes must be positive (got {}, {}, {}, {})",
                                c, h, w, k));
  const int64_t n = split == Split::Train ? options.train_size : options.test_size;
  const char* size_key = split == Split::Train ? "train_size" : "test_size";
  if (n < 1) fail_at_key(data, size_key, fmt::format("must be at least 1 (got {})", n));
  const int64_t pixels = c * h * w;
  // Guard against sizes that could not fit in memory (4 bytes per pixel, plus the templates).
  if (static_cast<double>(n + (options.learnable ? k : 0)) * pixels * 4 > 8e9)
    fail_at_key(data, size_key,
            fmt::format("{} images of {}x{}x{} need {:.1f} GB; use fewer or smaller images", n, c, h, w,
                        n * pixels * 4e-9));
  auto normalization = make_normalization(options.normalize, options.mean, options.std, c, data);
  const auto seed = static_cast<uint64_t>(options.seed);

  std::vector<float> templates;
  if (options.learnable) {
    templates.resize(static_cast<size_t>(k * pixels));
    for (int64_t cls = 0; cls < k; ++cls) {
      Rng rng = Rng::for_item(seed, kTemplateStream, static_cast<uint64_t>(cls));
      for (int64_t p = 0; p < pixels; ++p) templates[cls * pixels + p] = static_cast<float>(rng.uniform());
    }
  }

  auto images = torch::empty({n, c, h, w}, torch::kFloat32);
  auto labels = torch::empty({n}, torch::kInt64);
  float* out = images.data_ptr<float>();
  int64_t* label_out = labels.data_ptr<int64_t>();
  const uint64_t stream = split_stream(split);
  for (int64_t i = 0; i < n; ++i) {
    Rng rng = Rng::for_item(seed, stream, static_cast<uint64_t>(i));
    const int64_t label = rng.integer(0, k - 1);
    label_out[i] = label;
    float* image = out + i * pixels;
    if (options.learnable) {
      const float* t = templates.data() + label * pixels;
      auto put = [&](int64_t p, double z) {
        image[p] = static_cast<float>(std::min(1.0, std::max(0.0, t[p] + options.noise * z)));
      };
      for (int64_t p = 0; p < pixels; p += 2) {
        const auto [z0, z1] = normal_pair(rng);
        put(p, z0);
        if (p + 1 < pixels) put(p + 1, z1);
      }
    } else {
      for (int64_t p = 0; p < pixels; ++p) image[p] = static_cast<float>(rng.uniform());
    }
  }
  return std::make_shared<TensorDataset>(images, labels, k, std::move(normalization));
}

OptionSchema<ClutteredOptions> ClutteredOptions::schema() {
  using O = ClutteredOptions;
  OptionSchema<O> s;
  s.add("root", &O::root, "Folder with Fashion-MNIST's four IDX files (raw or .gz).");
  s.add("canvas", &O::canvas, "Height and width of the generated images (at least 28).").range(28, 4096);
  s.add("clutter", &O::clutter, "Clutter pieces per image.").range(0, 1000);
  s.add("clutter_size", &O::clutter_size, "Side of each square clutter piece.").range(1, 28);
  s.add("seed", &O::seed, "Seed of the positions and of the clutter.").min(0);
  s.add("train_size", &O::train_size, "Use the first N training items (0 = all 60000).").min(0);
  s.add("test_size", &O::test_size, "Use the first N test items (0 = all 10000).").min(0);
  s.add("normalize", &O::normalize, "Subtract `mean` and divide by `std` after the transforms.");
  s.add("mean", &O::mean, "Pixel mean used by `normalize`.");
  s.add("std", &O::std, "Pixel standard deviation used by `normalize` (> 0).");
  return s;
}

ClutteredDataset::ClutteredDataset(torch::Tensor items, torch::Tensor labels, torch::Tensor clutter_source,
                                   ClutteredOptions options, Split split, std::optional<Normalization> normalization,
                                   std::vector<std::string> class_names)
    : items_(items.contiguous()),
      labels_(labels.to(torch::kInt64).contiguous()),
      clutter_source_(clutter_source.contiguous()),
      options_(std::move(options)),
      split_(split),
      normalization_(std::move(normalization)),
      class_names_(std::move(class_names)) {
  TORCH_CHECK(items_.dim() == 3 && items_.size(1) == 28 && items_.size(2) == 28 &&
                  items_.scalar_type() == torch::kUInt8,
              "ClutteredDataset: items must be uint8 [N, 28, 28], got ", items_.sizes(), " ", items_.scalar_type());
  TORCH_CHECK(clutter_source_.dim() == 3 && clutter_source_.size(1) == 28 && clutter_source_.size(2) == 28 &&
                  clutter_source_.scalar_type() == torch::kUInt8 && clutter_source_.size(0) >= 2,
              "ClutteredDataset: clutter_source must be uint8 [M >= 2, 28, 28], got ", clutter_source_.sizes());
  TORCH_CHECK(labels_.dim() == 1 && labels_.size(0) == items_.size(0), "ClutteredDataset: ", items_.size(0),
              " items but labels ", labels_.sizes());
  TORCH_CHECK(options_.canvas >= 28 && options_.clutter >= 0 && options_.clutter_size >= 1 &&
                  options_.clutter_size <= 28 && options_.clutter_size <= options_.canvas,
              "ClutteredDataset: bad canvas/clutter options");
}

torch::Tensor ClutteredDataset::render(int64_t index) const {
  TORCH_CHECK(index >= 0 && index < size(), "ClutteredDataset: index ", index, " out of range [0, ", size(), ")");
  constexpr int64_t kSide = 28;
  const int64_t canvas = options_.canvas, piece = options_.clutter_size;
  auto out = torch::zeros({canvas, canvas}, torch::kUInt8);
  uint8_t* dst = out.data_ptr<uint8_t>();
  Rng rng = Rng::for_item(static_cast<uint64_t>(options_.seed), split_stream(split_), static_cast<uint64_t>(index));
  // Draw everything from the generator in a fixed order: item position, then each piece.
  const int64_t item_y = rng.integer(0, canvas - kSide), item_x = rng.integer(0, canvas - kSide);
  auto paste = [&](const uint8_t* src, int64_t sy, int64_t sx, int64_t side, int64_t dy, int64_t dx) {
    for (int64_t y = 0; y < side; ++y) {
      const uint8_t* s = src + (sy + y) * kSide + sx;
      uint8_t* d = dst + (dy + y) * canvas + dx;
      for (int64_t x = 0; x < side; ++x) d[x] = std::max(d[x], s[x]);
    }
  };
  const int64_t sources = clutter_source_.size(0);
  const uint8_t* source_data = clutter_source_.data_ptr<uint8_t>();
  for (int64_t p = 0; p < options_.clutter; ++p) {
    int64_t j = rng.integer(0, sources - 1);
    // Clutter comes from another item: in the train split, not the example's own.
    if (split_ == Split::Train && j == index) j = (j + 1) % sources;
    const int64_t sy = rng.integer(0, kSide - piece), sx = rng.integer(0, kSide - piece);
    const int64_t dy = rng.integer(0, canvas - piece), dx = rng.integer(0, canvas - piece);
    paste(source_data + j * kSide * kSide, sy, sx, piece, dy, dx);
  }
  paste(items_.data_ptr<uint8_t>() + index * kSide * kSide, 0, 0, kSide, item_y, item_x);
  return out;
}

Example ClutteredDataset::get(int64_t index) const {
  auto image = render(index).to(torch::kFloat32).div_(255.0).unsqueeze(0);
  return {image, labels_.data_ptr<int64_t>()[index]};
}

DatasetPtr ClutteredDataset::load(const ClutteredOptions& options, Split split, const ConfigNode& data) {
  if (!(options.std > 0)) fail_at_key(data, "std", "must be positive (got " + detail::format_value(options.std) + ")");
  if (options.clutter_size > options.canvas)
    fail_at_key(data, "clutter_size",
            fmt::format("must be at most the canvas ({}), got {}", options.canvas, options.clutter_size));
  std::error_code ec;
  if (!std::filesystem::is_directory(options.root, ec))
    fail_at_key(data, "root",
            "Fashion-MNIST folder '" + options.root +
                "' does not exist; run scripts/setup.sh to download it, or set data.root");
  auto read_split = [&](const std::string& prefix, torch::Tensor& images, torch::Tensor& labels) {
    std::string images_path, labels_path;
    try {
      images_path = resolve_idx(options.root, prefix + "-images-idx3-ubyte");
      labels_path = resolve_idx(options.root, prefix + "-labels-idx1-ubyte");
    } catch (const UserError& e) {
      fail_at_key(data, "root", std::string(e.what()) + "; run scripts/setup.sh to download Fashion-MNIST");
    }
    images = read_idx(images_path);
    labels = read_idx(labels_path);
    if (images.dim() != 3 || images.size(1) != 28 || images.size(2) != 28)
      throw UserError("'" + images_path + "' should hold 28x28 images [N, 28, 28]");
    if (labels.dim() != 1 || labels.size(0) != images.size(0))
      throw UserError("'" + labels_path + "' should hold one label per image of '" + images_path + "'");
    if (labels.numel() > 0 && labels.max().item<int64_t>() >= 10)
      throw UserError("'" + labels_path + "' holds label " + std::to_string(labels.max().item<int64_t>()) +
                      "; expected 0..9");
  };
  torch::Tensor train_images, train_labels;
  read_split("train", train_images, train_labels);
  if (train_images.size(0) < 2)
    throw UserError("cluttered_fashion_mnist: the training split needs at least 2 items to cut clutter from");
  torch::Tensor items = train_images, labels = train_labels;
  if (split != Split::Train) read_split("t10k", items, labels);

  const int64_t wanted = split == Split::Train ? options.train_size : options.test_size;
  if (wanted > items.size(0))
    fail_at_key(data, split == Split::Train ? "train_size" : "test_size",
            fmt::format("must be at most {}, the size of the split (got {})", items.size(0), wanted));
  if (wanted > 0) {
    items = items.narrow(0, 0, wanted);
    labels = labels.narrow(0, 0, wanted);
  }
  auto normalization = make_normalization(options.normalize, {options.mean}, {options.std}, 1, data);
  return std::make_shared<ClutteredDataset>(items, labels, train_images, options, split, std::move(normalization),
                                            fashion_classes());
}

namespace detail {

void register_synthetic_datasets(Registry<DatasetFactory>& registry) {
  registry.add({"synthetic", "Random images generated from a seed (learnable class templates + noise), for tests",
                [](const ConfigNode& data, Split split) {
                  return make_synthetic(SyntheticOptions::schema().parse(data, dataset_common_keys()), split, data);
                },
                SyntheticOptions::schema().docs()});
  registry.add({"cluttered_fashion_mnist",
                "Fashion-MNIST items placed at random on a 100x100 canvas with clutter from other items (DCN setup)",
                [](const ConfigNode& data, Split split) {
                  return ClutteredDataset::load(ClutteredOptions::schema().parse(data, dataset_common_keys()), split,
                                                data);
                },
                ClutteredOptions::schema().docs()});
}

}  // namespace detail
}  // namespace shrink
