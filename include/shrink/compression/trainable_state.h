#pragma once
// Implemented by compression methods that train tensors of their own outside the model (e.g.
// distillation's hint regressors): the trainer adds them to the optimizer after prepare_model,
// so they take part in param_groups, optimizer state and checkpoints like the model's own.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace shrink {

class OwnsTrainableTensors {
 public:
  virtual ~OwnsTrainableTensors() = default;
  /// Named tensors to optimize (names for param_groups and the log, e.g. "distillation.hint0.weight"),
  /// in a fixed order (the optimizer state is restored by position).
  virtual std::vector<std::pair<std::string, torch::Tensor>> trainable_tensors() const = 0;
};

}  // namespace shrink
