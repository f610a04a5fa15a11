#include "shrink/data/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "shrink/config/options.h"
#include "shrink/data/data_errors.h"
#include "shrink/core/rng.h"

namespace shrink {

namespace detail {
// Built-in datasets, registered explicitly when the registry is first used.
void register_mnist_datasets(Registry<DatasetFactory>& registry);
void register_file_datasets(Registry<DatasetFactory>& registry);
}  // namespace detail

const char* split_name(Split split) {
  switch (split) {
    case Split::Train: return "train";
    case Split::Validation: return "validation";
    case Split::Test: return "test";
  }
  return "unknown";
}

void Normalization::apply_(torch::Tensor& images) const {
  const int64_t channel_dim = images.dim() == 4 ? 1 : 0;
  const int64_t c = images.size(channel_dim);
  TORCH_CHECK(mean.size() == std::size_t(c) || mean.size() == 1,
              "normalization has ", mean.size(), " mean values but the images have ", c, " channels");
  if (mean.size() == 1) {
    images.sub_(mean[0]).div_(std[0]);
    return;
  }
  std::vector<int64_t> shape(images.dim(), 1);
  shape[channel_dim] = c;
  auto m = torch::tensor(mean, torch::kFloat32).view(shape).to(images.device());
  auto s = torch::tensor(std, torch::kFloat32).view(shape).to(images.device());
  images.sub_(m).div_(s);
}

Batch Dataset::get_batch(const std::vector<int64_t>& indices) const {
  std::vector<torch::Tensor> images;
  images.reserve(indices.size());
  auto labels = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  auto* label_ptr = labels.data_ptr<int64_t>();
  for (size_t i = 0; i < indices.size(); ++i) {
    auto example = get(indices[i]);
    if (i > 0 && example.image.sizes() != images.front().sizes())
      throw UserError(fmt::format("cannot batch images of different sizes ({} and {}); add a resize or crop "
                                  "transform to data.transforms",
                                  fmt::join(images.front().sizes(), "x"), fmt::join(example.image.sizes(), "x")));
    images.push_back(std::move(example.image));
    label_ptr[i] = example.label;
  }
  return {torch::stack(images), labels};
}

TensorDataset::TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes,
                             std::optional<Normalization> normalization, std::vector<std::string> class_names)
    : images_(std::move(images)),
      labels_(std::move(labels)),
      num_classes_(num_classes),
      normalization_(std::move(normalization)),
      class_names_(std::move(class_names)) {
  TORCH_CHECK(images_.dim() >= 2, "TensorDataset: images must be [N, ...], got ", images_.sizes());
  TORCH_CHECK(labels_.dim() == 1, "TensorDataset: labels must be [N], got ", labels_.sizes());
  TORCH_CHECK(images_.size(0) == labels_.size(0), "TensorDataset: ", images_.size(0),
              " images but ", labels_.size(0), " labels");
  TORCH_CHECK(labels_.scalar_type() == torch::kInt64, "TensorDataset: labels must be int64, got ",
              labels_.scalar_type());
  TORCH_CHECK(images_.scalar_type() == torch::kFloat32 || images_.scalar_type() == torch::kUInt8,
              "TensorDataset: images must be float32 or uint8, got ", images_.scalar_type());
  TORCH_CHECK(num_classes_ >= 0, "TensorDataset: num_classes must be >= 0, got ", num_classes_);
  images_ = images_.contiguous();
}

std::vector<int64_t> TensorDataset::sample_shape() const {
  auto sizes = images_.sizes();
  return {sizes.begin() + 1, sizes.end()};
}

namespace {
torch::Tensor to_unit_float(torch::Tensor images) {
  if (images.scalar_type() == torch::kUInt8) return images.to(torch::kFloat32).div_(255.0);
  return images;
}
}  // namespace

Example TensorDataset::get(int64_t index) const {
  TORCH_CHECK(index >= 0 && index < size(), "TensorDataset::get: index ", index, " out of range [0, ", size(), ")");
  auto image = images_[index];
  image = images_.scalar_type() == torch::kUInt8 ? to_unit_float(image) : image.clone();
  return {image, labels_.data_ptr<int64_t>()[index]};
}

Batch TensorDataset::get_batch(const std::vector<int64_t>& indices) const {
  const int64_t n = size();
  for (int64_t i : indices)
    TORCH_CHECK(i >= 0 && i < n, "TensorDataset::get_batch: index ", i, " out of range [0, ", n, ")");
  // index_select only reads the index tensor, so it may view the caller's vector.
  auto index = torch::from_blob(const_cast<int64_t*>(indices.data()),
                                {static_cast<int64_t>(indices.size())}, torch::kInt64)
                   .to(images_.device());
  return {to_unit_float(images_.index_select(0, index)), labels_.index_select(0, index)};
}

SubsetDataset::SubsetDataset(DatasetPtr base, std::vector<int64_t> indices)
    : base_(std::move(base)), indices_(std::move(indices)) {
  TORCH_CHECK(base_, "SubsetDataset: null base dataset");
  for (int64_t i : indices_)
    TORCH_CHECK(i >= 0 && i < base_->size(), "SubsetDataset: index ", i, " out of range [0, ", base_->size(), ")");
}

Example SubsetDataset::get(int64_t index) const {
  TORCH_CHECK(index >= 0 && index < size(), "SubsetDataset::get: index ", index, " out of range [0, ", size(), ")");
  return base_->get(indices_[index]);
}

Batch SubsetDataset::get_batch(const std::vector<int64_t>& indices) const {
  std::vector<int64_t> mapped(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    TORCH_CHECK(indices[i] >= 0 && indices[i] < size(), "SubsetDataset::get_batch: index ", indices[i],
                " out of range [0, ", size(), ")");
    mapped[i] = indices_[indices[i]];
  }
  return base_->get_batch(mapped);
}

Registry<DatasetFactory>& dataset_registry() {
  static Registry<DatasetFactory> registry = [] {
    Registry<DatasetFactory> r("dataset");
    detail::register_mnist_datasets(r);
    detail::register_file_datasets(r);
    return r;
  }();
  return registry;
}

const std::vector<std::string>& dataset_common_keys() {
  static const std::vector<std::string> keys = {"name",          "transforms",       "workers",
                                                "prefetch",      "validation_fraction", "validation_seed",
                                                "train_subset",  "test_subset"};
  return keys;
}

namespace {
OptionSchema<DataCommonOptions> common_schema() {
  using O = DataCommonOptions;
  OptionSchema<O> s;
  s.add("workers", &O::workers,
        "Loader threads that prepare batches ahead of training (0: load in the training thread). The batches "
        "are the same for any value.")
      .range(0, 64);
  s.add("prefetch", &O::prefetch, "Batches prepared ahead per worker.").range(1, 64);
  s.add("validation_fraction", &O::validation_fraction,
        "Fraction of the training examples held out as a validation split (chosen with validation_seed); "
        "evaluation during training then uses it, and the test split is evaluated at the end.")
      .range(0, 0.9);
  s.add("validation_seed", &O::validation_seed, "Seed of the validation split's random choice.").min(0);
  s.add("train_subset", &O::train_subset, "Use only the first N training examples (file order; 0 = all).").min(0);
  s.add("test_subset", &O::test_subset, "Use only the first N test examples (file order; 0 = all).").min(0);
  return s;
}

}  // namespace

DataCommonOptions parse_data_common_options(const ConfigNode& data) {
  // The dataset's own keys are checked by its factory; here only the common ones are read.
  DataCommonOptions out;
  auto schema = common_schema();
  std::vector<std::string> others;
  for (const auto& k : data.keys()) {
    bool common = false;
    for (const auto& doc : schema.docs()) common |= doc.name == k;
    if (!common) others.push_back(k);
  }
  schema.parse_into(data, out, others);
  return out;
}

std::vector<OptionDoc> data_common_option_docs() { return common_schema().docs(); }

DatasetPtr build_raw_dataset(const ConfigNode& data, Split split) {
  if (!data.valid()) throw UserError("no 'data' section: cannot build a dataset");
  if (!data.is_map()) data.fail("expected a map with a 'name' key");
  auto name_node = data["name"];
  const auto& entry = dataset_registry().get(name_node.as<std::string>(), name_node);
  return entry.factory(data, split == Split::Validation ? Split::Train : split);
}

DatasetPtr build_dataset(const ConfigNode& data, Split split) {
  if (!data.valid()) throw UserError("no 'data' section: cannot build a dataset");
  if (!data.is_map()) data.fail("expected a map with a 'name' key");
  const auto common = parse_data_common_options(data);
  auto dataset = build_raw_dataset(data, split);
  const bool from_train = split != Split::Test;
  const int64_t subset = from_train ? common.train_subset : common.test_subset;
  if (subset > 0) {
    if (subset > dataset->size())
      data[from_train ? "train_subset" : "test_subset"].fail(
          fmt::format("must be at most {}, the size of the {} split (got {})", dataset->size(),
                      from_train ? "train" : "test", subset));
    std::vector<int64_t> first(subset);
    std::iota(first.begin(), first.end(), 0);
    dataset = std::make_shared<SubsetDataset>(dataset, std::move(first));
  }
  if (!from_train || common.validation_fraction <= 0) {
    if (split == Split::Validation) data.fail("no validation split: set data.validation_fraction");
    return dataset;
  }
  // A seeded shuffle of the training examples; the first `held` become the validation split.
  const int64_t n = dataset->size();
  const int64_t held = static_cast<int64_t>(common.validation_fraction * n + 0.5);
  if (held < 1 || held >= n)
    data["validation_fraction"].fail(fmt::format("{} of {} training examples leaves no {} examples",
                                                 common.validation_fraction, n, held < 1 ? "validation" : "training"));
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  Rng rng(static_cast<uint64_t>(common.validation_seed));
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.integer(0, i)]);
  std::vector<int64_t> chosen(split == Split::Validation ? order.begin() : order.begin() + held,
                              split == Split::Validation ? order.begin() + held : order.end());
  std::sort(chosen.begin(), chosen.end());  // file order within each split
  return std::make_shared<SubsetDataset>(dataset, std::move(chosen));
}

[[noreturn]] void fail_at_key(const ConfigNode& data, const std::string& key, const std::string& message) {
  if (data.valid() && data.has(key)) data[key].fail(message);
  if (data.valid()) data.fail(message);
  throw UserError(message);
}

std::optional<Normalization> make_normalization(bool normalize, const std::vector<double>& mean,
                                                const std::vector<double>& std, int64_t channels,
                                                const ConfigNode& data) {
  if (!normalize) return std::nullopt;
  auto where = [&](const char* key) { return data.valid() && data.has(key) ? data[key] : data; };
  auto check = [&](const std::vector<double>& v, const char* key) {
    if (v.size() != 1 && static_cast<int64_t>(v.size()) != channels) {
      auto msg = fmt::format("needs 1 or {} values (one per channel), got {}", channels, v.size());
      if (data.valid()) where(key).fail(msg);
      throw UserError(std::string(key) + ": " + msg);
    }
  };
  check(mean, "mean");
  check(std, "std");
  for (double s : std)
    if (!(s > 0)) {
      auto msg = fmt::format("must be positive (got {})", s);
      if (data.valid()) where("std").fail(msg);
      throw UserError("std: " + msg);
    }
  return Normalization{mean, std};
}

}  // namespace shrink
