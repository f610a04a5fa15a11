#pragma once
// Datasets for classification. Registered by name; the recipe's `data:` section picks one
// (`name`) and sets its options. Small datasets live in memory as tensors (TensorDataset).
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shrink/core/registry.h"
#include "shrink/models/model.h"

namespace shrink {

enum class Split { Train, Test };
const char* split_name(Split split);

struct Batch {
  torch::Tensor inputs;   ///< float [B, C, H, W]
  torch::Tensor targets;  ///< int64 [B]
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual DataInfo info() const = 0;
  /// The examples at `indices`, in that order.
  virtual Batch get_batch(const std::vector<int64_t>& indices) const = 0;
};
using DatasetPtr = std::shared_ptr<Dataset>;

/// Images [N, C, H, W] float and labels [N] int64 held in memory.
class TensorDataset : public Dataset {
 public:
  TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes);
  int64_t size() const override { return images_.size(0); }
  DataInfo info() const override;
  Batch get_batch(const std::vector<int64_t>& indices) const override;
  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }

 private:
  torch::Tensor images_, labels_;
  int64_t num_classes_;
};

using DatasetFactory = std::function<DatasetPtr(const ConfigNode& data, Split split)>;
Registry<DatasetFactory>& dataset_registry();

/// Builds the split of the dataset named by `data.name`.
DatasetPtr build_dataset(const ConfigNode& data, Split split);

}  // namespace shrink

/// Registers a dataset factory `FN` (a DatasetFactory) from a user's executable or plug-in.
#define SHRINK_REGISTER_DATASET(NAME, FN, DESCRIPTION) \
  static const bool SHRINK_UNIQUE_NAME(shrink_dataset_) = (::shrink::dataset_registry().add({NAME, DESCRIPTION, FN, {}}), true)
