#include "shrink/train/stages.h"

#include <cmath>
#include <set>

namespace shrink {

std::vector<TrainStage> parse_stages(const Recipe& recipe, int64_t steps_per_epoch) {
  std::vector<TrainStage> stages;
  auto train = recipe.root.get("train");
  if (!train.valid() || !train.is_map() || !train.has("stages")) return stages;
  auto list = train["stages"];
  if (!list.is_sequence() || list.size() == 0) list.fail("expected a non-empty list of stages ({name, epochs, ...})");
  std::set<std::string> names;
  int64_t step = 0;
  double cumulative = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    auto node = list.at(i);
    if (!node.is_map()) node.fail("expected a map {name, epochs, optimizer, lr_schedule}");
    node.check_keys({"name", "epochs", "optimizer", "lr_schedule"});
    TrainStage s;
    s.where = node;
    s.name = node["name"].as<std::string>();
    if (!names.insert(s.name).second) node["name"].fail("stage '" + s.name + "' is already defined");
    s.epochs = node["epochs"].as<double>();
    if (!(s.epochs > 0)) node["epochs"].fail("must be > 0");
    s.optimizer = node.has("optimizer") ? node["optimizer"] : recipe.train.optimizer;
    s.lr_schedule = node.has("lr_schedule") ? node["lr_schedule"] : recipe.train.lr_schedule;
    // Boundaries from the cumulative epochs, so rounding does not add up over stages.
    cumulative += s.epochs;
    s.begin_step = step;
    s.end_step = static_cast<int64_t>(std::llround(cumulative * steps_per_epoch));
    if (s.end_step == s.begin_step)
      node["epochs"].fail("gives no optimizer step (" + std::to_string(steps_per_epoch) + " steps per epoch)");
    step = s.end_step;
    stages.push_back(std::move(s));
  }
  return stages;
}

const TrainStage& stage_at(const std::vector<TrainStage>& stages, int64_t step) {
  for (const auto& s : stages)
    if (step < s.end_step) return s;
  return stages.back();
}

OptionDoc stages_doc() {
  return {"stages", "list", "[]",
          "Consecutive stages `{name, epochs, optimizer, lr_schedule}`; a stage's optimizer (fresh state) and lr "
          "schedule (over its own steps) default to train.optimizer and train.lr_schedule. Replaces train.epochs."};
}

}  // namespace shrink
