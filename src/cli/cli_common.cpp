#include "cli_common.h"

#include <filesystem>

#include "shrink/config/recipe_file.h"
#include "shrink/report/summary.h"
#include "shrink/train/checkpoint.h"

namespace fs = std::filesystem;

namespace shrink::cli {

bool is_recipe_file(const std::string& path) {
  auto ext = fs::path(path).extension().string();
  return ext == ".yaml" || ext == ".yml";
}

std::string checkpoint_in(const std::string& path) {
  if (fs::is_directory(path)) {
    auto last = (fs::path(path) / "last.pt").string();
    if (!fs::exists(last)) throw UserError("'" + path + "' is a folder without last.pt (not a run directory?)");
    return last;
  }
  if (!fs::exists(path)) throw UserError("'" + path + "' does not exist");
  return path;
}

ConfigNode recipe_of_checkpoint(const std::string& checkpoint, const std::vector<std::string>& overrides) {
  auto root = read_yaml_string(read_checkpoint_recipe(checkpoint), checkpoint + " (recipe)");
  for (size_t i = 0; i < overrides.size(); ++i) apply_override(root, overrides[i], static_cast<int>(i));
  return ConfigNode(root, "");
}

Experiment load_experiment(const ConfigNode& recipe, const std::string& checkpoint, DataNeeds needs) {
  auto e = build_experiment(recipe, needs);
  apply_runtime_settings(e.recipe);
  if (!checkpoint.empty()) load_checkpoint_methods(checkpoint, e);
  prepare_experiment(e);
  if (!checkpoint.empty()) load_checkpoint_model(checkpoint, e);
  return e;
}

std::pair<std::string, std::string> summary_of(Experiment& e) {
  auto dense = summarize(build_dense_model(e), e.data_info.sample_shape);
  auto compressed = summarize(e.model, e.data_info.sample_shape);
  auto cmp = compare(dense, compressed);
  return {summary_table(compressed, cmp), summary_json(compressed, cmp)};
}

std::pair<ConfigNode, std::string> recipe_or_run(const std::string& target, const std::vector<std::string>& overrides) {
  if (is_recipe_file(target)) return {load_recipe(target, overrides), ""};
  auto ckpt = checkpoint_in(target);
  return {recipe_of_checkpoint(ckpt, overrides), ckpt};
}

}  // namespace shrink::cli
