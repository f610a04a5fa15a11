#pragma once
// Datasets for classification. Registered by name; the recipe's `data:` section picks one
// (`name`) and sets its options. A dataset yields images with pixels in [0, 1]; transforms
// (data/transforms.h) and the dataset's normalization are applied by the loader (data/loader.h).
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "shrink/core/registry.h"
#include "shrink/models/model.h"

namespace shrink {

enum class Split { Train, Validation, Test };
const char* split_name(Split split);

struct Batch {
  torch::Tensor inputs;   ///< float [B, C, H, W]
  torch::Tensor targets;  ///< int64 [B]
};

struct Example {
  torch::Tensor image;  ///< float [C, H, W], pixels in [0, 1] (before normalization)
  int64_t label = 0;
};

/// Per-channel (x - mean) / std; one value applies to every channel.
struct Normalization {
  std::vector<double> mean, std;
  /// Normalizes a float image [C, H, W] or batch [B, C, H, W] in place.
  void apply_(torch::Tensor& images) const;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual int64_t num_classes() const = 0;
  /// C, H, W shared by every example, or {} when sizes vary (image folders).
  virtual std::vector<int64_t> sample_shape() const = 0;
  /// Example `index` (0 <= index < size()). Must be safe to call from several threads at once.
  virtual Example get(int64_t index) const = 0;
  /// The examples at `indices`, in that order, stacked. The default stacks get(); in-memory
  /// datasets override it with one gather.
  virtual Batch get_batch(const std::vector<int64_t>& indices) const;
  /// Class names in label order ({} when the dataset has none).
  virtual std::vector<std::string> class_names() const { return {}; }
  /// The normalization the dataset asks for after the transforms (its `normalize`, `mean`
  /// and `std` options); nullopt for none.
  virtual std::optional<Normalization> normalization() const { return std::nullopt; }
  /// Examples found but skipped as unreadable (`skip_corrupt`).
  virtual int64_t skipped() const { return 0; }

  DataInfo info() const { return {sample_shape(), num_classes()}; }
};
using DatasetPtr = std::shared_ptr<Dataset>;

/// Images [N, C, H, W] (float in [0, 1], or uint8 read as x / 255) and labels [N] int64 held
/// in memory.
class TensorDataset : public Dataset {
 public:
  TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes,
                std::optional<Normalization> normalization = std::nullopt,
                std::vector<std::string> class_names = {});
  int64_t size() const override { return images_.size(0); }
  int64_t num_classes() const override { return num_classes_; }
  std::vector<int64_t> sample_shape() const override;
  Example get(int64_t index) const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  std::vector<std::string> class_names() const override { return class_names_; }
  std::optional<Normalization> normalization() const override { return normalization_; }
  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }

 private:
  torch::Tensor images_, labels_;
  int64_t num_classes_;
  std::optional<Normalization> normalization_;
  std::vector<std::string> class_names_;
};

/// A view of some examples of another dataset (subsets, validation splits).
class SubsetDataset : public Dataset {
 public:
  SubsetDataset(DatasetPtr base, std::vector<int64_t> indices);
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  int64_t num_classes() const override { return base_->num_classes(); }
  std::vector<int64_t> sample_shape() const override { return base_->sample_shape(); }
  Example get(int64_t index) const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  std::vector<std::string> class_names() const override { return base_->class_names(); }
  std::optional<Normalization> normalization() const override { return base_->normalization(); }
  int64_t skipped() const override { return base_->skipped(); }
  const std::vector<int64_t>& indices() const { return indices_; }

 private:
  DatasetPtr base_;
  std::vector<int64_t> indices_;
};

/// A dataset factory reads its own options from the `data:` section (ignoring
/// dataset_common_keys(), which the framework handles) and builds one split: Train or Test
/// (the validation split is carved from Train by the framework).
using DatasetFactory = std::function<DatasetPtr(const ConfigNode& data, Split split)>;
Registry<DatasetFactory>& dataset_registry();

/// Keys of `data:` handled for every dataset: name, transforms, workers, prefetch,
/// validation_fraction, validation_seed, train_subset, test_subset.
const std::vector<std::string>& dataset_common_keys();

/// Options shared by every dataset (the keys above except name and transforms).
struct DataCommonOptions {
  int64_t workers = 0;    ///< loader threads (0: load in the training thread)
  int64_t prefetch = 2;   ///< batches prepared ahead per worker
  double validation_fraction = 0;  ///< carved from train with validation_seed
  int64_t validation_seed = 0;
  int64_t train_subset = 0;  ///< first N training examples (0 = all)
  int64_t test_subset = 0;   ///< first N test examples (0 = all)
};
DataCommonOptions parse_data_common_options(const ConfigNode& data);
std::vector<OptionDoc> data_common_option_docs();

/// Builds the split of the dataset named by `data.name`, with train_subset/test_subset and the
/// validation split applied (Train then excludes the validation examples).
DatasetPtr build_dataset(const ConfigNode& data, Split split);

/// Builds one split without the common subset/validation handling (the factory alone).
DatasetPtr build_raw_dataset(const ConfigNode& data, Split split);

/// Options `normalize` (bool), `mean`, `std` (per-channel lists) as datasets declare them.
/// Validates std > 0 and the channel count; nullopt when normalize is false.
std::optional<Normalization> make_normalization(bool normalize, const std::vector<double>& mean,
                                                const std::vector<double>& std, int64_t channels,
                                                const ConfigNode& data);

}  // namespace shrink

/// Registers a dataset factory `FN` (a DatasetFactory) from a user's executable or plug-in.
#define SHRINK_REGISTER_DATASET(NAME, FN, DESCRIPTION) \
  static const bool SHRINK_UNIQUE_NAME(shrink_dataset_) = (::shrink::dataset_registry().add({NAME, DESCRIPTION, FN, {}}), true)
