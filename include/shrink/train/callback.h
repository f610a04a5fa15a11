#pragma once
// Training callbacks: every hook has a no-op default. Compression methods are callbacks
// (include/shrink/compression/method.h); users may also register plain callbacks by name.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "shrink/core/registry.h"
#include "shrink/data/dataset.h"
#include "shrink/models/model.h"

namespace shrink {

/// The trainer's state as callbacks see it. The clock counts optimizer steps.
struct TrainContext {
  ModelPtr model;
  torch::optim::Optimizer* optimizer = nullptr;  ///< null in prepare_model
  torch::Device device = torch::kCPU;
  int64_t epoch = 0;            ///< current epoch, 0-based
  int64_t step = 0;             ///< optimizer steps completed before the current one
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  double lr = 0.0;              ///< learning rate of the current step
  const Batch* batch = nullptr; ///< current batch (on device) during a step
  torch::Tensor outputs;        ///< model outputs of the current step
  /// The recipe's cross-entropy of the current step, before any method added terms (on_loss
  /// receives it plus the terms of the methods before it).
  torch::Tensor task_loss;
  /// Extra per-epoch metrics (e.g. "sparsity"); written to metrics.jsonl/csv.
  std::map<std::string, double> metrics;
  /// The index-th batch of training data in a fixed order (no shuffling, train transforms with a
  /// fixed seed), on the device: for saliency and Fisher estimates or calibration. Unset outside
  /// training (e.g. in prepare_model).
  std::function<Batch(int64_t index)> calibration_batch;
  /// Writes a line to the run's log (and the terminal).
  std::function<void(const std::string&)> log = [](const std::string&) {};

  /// Fractional epoch at the current step.
  double epoch_progress() const {
    return steps_per_epoch > 0 ? static_cast<double>(step) / steps_per_epoch : 0.0;
  }
};

class Callback {
 public:
  virtual ~Callback() = default;
  virtual std::string name() const = 0;

  /// Before the optimizer is built: may replace layers or otherwise change the model.
  virtual void prepare_model(TrainContext&) {}
  virtual void on_train_begin(TrainContext&) {}
  virtual void on_epoch_begin(TrainContext&) {}
  virtual void on_step_begin(TrainContext&) {}
  /// May add loss terms; returns the loss to back-propagate.
  virtual torch::Tensor on_loss(TrainContext&, torch::Tensor loss) { return loss; }
  /// After backward, before the optimizer step (gradient edits).
  virtual void on_before_optimizer_step(TrainContext&) {}
  /// After the optimizer step (e.g. re-apply masks: momentum and weight decay revive weights).
  virtual void on_after_optimizer_step(TrainContext&) {}
  virtual void on_step_end(TrainContext&) {}
  virtual void on_epoch_end(TrainContext&) {}
  virtual void on_train_end(TrainContext&) {}

  /// State kept in checkpoints (written under this callback's own prefix).
  virtual void save_state(torch::serialize::OutputArchive&) const {}
  virtual void load_state(torch::serialize::InputArchive&) {}
};
using CallbackPtr = std::unique_ptr<Callback>;

using CallbackFactory = std::function<CallbackPtr(const ConfigNode& entry)>;
Registry<CallbackFactory>& callback_registry();

}  // namespace shrink

/// Registers a callback factory `FN` (a CallbackFactory) from a user's executable or plug-in;
/// recipes use it as `callbacks: [{name: NAME, ...}]`.
#define SHRINK_REGISTER_CALLBACK(NAME, FN, DESCRIPTION) \
  static const bool SHRINK_UNIQUE_NAME(shrink_callback_) = (::shrink::callback_registry().add({NAME, DESCRIPTION, FN, {}}), true)
