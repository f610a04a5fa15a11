#pragma once
// The top level of a recipe, parsed and validated before anything runs.
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/config/options.h"

namespace shrink {

/// Per-parameter-group overrides: parameters whose names match `match` (globs) get these
/// options instead of the optimizer's defaults (e.g. no weight decay on biases and BatchNorm).
struct ParamGroupConfig {
  std::vector<std::string> match;
  double weight_decay = -1;  ///< -1: keep the optimizer's
  double lr_scale = 1.0;     ///< multiplies the optimizer's lr
  ConfigNode where;          ///< the recipe entry (for errors)
};

struct TrainConfig {
  double epochs = 10;              ///< may be fractional (ends mid-epoch)
  int64_t batch_size = 64;
  int64_t eval_batch_size = 500;
  bool drop_last = true;           ///< drop the last incomplete training batch
  double label_smoothing = 0.0;
  double grad_clip_norm = 0.0;     ///< 0: no clipping
  int64_t eval_every = 1;          ///< evaluate every N epochs (and after the last)
  std::string progress = "auto";   ///< auto (bar on a terminal), bar, plain, none
  ConfigNode optimizer;            ///< `train.optimizer` (name + options)
  ConfigNode lr_schedule;          ///< `train.lr_schedule` (name + options)
  std::vector<ParamGroupConfig> param_groups;

  static OptionSchema<TrainConfig> schema();
};

struct Recipe {
  std::string name = "experiment";
  int64_t seed = 0;
  std::string device = "cpu";
  int64_t threads = 0;  ///< 0: every core
  std::string output;   ///< run directory; default runs/<name>
  ConfigNode data;      ///< `data` (name + options), parsed by the dataset
  ConfigNode model;     ///< `model` (name + options), parsed by the model
  TrainConfig train;
  std::vector<ConfigNode> compression;  ///< entries, parsed by the methods
  std::vector<ConfigNode> callbacks;    ///< entries, parsed by the callbacks
  ConfigNode root;                      ///< the whole resolved recipe

  /// Checks the top level and `train`; sections owned by registered things are checked when
  /// those are built (build_experiment).
  static Recipe parse(const ConfigNode& root);
  static const std::vector<std::string>& top_level_keys();
  static std::vector<OptionDoc> top_level_docs();
};

}  // namespace shrink
