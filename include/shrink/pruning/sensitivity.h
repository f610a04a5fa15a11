#pragma once
// Pruning sensitivity analysis (Han et al. 2015, Fig. 6; Li et al. 2017, Fig. 2): each target
// layer is pruned alone at each level, the model is evaluated on the test split, and the
// layer's weights are restored exactly before the next evaluation. The rows say how much
// accuracy each layer loses at each sparsity, which guides per-layer pruning rates.
//
//   shrink::pruning::SensitivityOptions o;
//   o.levels = {0.5, 0.9};
//   auto rows = shrink::pruning::run_sensitivity(experiment, o);
//   shrink::pruning::write_sensitivity_csv("sensitivity.csv", rows);
//   shrink::pruning::write_sensitivity_plot("sensitivity.png", rows);
//
// `shrink sensitivity TARGET` runs it on a run directory, a checkpoint or a recipe.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shrink/train/experiment.h"

namespace shrink::pruning {

/// How a layer is pruned at level s.
enum class SensitivityCriterion {
  /// The round(s * numel) weights of smallest magnitude are zeroed (keep_largest(|w|, s)).
  Magnitude,
  /// The round(s * filters) output filters (Conv2d) or output neurons (Linear) of smallest L1
  /// norm are zeroed, with their biases (Li et al. 2017).
  L1Filter,
};

/// "magnitude" or "l1_filter".
const char* criterion_name(SensitivityCriterion criterion);
/// Parses a criterion name; UserError naming `what` (e.g. "--criterion") and the valid names.
SensitivityCriterion parse_criterion(const std::string& name, const std::string& what = "criterion");

struct SensitivityOptions {
  /// Sparsity levels of the pruned layer, each in [0, 1), sorted and unique.
  std::vector<double> levels = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
  /// Globs (`*` matches dots too) over the layers' module paths ("fc1", "layer1.0.conv1") or
  /// weight names ("fc1.weight"). Only Shrink's Conv2d and Linear layers are candidates.
  std::vector<std::string> targets = {"*"};
  SensitivityCriterion criterion = SensitivityCriterion::Magnitude;
  /// Evaluate on the first N test batches only (0: the whole test split).
  int64_t max_batches = 0;
  /// Evaluation batch size (0: the recipe's train.eval_batch_size).
  int64_t batch_size = 0;
  /// Test batches are loaded once and kept (on the experiment's device) when they take at most
  /// this many bytes; otherwise they are loaded again for every evaluation.
  int64_t cache_bytes = int64_t(1) << 30;
};

/// One evaluation. The reference row (nothing pruned) comes first, with layer
/// kReferenceLayer, level 0 and parameters = the weights of all target layers together.
struct SensitivityRow {
  std::string layer;       ///< module path, e.g. "fc1"
  int64_t parameters = 0;  ///< elements of the layer's weight
  double level = 0;        ///< requested sparsity of the layer
  int64_t pruned = 0;      ///< zero weights of the layer during this evaluation
  double top1 = 0, top5 = 0;  ///< percent
  double loss = 0;            ///< mean cross-entropy
  int64_t examples = 0;       ///< test examples evaluated
};

/// The layer name of the reference row (no module path contains parentheses).
inline constexpr const char* kReferenceLayer = "(reference)";

/// A prunable layer: its module path and weight (and bias, undefined when it has none).
struct SensitivityLayer {
  std::string name;
  torch::Tensor weight;
  torch::Tensor bias;
};

/// The Shrink Conv2d/Linear layers of `model` matched by `targets`, in model order. A glob that
/// matches no layer is a UserError naming `what` (e.g. "--targets"), the glob and every layer.
std::vector<SensitivityLayer> sensitivity_layers(torch::nn::Module& model, const std::vector<std::string>& targets,
                                                 const std::string& what = "targets");

/// UserError naming `what` (e.g. "--levels") and the value when a level is outside [0, 1), not a
/// number, or the levels are not strictly increasing; also when there is none.
void validate_levels(const std::vector<double>& levels, const std::string& what = "levels");

/// The pruning mask (1 kept, 0 pruned, shaped like `weight`) for `criterion` at `level`.
torch::Tensor sensitivity_mask(const torch::Tensor& weight, SensitivityCriterion criterion, double level);

/// Called after each evaluation while the layer is still pruned (the reference row: nothing
/// pruned); `done` of `total` evaluations. It may read the model but must not change it.
using SensitivityProgress = std::function<void(const SensitivityRow& row, int64_t done, int64_t total)>;

/// Evaluates `experiment.model` on its test split unpruned, then with each target layer pruned
/// alone at each level (layer-major order). The weights and biases are restored bitwise after
/// each evaluation, also when an evaluation throws. Rows: the reference, then layers x levels.
std::vector<SensitivityRow> run_sensitivity(Experiment& experiment, const SensitivityOptions& options,
                                            const SensitivityProgress& progress = {});

/// CSV text: header `layer,parameters,level,top1,top5,loss`, one line per row.
std::string sensitivity_csv(const std::vector<SensitivityRow>& rows);
/// Writes sensitivity_csv(rows) to `path` atomically.
void write_sensitivity_csv(const std::string& path, const std::vector<SensitivityRow>& rows);

/// A text table: one line per layer, one top-1 column per level, the reference above.
std::string sensitivity_table(const std::vector<SensitivityRow>& rows);

/// Draws top-1 against the layer's sparsity, one line per layer (starting at the reference when
/// level 0 was not evaluated), the reference as a dashed line, with axes, ticks, labels and a
/// legend; writes it as PNG to `path` atomically. `title` defaults to a generic one.
void write_sensitivity_plot(const std::string& path, const std::vector<SensitivityRow>& rows,
                            const std::string& title = "");

}  // namespace shrink::pruning
