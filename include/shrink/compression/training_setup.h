#pragma once
// Implemented by compression methods with set-up that only training needs (distillation's
// teacher: its weights, probe forwards and regressors). build_experiment calls it after
// set_sample_shape when it loads the training data (train, bench), so errors still come before
// anything is written; eval, summary and export of the trained model skip it.
namespace shrink {

class NeedsTrainingSetup {
 public:
  virtual ~NeedsTrainingSetup() = default;
  virtual void setup_for_training() = 0;
};

}  // namespace shrink
