#pragma once
// The training loop: optimizer-step clock, callbacks in recipe order, evaluation, checkpoints
// (last and best, atomic), exact resume, graceful stop on SIGINT/SIGTERM, and the run
// directory (recipe.yaml, metrics.jsonl, metrics.csv, log.txt, summary.json).
#include <stdexcept>
#include <string>

#include "shrink/train/experiment.h"

namespace shrink {

struct TrainOptions {
  std::string run_dir;      ///< created if missing
  bool resume = false;      ///< continue from run_dir/last.pt
  bool quiet = false;       ///< nothing on the terminal (log.txt is still written)
};

struct TrainResult {
  bool interrupted = false;
  std::string run_dir;
  int64_t epochs_completed = 0;
  int64_t steps = 0;
  EvalResult final_eval;  ///< last evaluation of the eval split (validation if any, else test)
  EvalResult test_eval;   ///< the test split after training (= final_eval without validation)
  bool has_validation = false;
  double best_top1 = -1;  ///< best top-1 on the eval split
  int64_t best_epoch = -1;
  double seconds = 0;
  int threads = 0;
};

/// A loss that became NaN or infinite; the last good checkpoint is kept.
class NonFiniteLossError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Asks the trainer to stop after the current step (what SIGINT/SIGTERM do).
void request_stop();
bool stop_requested();
void clear_stop_request();
/// SIGINT and SIGTERM call request_stop(); a second signal kills the process as usual.
void install_stop_signal_handlers();

/// Trains the experiment (prepare_experiment is run here, after method state is restored).
TrainResult train(Experiment& experiment, const TrainOptions& options);

/// One optimizer step on ctx.batch with every callback hook, as the trainer runs it (shared
/// with `shrink bench`). Returns the loss; a non-finite loss returns before backward.
double train_step(TrainContext& ctx, const std::vector<Callback*>& callbacks, torch::optim::Optimizer& optimizer,
                  const torch::nn::functional::CrossEntropyFuncOptions& loss_options, double grad_clip_norm);

/// Tensors the experiment's methods train outside the model (OwnsTrainableTensors), in method
/// order; pass to build_optimizer after prepare_experiment.
std::vector<std::pair<std::string, torch::Tensor>> method_trainable_tensors(const Experiment& experiment);

/// Steps per epoch and total optimizer steps of the recipe on its training split; a batch
/// larger than the split (with drop_last) or a run of no step is a ConfigError at the key.
std::pair<int64_t, int64_t> training_length(const Experiment& experiment);

/// The run directory to use for `output`: itself if absent or empty, else output-2, -3, ...
std::string fresh_run_dir(const std::string& output);

/// Fraction of zero entries over weight tensors (dim > 1) of the model.
double weight_sparsity(const ModelPtr& model);

}  // namespace shrink
