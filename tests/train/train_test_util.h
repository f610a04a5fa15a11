#pragma once
// Small Fashion-MNIST experiments for trainer tests.
#include <functional>
#include <string>

#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/train/experiment.h"
#include "shrink/train/trainer.h"
#include "test_util.h"

namespace shrink::test {

/// A recipe on a Fashion-MNIST subset (LeNet-300-100 by default), as YAML text.
inline std::string small_recipe(const std::string& output, const std::string& extra = "",
                                const std::string& model = "lenet300", int train_subset = 1024,
                                double epochs = 2) {
  return "name: test\nseed: 7\nthreads: 2\noutput: " + output +
         "\ndata:\n  name: fashion_mnist\n  root: " + fashion_mnist_dir() + "\n  train_subset: " +
         std::to_string(train_subset) + "\n  test_subset: 500\nmodel:\n  name: " + model +
         "\ntrain:\n  epochs: " + std::to_string(epochs) +
         "\n  batch_size: 64\n  progress: none\n  optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0005}\n" +
         extra;
}

/// The message of the UserError `f` throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

/// Asks the trainer to stop after optimizer step `step` (1-based), as SIGINT does.
struct StopAt : Callback {
  explicit StopAt(int64_t step) : step_(step) {}
  std::string name() const override { return "stop"; }
  void on_step_end(TrainContext& ctx) override {
    if (ctx.step + 1 == step_) request_stop();
  }
  int64_t step_;
};

inline ConfigNode recipe_node(const std::string& yaml) {
  return ConfigNode(read_yaml_string(yaml, "test.yaml"), "");
}

}  // namespace shrink::test
