#include <string>

#include "shrink/models/lenet.h"
#include "shrink/models/model.h"
#include "shrink/models/resnet.h"
#include "shrink/models/weights.h"

namespace shrink {
namespace detail {
void register_zoo_models(Registry<ModelFactory>& registry);  // zoo_registry.cpp
}  // namespace detail
namespace {

using detail::add_builtin_model;

void register_builtin_models(Registry<ModelFactory>& registry) {
  add_builtin_model<LeNet300Impl>(registry, "lenet300",
                            "LeNet-300-100: MLP 784-300-100-10 (266,610 parameters on MNIST)");
  add_builtin_model<LeNet5Impl>(registry, "lenet5",
                          "Caffe LeNet-5: conv 20 and 50 5x5, fc 500 (431,080 parameters on MNIST)");
  detail::register_zoo_models(registry);
  detail::register_resnet_models(registry);
}

}  // namespace

const std::vector<std::string>& model_common_keys() {
  static const std::vector<std::string> keys = {"name", "weights"};
  return keys;
}

Registry<ModelFactory>& model_registry() {
  static Registry<ModelFactory> registry = [] {
    Registry<ModelFactory> r("model");
    register_builtin_models(r);
    return r;
  }();
  return registry;
}

ModelPtr build_model(const ConfigNode& model, const DataInfo& data) {
  if (!model.valid()) throw UserError("no 'model' section: cannot build a model");
  if (!model.is_map()) model.fail("expected a map with a 'name' key");
  auto name_node = model["name"];
  const auto& entry = model_registry().get(name_node.as<std::string>(), name_node);
  auto built = entry.factory(model, data);
  if (model.has("weights")) load_weights(*built, model["weights"]);
  return built;
}

}  // namespace shrink
