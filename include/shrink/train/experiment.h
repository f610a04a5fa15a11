#pragma once
// An experiment assembled from a resolved recipe: data, model, compression methods and
// callbacks, all validated before anything is written. Used by train, eval, summary and bench.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/data/dataset.h"
#include "shrink/data/loader.h"
#include "shrink/models/model.h"
#include "shrink/train/callback.h"
#include "shrink/train/recipe.h"

namespace shrink {

enum class DataNeeds { TrainAndTest, TestOnly };

struct Experiment {
  Recipe recipe;
  torch::Device device = torch::kCPU;
  DataSourcePtr train_data;  ///< null with DataNeeds::TestOnly
  DataSourcePtr val_data;    ///< null without data.validation_fraction (or with TestOnly)
  DataSourcePtr test_data;
  DataCommonOptions data_options;  ///< workers, prefetch, splits
  DataInfo data_info;              ///< input shape after the test transforms, class count
  ModelPtr model;
  std::vector<MethodPtr> methods;       ///< recipe order
  std::vector<CallbackPtr> callbacks;   ///< recipe order, after the methods

  /// Methods then callbacks, in the order their hooks run.
  std::vector<Callback*> all_callbacks() const;
};

/// Applies `threads` (0: every core) and the seed; returns the thread count set.
int apply_runtime_settings(const Recipe& recipe);

/// Parses and validates the recipe, loads data, builds the model (seeded) and the methods
/// (targets bound), moves the model to the device. Does not run prepare_model.
Experiment build_experiment(const ConfigNode& root, DataNeeds needs = DataNeeds::TrainAndTest);

/// Runs every method's and callback's prepare_model (after their state is loaded on resume).
void prepare_experiment(Experiment& experiment);

/// Builds the recipe's model alone, as it is before any compression (for comparisons).
ModelPtr build_dense_model(const Experiment& experiment);

struct EvalResult {
  double loss = 0, top1 = 0, top5 = 0;  ///< top-k in percent
  int64_t examples = 0;
};

/// Cross-entropy loss and top-1/top-5 accuracy of `model` on `data` (eval mode, no grad), with
/// `workers` loader threads.
EvalResult evaluate(const ModelPtr& model, const DataSourcePtr& data, int64_t batch_size, torch::Device device,
                    int64_t workers = 0);

/// The loader of the training split as the recipe sets it (batch size, seed, workers).
LoaderOptions train_loader_options(const Experiment& experiment);

}  // namespace shrink
