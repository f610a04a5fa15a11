#pragma once
// Optimizers and learning-rate schedules, registered by name. The schedule is a pure function
// of the optimizer-step clock, so resuming needs only the step.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shrink/core/registry.h"
#include "shrink/models/model.h"
#include "shrink/train/recipe.h"

namespace shrink {

/// Builds an optimizer over `groups` (each with options already set) from `train.optimizer`.
/// The factory returns default options for the groups to copy, and the optimizer.
struct OptimizerBuilder {
  /// Default options from the recipe section (lr, weight decay, ...).
  std::function<std::unique_ptr<torch::optim::OptimizerOptions>(const ConfigNode&)> options;
  /// The optimizer over groups whose options are clones of those defaults (edited per group).
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::optim::OptimizerParamGroup>,
                                                         std::unique_ptr<torch::optim::OptimizerOptions>)>
      make;
};
Registry<OptimizerBuilder>& optimizer_registry();

/// Weight decay of an optimizer's options (SGD, Adam, AdamW).
double get_weight_decay(const torch::optim::OptimizerOptions& options);
void set_weight_decay(torch::optim::OptimizerOptions& options, double value);

/// Builds the optimizer for `model` with per-parameter-group options; returns it and the base
/// learning rate of each group (schedules multiply these).
struct BuiltOptimizer {
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::vector<double> base_lrs;
  std::vector<std::string> group_names;  ///< for the log
};
/// `extra`: named tensors trained beside the model's (methods' own, see
/// compression/trainable_state.h); they join groups like the model's parameters, after them.
BuiltOptimizer build_optimizer(const ModelPtr& model, const TrainConfig& train,
                               const std::vector<std::pair<std::string, torch::Tensor>>& extra = {});

/// Learning-rate factor as a function of the step clock.
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  /// Multiplier of the base lr at optimizer step `step` (0-based).
  virtual double factor(int64_t step, int64_t steps_per_epoch, int64_t total_steps) const = 0;
};

using ScheduleFactory = std::function<std::unique_ptr<LrSchedule>(const ConfigNode&)>;
Registry<ScheduleFactory>& schedule_registry();

/// `train.lr_schedule` (default: constant).
std::unique_ptr<LrSchedule> build_schedule(const ConfigNode& node);

}  // namespace shrink
