#pragma once
// Reading recipes: YAML files with `base:` inheritance and `--set key.path=value` overrides,
// merged into one tree that remembers where each value came from; and writing the resolved
// tree back as YAML (itself a valid recipe that reproduces the run).
#include <string>
#include <vector>

#include "shrink/config/node.h"

namespace shrink {

/// Reads one YAML file into a tree; syntax errors are ConfigErrors at the file's line and column.
/// A missing or unreadable file is a UserError naming it.
ConfigValuePtr read_yaml_file(const std::string& path);

/// Reads YAML text (for tests and overrides); `source_name` is used in locations.
ConfigValuePtr read_yaml_string(const std::string& text, const std::string& source_name);

/// Where `base:` names are looked up, in order: the including file's folder, every `configs/`
/// folder in it and its ancestors, the folders in $SHRINK_CONFIG_PATH (colon-separated), and
/// the installed share/shrink/configs.
std::vector<std::string> config_search_path(const std::string& including_file);

/// Merges `overlay` onto `base`: maps merge key by key (overlay wins), everything else is
/// replaced by the overlay. Returns a new tree; inputs are not modified.
ConfigValuePtr merge_trees(const ConfigValuePtr& base, const ConfigValuePtr& overlay);

/// Applies one `key.path[index].key=value` override; the value is parsed as YAML (so lists and
/// maps work: `--set 'train.milestones=[3,6]'`). Errors name the override.
/// A path into a missing map key creates it; an index past the end of a list is an error.
void apply_override(const ConfigValuePtr& root, const std::string& assignment, int index);

/// Loads a recipe: reads it, resolves `base:` recursively (bases merged in order, then the file
/// itself on top; cycles are errors), then applies the overrides in order. The result has no
/// `base:` key.
ConfigNode load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});

/// YAML text of a tree (map order kept; strings quoted where YAML would read them otherwise).
std::string to_yaml(const ConfigValuePtr& root);

}  // namespace shrink
