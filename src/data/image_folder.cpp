#include "shrink/data/image_folder.h"

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <set>

#include "shrink/data/data_errors.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;

/// Sub-folder names of `dir` (hidden ones excluded), sorted in byte order.
std::vector<std::string> sub_folders(const fs::path& dir) {
  std::vector<std::string> names;
  try {
    for (const auto& entry : fs::directory_iterator(dir, fs::directory_options::follow_directory_symlink)) {
      const auto name = entry.path().filename().string();
      if (!name.empty() && name[0] != '.' && entry.is_directory()) names.push_back(name);
    }
  } catch (const fs::filesystem_error& e) {
    throw UserError(fmt::format("cannot list '{}': {}", dir.string(), e.code().message()));
  }
  std::sort(names.begin(), names.end());
  return names;
}

/// Image files under `dir` at any depth, sorted by path relative to `dir` (byte order).
std::vector<std::string> image_files(const fs::path& dir) {
  std::vector<std::string> relative;
  try {
    for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
         it != fs::recursive_directory_iterator(); ++it) {
      const auto name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {  // hidden files and folders (.DS_Store, .git)
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_directory() && has_image_extension(name))
        relative.push_back(it->path().lexically_relative(dir).string());
    }
  } catch (const fs::filesystem_error& e) {
    throw UserError(fmt::format("cannot list '{}': {}", dir.string(), e.code().message()));
  }
  std::sort(relative.begin(), relative.end());
  std::vector<std::string> out;
  out.reserve(relative.size());
  for (const auto& r : relative) out.push_back((dir / r).string());
  return out;
}

std::vector<double> grey_or(std::vector<double> v, std::vector<double> rgb, int64_t channels) {
  if (!v.empty()) return v;
  if (channels == 3) return rgb;
  return {(rgb[0] + rgb[1] + rgb[2]) / 3};
}

}  // namespace

bool has_image_extension(const std::string& path) {
  static const std::set<std::string> extensions = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm",
                                                   ".pbm", ".tif",  ".tiff", ".webp"};
  auto ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return extensions.count(ext) > 0;
}

torch::Tensor read_image(const std::string& path, int64_t channels) {
  TORCH_CHECK(channels == 1 || channels == 3, "read_image: channels must be 1 or 3, got ", channels);
  // IMREAD_COLOR and IMREAD_GRAYSCALE also give 8 bits per channel for 16-bit files.
  const int flags = (channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR) | cv::IMREAD_IGNORE_ORIENTATION;
  cv::Mat image;
  try {
    image = cv::imread(path, flags);
  } catch (const cv::Exception& e) {
    throw UserError(fmt::format("cannot decode image '{}': {}", path, e.what()));
  }
  if (image.empty())
    throw UserError(fmt::format("cannot decode image '{}': unreadable or not an image (set data.skip_corrupt: true "
                                "to skip files that are not images)",
                                path));
  if (channels == 3) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
  if (!image.isContinuous()) image = image.clone();
  auto hwc = torch::from_blob(image.data, {image.rows, image.cols, channels}, torch::kUInt8);
  // The conversion copies out of the Mat before it goes away.
  return hwc.permute({2, 0, 1}).to(torch::kFloat32).div_(255.0).contiguous();
}

OptionSchema<ImageFolderDataset::Options> ImageFolderDataset::schema() {
  using O = Options;
  OptionSchema<O> s;
  s.add("root", &O::root, "Folder holding the train and test sub-folders, each with one folder per class.");
  s.add("train_dir", &O::train_dir, "Sub-folder of root with the training split (its folders define the classes).");
  s.add("test_dir", &O::test_dir, "Sub-folder of root with the test split.");
  s.add("channels", &O::channels, "3: decode as RGB; 1: decode as grey.").range(1, 3);
  s.add("skip_corrupt", &O::skip_corrupt,
        "Check every file's signature when the dataset is built (one small read per file) and skip files that "
        "are not images; otherwise such a file is an error when it is loaded.");
  s.add("normalize", &O::normalize, "Subtract `mean` and divide by `std` per channel after the transforms.");
  s.add("mean", &O::mean,
        "Per-channel mean used by `normalize` (empty: ImageNet's [0.485, 0.456, 0.406], or their average for grey).");
  s.add("std", &O::std,
        "Per-channel standard deviation used by `normalize` (empty: ImageNet's [0.229, 0.224, 0.225], or their "
        "average for grey).");
  return s;
}

ImageFolderDataset::ImageFolderDataset(Options options, Split split, const ConfigNode& data)
    : options_(std::move(options)) {
  if (options_.channels != 1 && options_.channels != 3)
    fail_at_key(data, "channels", fmt::format("must be 1 or 3 (got {})", options_.channels));
  if (options_.root.empty()) fail_at_key(data, "root", "image_folder needs data.root: the folder with train/ and val/");
  normalization_ = make_normalization(options_.normalize,
                                      grey_or(options_.mean, {0.485, 0.456, 0.406}, options_.channels),
                                      grey_or(options_.std, {0.229, 0.224, 0.225}, options_.channels),
                                      options_.channels, data);
  std::error_code ec;
  const fs::path root(options_.root);
  if (!fs::is_directory(root, ec))
    fail_at_key(data, "root", fmt::format("image folder '{}' does not exist", options_.root));
  const fs::path train_dir = root / options_.train_dir;
  if (!fs::is_directory(train_dir, ec))
    fail_at_key(data, options_.train_dir == "train" ? "root" : "train_dir",
            fmt::format("training folder '{}' does not exist (expected {}/{}/<class>/<images>)", train_dir.string(),
                        options_.root, options_.train_dir));
  classes_ = sub_folders(train_dir);
  if (classes_.empty())
    fail_at_key(data, "root", fmt::format("'{}' has no class sub-folders (expected {}/<class>/<images>)",
                                      train_dir.string(), train_dir.string()));

  const bool train = split == Split::Train;
  const fs::path dir = train ? train_dir : root / options_.test_dir;
  split_dir_ = dir.string();
  if (!train) {
    if (!fs::is_directory(dir, ec))
      fail_at_key(data, options_.test_dir == "val" ? "root" : "test_dir",
              fmt::format("test folder '{}' does not exist (set data.test_dir to the test split's sub-folder)",
                          dir.string()));
    for (const auto& name : sub_folders(dir))
      if (!std::binary_search(classes_.begin(), classes_.end(), name))
        throw UserError(fmt::format("class folder '{}' has no counterpart in the training folder '{}': both "
                                    "splits must use the training split's classes",
                                    (dir / name).string(), train_dir.string()));
  }

  for (size_t label = 0; label < classes_.size(); ++label) {
    const fs::path class_dir = dir / classes_[label];
    if (!train && !fs::is_directory(class_dir, ec)) continue;  // a class without test examples
    auto found = image_files(class_dir);
    if (found.empty())
      throw UserError(fmt::format("class folder '{}' has no image files (extensions .jpg .jpeg .png .bmp .ppm "
                                  ".pgm .pbm .tif .tiff .webp)",
                                  class_dir.string()));
    size_t kept = 0;
    for (auto& file : found) {
      if (options_.skip_corrupt && !cv::haveImageReader(file)) {
        skipped_files_.push_back(std::move(file));
        continue;
      }
      files_.push_back(std::move(file));
      labels_.push_back(static_cast<int64_t>(label));
      ++kept;
    }
    if (kept == 0)
      throw UserError(fmt::format("class folder '{}' has no readable images ({} skipped as corrupt)",
                                  class_dir.string(), found.size()));
  }
  if (files_.empty()) throw UserError(fmt::format("no images found under '{}'", dir.string()));
  if (!skipped_files_.empty())
    std::fprintf(stderr, "%s (first skipped: '%s')\n", describe().c_str(), skipped_files_.front().c_str());
}

Example ImageFolderDataset::get(int64_t index) const {
  TORCH_CHECK(index >= 0 && index < size(), "ImageFolderDataset::get: index ", index, " out of range [0, ", size(),
              ")");
  return {read_image(files_[index], options_.channels), labels_[index]};
}

std::string ImageFolderDataset::describe() const {
  std::string text = fmt::format("image_folder '{}': {} images in {} classes", split_dir_, files_.size(),
                                 classes_.size());
  if (!skipped_files_.empty()) text += fmt::format(" ({} skipped as not images)", skipped_files_.size());
  return text;
}

namespace detail {

void register_image_folder_dataset(Registry<DatasetFactory>& registry) {
  using O = ImageFolderDataset::Options;
  registry.add({"image_folder",
                "ImageNet-style folders root/train/<class>/*.jpg and root/val/<class>/*.jpg, decoded when loaded",
                [](const ConfigNode& data, Split split) -> DatasetPtr {
                  O options = ImageFolderDataset::schema().parse(data, dataset_common_keys());
                  return std::make_shared<ImageFolderDataset>(std::move(options), split, data);
                },
                ImageFolderDataset::schema().docs()});
}

}  // namespace detail
}  // namespace shrink
