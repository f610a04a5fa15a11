#pragma once
// Writes a dataset's train and test splits to disk in a format another tool (or Shrink's own
// readers) can load: CIFAR binaries (data/cifar.h) or an ImageNet-style image folder
// (data/image_folder.h). `shrink data convert` is a thin call to these functions.
//
// Pixels come from Dataset::get() (in [0, 1], before normalization) and are stored as
// round(x * 255) clamped to [0, 255]. Nothing half-written ever appears under its final name:
// each CIFAR file is written to `name.tmp` and renamed; each image-folder split is written to
// `<train_dir>.tmp/` (`<test_dir>.tmp/`) and renamed when complete. An output folder that is
// not empty is refused unless `overwrite` is set.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/data/dataset.h"

namespace shrink {

/// Progress of a conversion: `split` is "train" or "test"; called every few hundred examples
/// and once at the end of each split.
using ConvertProgress = std::function<void(const std::string& split, int64_t done, int64_t total)>;

/// What a conversion wrote.
struct ConvertSummary {
  int64_t train = 0;        ///< training examples written
  int64_t test = 0;         ///< test examples written
  int64_t num_classes = 0;
  std::vector<std::string> files;  ///< CIFAR: the files written; image folder: the class folders
};

struct CifarWriteOptions {
  /// cifar10: data_batch_1..5.bin (train split evenly, in order) + test_batch.bin +
  /// batches.meta.txt; cifar100: train.bin + test.bin (coarse, fine label bytes) +
  /// fine_label_names.txt + coarse_label_names.txt.
  std::string layout = "cifar10";
  /// Images larger than 32x32 are an error unless true: then they are resized to 32x32 (area
  /// interpolation, aspect ratio not kept, as in Downsampled ImageNet).
  bool resize = false;
  bool overwrite = false;
  /// cifar100: coarse label of each fine label ({}: coarse = fine) and the coarse class names
  /// ({}: the fine names when coarse = fine, else the numbers).
  std::vector<int64_t> coarse_of_fine;
  std::vector<std::string> coarse_names;
  ConvertProgress progress;  ///< optional
  static OptionSchema<CifarWriteOptions> schema();  ///< layout, resize, overwrite
};

/// Writes `train` and `test` as CIFAR binaries into `out_dir` (created if needed). Images become
/// 3x32x32 uint8: grey images are replicated to 3 channels; smaller images are zero-padded,
/// centred (28 -> 32: 2 pixels each side; an odd margin puts the extra pixel after); larger ones
/// need `resize`. Labels must be < 256. Read the result back with "cifar10" (10 classes) or
/// "cifar_format" (any class count; names from the written names files).
ConvertSummary write_cifar_binary(const Dataset& train, const Dataset& test, const std::string& out_dir,
                                  const CifarWriteOptions& options = {});

struct ImageFolderWriteOptions {
  std::string format = "jpeg";  ///< jpeg (.JPEG files) or png (.png, lossless)
  int64_t quality = 95;         ///< JPEG quality (1..100)
  int64_t channels = 0;         ///< 0: keep (grey stays grey), 1: grey, 3: RGB
  std::string train_dir = "train";
  std::string test_dir = "val";
  /// Also allows a non-empty out_dir; the train_dir and test_dir sub-folders are then deleted
  /// first so that no file of an earlier conversion remains.
  bool overwrite = false;
  ConvertProgress progress;  ///< optional
  static OptionSchema<ImageFolderWriteOptions> schema();  ///< every field but progress
};

/// Writes `out_dir/<train_dir>/<class>/<index>.JPEG` (or .png) and the same under test_dir, where
/// <index> is the example's index in its split, zero-padded so that file order is split order.
/// Class folders are "<label>_<name>" with the label zero-padded to the digits of
/// num_classes - 1 and the name sanitized to [A-Za-z0-9._-] ("0_T-shirt_top" of 10 classes,
/// "07_bed" of 100), so sorting them gives label order, as the "image_folder" reader needs. Only classes with examples get a folder; a class missing from
/// the training split is an error (the reader would renumber the labels).
ConvertSummary write_image_folder(const Dataset& train, const Dataset& test, const std::string& out_dir,
                                  const ImageFolderWriteOptions& options = {});

/// The folder name write_image_folder gives class `label` of `num_classes`.
std::string class_folder_name(int64_t label, int64_t num_classes, const std::string& name);

/// Image [C, H, W] in [0, 1] (C 1 or 3) -> uint8 [3, 32, 32] as write_cifar_binary stores it.
torch::Tensor to_cifar_image(const torch::Tensor& image, bool resize = false);

}  // namespace shrink
