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
};
using ModelPtr = std::shared_ptr<ModelImpl>;

/// Builds a model from the recipe's `model:` section (its `name` key picks the entry; the rest
/// are the model's options).
using ModelFactory = std::function<ModelPtr(const ConfigNode& model, const DataInfo& data)>;
Registry<ModelFactory>& model_registry();

/// Builds the model named by `model.name`.
ModelPtr build_model(const ConfigNode& model, const DataInfo& data);

/// Registers a model class `CLASS` (a ModelImpl subclass constructible from `CLASS::Options`
/// and DataInfo, with `static OptionSchema<Options> schema()`).
template <class C>
bool register_model(const std::string& name, const std::string& description) {
  model_registry().add({name, description,
                        [](const ConfigNode& node, const DataInfo& data) -> ModelPtr {
                          return std::make_shared<C>(C::schema().parse(node, {"name"}), data);
                        },
                        C::schema().docs()});
  return true;
}

}  // namespace shrink

#define SHRINK_REGISTER_MODEL(NAME, CLASS, DESCRIPTION) \
  static const bool SHRINK_UNIQUE_NAME(shrink_model_) = ::shrink::register_model<CLASS>(NAME, DESCRIPTION)
