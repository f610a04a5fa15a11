// The transform pipeline, its registry and the recipe parsing; the built-in transforms are in
// transform_builtins.cpp.
#include "shrink/data/transforms.h"

namespace shrink {

namespace detail {
// Registers the built-ins (src/data/transform_builtins.cpp) when the registry is first used.
void register_builtin_transforms(Registry<TransformFactory>& registry);
}  // namespace detail

namespace {

std::string kind_of(const ConfigNode& node) {
  if (node.is_map()) return "a map";
  if (node.is_sequence()) return "a list";
  if (node.is_scalar()) return "'" + node.text() + "'";
  return "null";
}

/// An empty options map standing where `at` is (a bare name, or `- name:` with no value), so
/// that a missing required option still points at the recipe line.
ConfigNode empty_options(const ConfigNode& at, const std::string& path) {
  return ConfigNode(ConfigValue::make_map(at.location()), path);
}

}  // namespace

torch::Tensor TransformPipeline::apply(torch::Tensor image, Rng& rng) const {
  for (const auto& step : steps_) image = step->apply(image, rng);
  return image;
}

std::vector<int64_t> TransformPipeline::output_shape(std::vector<int64_t> input) const {
  for (const auto& step : steps_) input = step->output_shape(input);
  return input;
}

std::string TransformPipeline::describe() const {
  if (steps_.empty()) return "none";
  std::string out;
  for (size_t i = 0; i < steps_.size(); ++i) out += (i ? " -> " : "") + steps_[i]->describe();
  return out;
}

Registry<TransformFactory>& transform_registry() {
  static Registry<TransformFactory> registry = [] {
    Registry<TransformFactory> r("transform");
    detail::register_builtin_transforms(r);
    return r;
  }();
  return registry;
}

TransformPipeline parse_transforms(const ConfigNode& list) {
  if (!list.valid() || list.is_null()) return {};
  if (!list.is_sequence())
    list.fail("expected a list of transforms such as '- random_crop: {size: 32, padding: 4}' (got " +
              kind_of(list) + ")");
  std::vector<TransformPtr> steps;
  const size_t n = list.size();
  steps.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const ConfigNode item = list.at(i);
    std::string name;
    ConfigNode options;
    if (item.is_scalar()) {  // `- horizontal_flip`
      name = item.text();
      options = empty_options(item, item.path() + "." + name);
    } else if (item.is_map()) {  // `- random_crop: {size: 32}`
      const auto keys = item.keys();
      if (keys.size() != 1) {
        std::string found;
        for (size_t k = 0; k < keys.size(); ++k) found += (k ? ", " : "") + keys[k];
        item.fail("expected one transform per list item, `- name: {options}` (got " +
                  std::to_string(keys.size()) + " keys" + (keys.empty() ? "" : ": " + found) +
                  "); write each transform as its own '- ' item and its options inside {...}");
      }
      name = keys[0];
      options = item[name];
      if (options.is_null()) options = empty_options(item, options.path());
    } else {
      item.fail("expected a transform name or `name: {options}` (got " + kind_of(item) + ")");
    }
    const auto& entry = transform_registry().get(name, item);
    auto step = entry.factory(options);
    if (!step) item.fail("transform '" + name + "' was registered with a factory that returned nothing");
    steps.push_back(std::move(step));
  }
  return TransformPipeline(std::move(steps));
}

TransformPipeline split_transforms(const ConfigNode& data, bool train) {
  if (!data.valid() || data.is_null()) return {};
  const ConfigNode transforms = data.get("transforms");
  if (!transforms.valid() || transforms.is_null()) return {};
  if (!transforms.is_map())
    transforms.fail("expected a map with keys 'train' and 'test', each a list of transforms (got " +
                    kind_of(transforms) + ")");
  transforms.check_keys({"train", "test"});
  return parse_transforms(transforms.get(train ? "train" : "test"));
}

}  // namespace shrink
