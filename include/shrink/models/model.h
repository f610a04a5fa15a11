#pragma once
// A Shrink model: a torch::nn::Module with a single-tensor forward, built from Shrink's layers
// (include/shrink/nn) so that compression methods can act on them. Registered by name; the
// recipe's `model:` section picks one and sets its options.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shrink/core/registry.h"

namespace shrink {

/// What a model needs to know about its data.
struct DataInfo {
  std::vector<int64_t> sample_shape;  ///< C, H, W of one input
  int64_t num_classes = 0;
};

class ModelImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  virtual torch::Tensor forward(const torch::Tensor& input) = 0;

  /// Named feature taps this model offers (e.g. "stem", "layer1".."layer3", "features",
  /// "logits"), in forward order. Distillation and reports read them after a forward.
  const std::vector<std::string>& tap_names() const { return tap_names_; }
  /// Records these taps in every later forward ({} stops recording). An unknown name is a
  /// UserError listing the model's taps. Recording keeps the tensors (and their graphs) alive
  /// until the next forward, so only what is read should be requested.
  void record_taps(const std::vector<std::string>& names);
  const std::vector<std::string>& recorded_taps() const { return recording_; }
  /// The tensor recorded under `name` by the last forward; UserError when it was not recorded.
  const torch::Tensor& tap(const std::string& name) const;

 protected:
  /// Declares the model's taps (constructor).
  void declare_taps(std::vector<std::string> names) { tap_names_ = std::move(names); }
  /// Marks a tap in forward: records `value` when requested, returns it unchanged. Costs one
  /// branch when nothing is recorded.
  const torch::Tensor& tap_point(const char* name, const torch::Tensor& value) {
    if (!recording_.empty()) store_tap(name, value);
    return value;
  }

 private:
  void store_tap(const char* name, const torch::Tensor& value);
  std::vector<std::string> tap_names_;
  std::vector<std::string> recording_;
  std::vector<std::pair<std::string, torch::Tensor>> taps_;  ///< recorded in the last forward
};
using ModelPtr = std::shared_ptr<ModelImpl>;

/// Builds a model from the recipe's `model:` section (its `name` key picks the entry; the rest
/// are the model's options).
using ModelFactory = std::function<ModelPtr(const ConfigNode& model, const DataInfo& data)>;
Registry<ModelFactory>& model_registry();

/// Keys of `model:` handled for every model (`name`, `weights`); a model's own schema parses
/// the rest.
const std::vector<std::string>& model_common_keys();

/// Builds the model named by `model.name` and loads `model.weights` when given.
ModelPtr build_model(const ConfigNode& model, const DataInfo& data);

namespace detail {
/// Like register_model<C>, for built-ins added while the registry is being built.
template <class C>
void add_builtin_model(Registry<ModelFactory>& registry, const std::string& name, const std::string& description) {
  registry.add({name, description,
                [](const ConfigNode& node, const DataInfo& data) -> ModelPtr {
                  return std::make_shared<C>(C::schema().parse(node, model_common_keys()), data);
                },
                C::schema().docs()});
}
}  // namespace detail

/// Registers a model class `CLASS` (a ModelImpl subclass constructible from `CLASS::Options`
/// and DataInfo, with `static OptionSchema<Options> schema()`).
template <class C>
bool register_model(const std::string& name, const std::string& description) {
  model_registry().add({name, description,
                        [](const ConfigNode& node, const DataInfo& data) -> ModelPtr {
                          return std::make_shared<C>(C::schema().parse(node, model_common_keys()), data);
                        },
                        C::schema().docs()});
  return true;
}

}  // namespace shrink

#define SHRINK_REGISTER_MODEL(NAME, CLASS, DESCRIPTION) \
  static const bool SHRINK_UNIQUE_NAME(shrink_model_) = ::shrink::register_model<CLASS>(NAME, DESCRIPTION)
