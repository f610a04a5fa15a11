#pragma once
// Multi-stage training: `train.stages` splits a run into consecutive stages, each with its own
// length and, when given, its own optimizer and lr schedule (fresh optimizer state at the
// boundary; the schedule runs over the stage's own steps). Methods act on epoch windows, so a
// stage-specific loss (e.g. a FitNets hint stage) sets its term's start_epoch/end_epoch to the
// stage's boundaries.
//
//   train:
//     stages:
//       - {name: hint, epochs: 1, optimizer: {name: adam, lr: 0.001}}
//       - {name: kd, epochs: 9}            # train.optimizer and train.lr_schedule
#include <cstdint>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/config/options.h"
#include "shrink/train/recipe.h"

namespace shrink {

struct TrainStage {
  std::string name;
  double epochs = 0;
  ConfigNode optimizer;    ///< the stage's optimizer section, or train.optimizer
  ConfigNode lr_schedule;  ///< the stage's lr schedule section, or train.lr_schedule
  int64_t begin_step = 0, end_step = 0;  ///< [begin, end) in optimizer steps
  ConfigNode where;        ///< the recipe entry (for errors)
};

/// `train.stages` of the recipe with their step ranges (empty without stages). Errors at the key:
/// a missing or duplicate name, epochs <= 0, unknown keys, a stage of no step. The stages' sum
/// replaces train.epochs (which a base config may set).
std::vector<TrainStage> parse_stages(const Recipe& recipe, int64_t steps_per_epoch);

/// The stage holding optimizer step `step` (the last one past the end).
const TrainStage& stage_at(const std::vector<TrainStage>& stages, int64_t step);

/// The documentation row of `train.stages` (docs/recipes.md and `shrink list`).
OptionDoc stages_doc();

}  // namespace shrink
