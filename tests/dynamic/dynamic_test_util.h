#pragma once
// Helpers shared by the tests of the residual-block methods (stochastic_depth, block_gating).
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/models/model.h"
#include "shrink/train/experiment.h"
#include "shrink/train/trainer.h"
#include "train/train_test_util.h"

namespace shrink::test {

/// A zoo model for `shape` inputs and 10 classes, seeded.
inline ModelPtr model_named(const std::string& name, std::vector<int64_t> shape = {3, 8, 8}) {
  torch::manual_seed(3);
  DataInfo info;
  info.sample_shape = std::move(shape);
  info.num_classes = 10;
  return build_model(ConfigNode(read_yaml_string("name: " + name + "\n", "model.yaml"), "model"), info);
}

/// The message of any exception `f` throws ("" when none).
inline std::string any_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// The recipe entry "method: <method>\n<yaml>" as compression[0] of recipe.yaml, built, bound to
/// `model` and prepared (as the experiment does), as an M (null if it is not one).
template <class M>
std::unique_ptr<M> prepared_method(const std::string& method, const std::string& yaml, const ModelPtr& model) {
  auto m = build_method(
      ConfigNode(read_yaml_string("method: " + method + "\n" + yaml, "recipe.yaml"), "compression[0]"));
  m->bind(model);
  TrainContext ctx;
  ctx.model = model;
  m->prepare_model(ctx);
  return std::unique_ptr<M>(dynamic_cast<M*>(m.release()));
}

/// Buffers and parameters of a module, cloned.
inline std::map<std::string, torch::Tensor> snapshot(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value().detach().clone();
  return out;
}

/// Non-trivial running statistics and affine parameters, so that eval-mode BN matters.
inline void randomize_bn(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (const auto& sub : m.modules(/*include_self=*/true))
    if (auto* bn = sub->as<torch::nn::BatchNorm2dImpl>()) {
      bn->running_mean.uniform_(-0.5, 0.5);
      bn->running_var.uniform_(0.5, 1.5);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
    }
}

/// Expects `prepare()` to throw a ConfigError at `key_path` of recipe.yaml whose message holds `needle`.
inline void expect_recipe_error(const std::function<void()>& prepare, const std::string& yaml,
                                const std::string& key_path, const std::string& needle) {
  try {
    prepare();
    ADD_FAILURE() << yaml << ": no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), key_path) << yaml;
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("recipe.yaml:", 0), 0u) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << yaml << " -> " << what;
  }
}

struct Run {
  Experiment e;
  TrainResult result;
};

/// Trains `recipe` into `dir` quietly (resumed, or stopped after step `stop_at` when > 0).
inline Run train_run(const std::string& recipe, const std::string& dir, bool resume = false, int64_t stop_at = -1) {
  Run r;
  r.e = build_experiment(recipe_node(recipe));
  apply_runtime_settings(r.e.recipe);
  if (stop_at > 0) r.e.callbacks.push_back(std::make_unique<StopAt>(stop_at));
  TrainOptions options;
  options.run_dir = dir;
  options.resume = resume;
  options.quiet = true;
  r.result = train(r.e, options);
  clear_stop_request();
  return r;
}

}  // namespace shrink::test
