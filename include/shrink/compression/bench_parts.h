#pragma once
// Implemented by compression methods whose training step includes work worth timing on its own
// in `shrink bench` (e.g. distillation's teacher forward), so the step can be compared with
// the student step plus those parts.
#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace shrink {

class HasBenchParts {
 public:
  virtual ~HasBenchParts() = default;
  /// Named pieces of the step, each run on a training batch's inputs (already on the device).
  virtual std::vector<std::pair<std::string, std::function<void(const torch::Tensor& inputs)>>> bench_parts() = 0;
};

}  // namespace shrink
