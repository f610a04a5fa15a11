#include "shrink/data/dataset.h"

namespace shrink {

namespace detail {
// Built-in datasets, registered explicitly when the registry is first used (src/data/mnist.cpp).
void register_mnist_datasets(Registry<DatasetFactory>& registry);
}  // namespace detail

const char* split_name(Split split) {
  switch (split) {
    case Split::Train: return "train";
    case Split::Test: return "test";
  }
  return "unknown";
}

TensorDataset::TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes)
    : images_(std::move(images)), labels_(std::move(labels)), num_classes_(num_classes) {
  TORCH_CHECK(images_.dim() >= 2, "TensorDataset: images must be [N, ...], got ", images_.sizes());
  TORCH_CHECK(labels_.dim() == 1, "TensorDataset: labels must be [N], got ", labels_.sizes());
  TORCH_CHECK(images_.size(0) == labels_.size(0), "TensorDataset: ", images_.size(0),
              " images but ", labels_.size(0), " labels");
  TORCH_CHECK(labels_.scalar_type() == torch::kInt64, "TensorDataset: labels must be int64, got ",
              labels_.scalar_type());
  TORCH_CHECK(num_classes_ >= 0, "TensorDataset: num_classes must be >= 0, got ", num_classes_);
}

DataInfo TensorDataset::info() const {
  DataInfo info;
  auto sizes = images_.sizes();
  info.sample_shape.assign(sizes.begin() + 1, sizes.end());
  info.num_classes = num_classes_;
  return info;
}

Batch TensorDataset::get_batch(const std::vector<int64_t>& indices) const {
  const int64_t n = size();
  for (int64_t i : indices)
    TORCH_CHECK(i >= 0 && i < n, "TensorDataset::get_batch: index ", i, " out of range [0, ", n, ")");
  // index_select only reads the index tensor, so it may view the caller's vector.
  auto index = torch::from_blob(const_cast<int64_t*>(indices.data()),
                                {static_cast<int64_t>(indices.size())}, torch::kInt64)
                   .to(images_.device());
  return {images_.index_select(0, index), labels_.index_select(0, index)};
}

Registry<DatasetFactory>& dataset_registry() {
  static Registry<DatasetFactory> registry = [] {
    Registry<DatasetFactory> r("dataset");
    detail::register_mnist_datasets(r);
    return r;
  }();
  return registry;
}

DatasetPtr build_dataset(const ConfigNode& data, Split split) {
  if (!data.valid()) throw UserError("no 'data' section: cannot build a dataset");
  if (!data.is_map()) data.fail("expected a map with a 'name' key");
  auto name_node = data["name"];
  const auto& entry = dataset_registry().get(name_node.as<std::string>(), name_node);
  return entry.factory(data, split);
}

}  // namespace shrink
