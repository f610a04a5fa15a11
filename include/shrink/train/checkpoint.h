#pragma once
// Checkpoints: model, optimizer, compression and callback state, RNG state and the trainer's
// clock and history, with the resolved recipe inside so a checkpoint stands on its own.
// Written atomically (temporary file in the same folder, then rename).
#include <torch/torch.h>

#include <string>

#include "shrink/train/experiment.h"

namespace shrink {

struct TrainerState {
  int64_t epoch = 0;             ///< epochs completed
  int64_t step = 0;              ///< optimizer steps completed
  int64_t step_in_epoch = 0;     ///< steps of the current (unfinished) epoch already done
  double best_top1 = -1;
  int64_t best_epoch = -1;
  double epoch_loss_sum = 0;     ///< partial-epoch accumulators (for an exact mid-epoch resume)
  int64_t epoch_correct = 0;
  int64_t epoch_seen = 0;
  double epoch_seconds = 0;
  std::string history_json = "[]";  ///< per-epoch metrics rows so far
};

/// Writes `path` atomically. `optimizer` may be null (e.g. exports).
void save_checkpoint(const std::string& path, const Experiment& experiment, torch::optim::Optimizer* optimizer,
                     const TrainerState& state);

/// The resolved recipe text stored in a checkpoint (UserError naming the file if unreadable).
std::string read_checkpoint_recipe(const std::string& path);

/// Loads method and callback state (call before prepare_experiment).
void load_checkpoint_methods(const std::string& path, Experiment& experiment);

/// Loads model weights (after prepare_experiment), and optimizer and trainer state when given.
/// Restores the CPU RNG state when `state` is given. Errors name the file and the mismatch.
void load_checkpoint_model(const std::string& path, Experiment& experiment,
                           torch::optim::Optimizer* optimizer = nullptr, TrainerState* state = nullptr);

/// Writes text to `path` atomically.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace shrink
