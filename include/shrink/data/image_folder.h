#pragma once
// "image_folder": an ImageNet-style tree of image files, one sub-folder per class:
//   root/train/<class>/**/*.JPEG      (train_dir)
//   root/val/<class>/**/*.JPEG        (test_dir; the test split)
// Classes are the sub-folders of the train folder sorted by name (byte order); both splits use
// that list, so a class folder found only in the test folder is an error. Files with an image
// extension (.jpg .jpeg .png .bmp .ppm .pgm .pbm .tif .tiff .webp, any case) under a class folder,
// at any depth, are its examples, sorted by relative path. Other files are ignored.
//
// Images are decoded lazily in get() with OpenCV (EXIF orientation ignored, like PIL) into float
// [C, H, W] in [0, 1], RGB or grey (`channels`). Sizes vary: sample_shape() is {}, and the
// transforms (resize, crops) give the batch its shape.
//
// Corrupt files: a file OpenCV cannot decode makes get() throw a UserError naming it. With
// `skip_corrupt: true`, every file's signature is checked when the dataset is built
// (cv::haveImageReader reads the first bytes of each file: one small read per file, no
// decoding) and files that are not images are skipped and counted in skipped(). A file with a
// valid signature but truncated data is not detected this way: OpenCV's JPEG reader returns the
// part it could decode (with a warning) rather than failing, so a full decode would not find it
// either, and decoding every file up front would cost a whole epoch of decoding.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/data/dataset.h"

namespace shrink {

/// Reads an image file into float [C, H, W] in [0, 1]: RGB when channels is 3, grey when 1.
/// Throws UserError naming the file when it cannot be decoded.
torch::Tensor read_image(const std::string& path, int64_t channels = 3);

/// True when `path` has one of the image extensions above (case-insensitive).
bool has_image_extension(const std::string& path);

class ImageFolderDataset : public Dataset {
 public:
  struct Options {
    std::string root;
    std::string train_dir = "train";  ///< sub-folder of root with the training split
    std::string test_dir = "val";     ///< sub-folder of root with the test split
    int64_t channels = 3;             ///< 3: RGB, 1: grey
    bool skip_corrupt = false;        ///< check signatures when built; skip files that are not images
    bool normalize = true;
    std::vector<double> mean;  ///< {}: ImageNet's (0.485, 0.456, 0.406), or their average for grey
    std::vector<double> std;   ///< {}: ImageNet's (0.229, 0.224, 0.225), or their average for grey
  };
  static OptionSchema<Options> schema();

  /// Lists the split's files (no decoding). `data` is only used to place errors at its keys.
  ImageFolderDataset(Options options, Split split, const ConfigNode& data = {});

  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }
  std::vector<int64_t> sample_shape() const override { return {}; }
  Example get(int64_t index) const override;
  std::vector<std::string> class_names() const override { return classes_; }
  std::optional<Normalization> normalization() const override { return normalization_; }
  int64_t skipped() const override { return static_cast<int64_t>(skipped_files_.size()); }

  /// The image files in example order, with their labels.
  const std::vector<std::string>& files() const { return files_; }
  const std::vector<int64_t>& labels() const { return labels_; }
  /// Files skipped as not images (skip_corrupt).
  const std::vector<std::string>& skipped_files() const { return skipped_files_; }
  /// One line: "image_folder 'root/train': 1281167 images in 1000 classes (3 skipped)".
  std::string describe() const;

 private:
  Options options_;
  std::string split_dir_;
  std::vector<std::string> classes_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  std::vector<std::string> skipped_files_;
  std::optional<Normalization> normalization_;
};

}  // namespace shrink
