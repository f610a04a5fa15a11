#pragma once
// CIFAR-10 and CIFAR-100 in their "binary version" (https://www.cs.toronto.edu/~kriz/cifar.html).
// Each file is a run of fixed-size records: label byte(s), then 3072 pixel bytes (the red,
// green and blue 32x32 planes, each row-major).
//   "cifar10"      root/data_batch_1.bin .. data_batch_5.bin (train), root/test_batch.bin (test);
//                  1 label byte; class names from batches.meta.txt when present.
//   "cifar100"     root/train.bin, root/test.bin; 2 label bytes (coarse, fine); `labels: fine`
//                  (100 classes) or `coarse` (20); names from fine/coarse_label_names.txt.
//   "cifar_format" the same files with any class count: what `shrink data convert` writes
//                  (convert.h), e.g. Fashion-MNIST padded to 3x32x32.
// A file is read with one read call into a uint8 tensor; images stay uint8 [N, 3, 32, 32] in
// memory (a TensorDataset) and load as x / 255.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/data/dataset.h"

namespace shrink {

/// Pixel bytes of one CIFAR record: 3 planes of 32x32.
constexpr int64_t kCifarImageBytes = 3 * 32 * 32;

/// One label byte of a CIFAR record.
struct CifarLabel {
  std::string name;         ///< for messages: "label", "coarse label", "fine label"
  int64_t num_classes = 0;  ///< values must be < num_classes (0: not checked)
};

/// The records of one or more CIFAR-format files, in file order.
struct CifarRecords {
  torch::Tensor images;  ///< uint8 [N, 3, 32, 32]
  torch::Tensor labels;  ///< int64 [N, L]: the L label bytes of each record
};

/// Reads CIFAR binaries whose records hold labels.size() label bytes then 3072 pixel bytes.
/// Throws UserError naming the file when it is missing or unreadable, when its size is not a
/// multiple of the record size (saying both), or naming the file and record index when a label
/// is out of range.
CifarRecords read_cifar_binary(const std::vector<std::string>& paths, const std::vector<CifarLabel>& labels);

/// Class names from a text file, one per non-empty line (surrounding whitespace dropped);
/// {} when the file does not exist.
std::vector<std::string> read_class_names(const std::string& path);

/// Options of "cifar10".
struct Cifar10Options {
  std::string root = "data/cifar-10-batches-bin";
  bool normalize = true;
  std::vector<double> mean = {0.4914, 0.4822, 0.4465};
  std::vector<double> std = {0.2470, 0.2435, 0.2616};
  static OptionSchema<Cifar10Options> schema();
};

/// Options of "cifar100".
struct Cifar100Options {
  std::string root = "data/cifar-100-binary";
  std::string labels = "fine";  ///< fine (100 classes) or coarse (20 superclasses)
  bool normalize = true;
  std::vector<double> mean = {0.5071, 0.4865, 0.4409};
  std::vector<double> std = {0.2673, 0.2564, 0.2762};
  static OptionSchema<Cifar100Options> schema();
};

/// Options of "cifar_format": CIFAR-layout files with any number of classes.
struct CifarFormatOptions {
  std::string root;
  std::string layout = "cifar10";  ///< cifar10 (data_batch_1..5.bin, test_batch.bin) or cifar100 (train.bin, test.bin)
  std::string labels = "fine";     ///< layout cifar100: which label byte
  int64_t num_classes = 0;         ///< 0: the number of names in the class-names file
  bool normalize = false;
  std::vector<double> mean = {0.5};
  std::vector<double> std = {0.5};
  static OptionSchema<CifarFormatOptions> schema();
};

/// Builds one split (Train or Test). `data` is only used to place errors at its keys.
DatasetPtr load_cifar10(const Cifar10Options& options, Split split, const ConfigNode& data = {});
DatasetPtr load_cifar100(const Cifar100Options& options, Split split, const ConfigNode& data = {});
DatasetPtr load_cifar_format(const CifarFormatOptions& options, Split split, const ConfigNode& data = {});

}  // namespace shrink
