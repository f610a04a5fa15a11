#pragma once
// Building `data:` sections without YAML, and reading dataset errors, for the data tests.
#include <string>
#include <utility>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/data/dataset.h"

namespace shrink::test {

/// A `data:` section whose entries are scalars.
inline ConfigNode data_node(const std::vector<std::pair<std::string, std::string>>& entries) {
  auto map = ConfigValue::make_map();
  for (const auto& kv : entries) map->set(kv.first, ConfigValue::make_scalar(kv.second));
  return ConfigNode(map, "data");
}

/// The message of the UserError that building `split` throws, or "(no error)".
inline std::string dataset_error(const ConfigNode& node, Split split) {
  try {
    build_dataset(node, split);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace shrink::test
