#include <string>

#include "shrink/models/lenet.h"
#include "shrink/models/model.h"

namespace shrink {
namespace {

// Like register_model<C>, but adds to the registry under construction (register_model calls
// model_registry(), which must not be re-entered while its static is being initialized).
template <class C>
void add_builtin(Registry<ModelFactory>& registry, const std::string& name, const std::string& description) {
  registry.add({name, description,
                [](const ConfigNode& node, const DataInfo& data) -> ModelPtr {
                  return std::make_shared<C>(C::schema().parse(node, {"name"}), data);
                },
                C::schema().docs()});
}

void register_builtin_models(Registry<ModelFactory>& registry) {
  add_builtin<LeNet300Impl>(registry, "lenet300",
                            "LeNet-300-100: MLP 784-300-100-10 (266,610 parameters on MNIST)");
  add_builtin<LeNet5Impl>(registry, "lenet5",
                          "Caffe LeNet-5: conv 20 and 50 5x5, fc 500 (431,080 parameters on MNIST)");
}

}  // namespace

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
  return entry.factory(model, data);
}

}  // namespace shrink
