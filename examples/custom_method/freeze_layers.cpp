// A user-defined compression method in one file: "freeze_layers" keeps the targeted parameters
// fixed for the first `epochs` epochs of training, then lets them train normally.
//
//   compression:
//     - method: freeze_layers
//       targets: ["fc1"]     # modules (all their parameters) or parameters, as globs
//       epochs: 0.5          # frozen for the first half epoch
//
// Built into an executable (train_with_freeze) or into a plug-in (libfreeze_layers.so) that
// `shrink --plugin ./libfreeze_layers.so train recipe.yaml` loads: SHRINK_REGISTER_METHOD at
// the bottom adds it to the method registry when the executable starts or the plug-in loads.
//
// Why not requires_grad(false)? The optimizer is built over every parameter, and momentum and
// weight decay move a parameter even when its gradient is zero. So while frozen the method
//   on_step_begin:            copies the targets' values (one copy of the targets in memory),
//   on_before_optimizer_step: zeroes their gradients (keeps them out of gradient clipping and
//                             of the momentum/Adam statistics),
//   on_after_optimizer_step:  copies the saved values back.
// Cost while frozen: two copies of the targeted tensors per step; nothing once unfrozen.
// Nothing is saved in checkpoints: whether a step is frozen is a pure function of the step
// clock, and the frozen values are the ones in the checkpoint's weights.
#include <shrink/compression/method.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

namespace example {

class FreezeLayers : public shrink::CompressionMethod {
 public:
  struct Options {
    double epochs = 1.0;  ///< frozen for the first `epochs` epochs (fractional allowed)
  };

  static shrink::OptionSchema<Options> schema() {
    shrink::OptionSchema<Options> s;
    s.add("epochs", &Options::epochs,
          "Epochs (fractional allowed) from the start of training during which the targets stay fixed.")
        .min(0);
    return s;
  }

  FreezeLayers(shrink::MethodSpec spec, Options options)
      : CompressionMethod(std::move(spec)), options_(options) {}

  void on_train_begin(shrink::TrainContext& ctx) override {
    // Resolve the targets again: another method's prepare_model may have replaced layers
    // since bind() ran when the experiment was built.
    bind(ctx.model);
    frozen_.clear();
    std::set<std::string> seen;
    auto add = [&](const std::string& name, const torch::Tensor& p) {
      if (seen.insert(name).second) frozen_.push_back(p);
    };
    // A targeted module freezes all its parameters; a targeted parameter freezes itself.
    for (const auto& [path, module] : target_modules_)
      for (const auto& item : module->named_parameters()) add(path + "." + item.key(), item.value());
    for (const auto& [name, p] : target_parameters_) add(name, p);
    saved_.assign(frozen_.size(), torch::Tensor());
    int64_t count = 0;
    for (const auto& p : frozen_) count += p.numel();
    ctx.log(spec_.method + ": " + std::to_string(count) + " parameters frozen for " +
            std::to_string(freeze_steps(ctx)) + " steps");
  }

  void on_step_begin(shrink::TrainContext& ctx) override {
    if (!frozen(ctx)) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < frozen_.size(); ++i) {
      if (saved_[i].defined())
        saved_[i].copy_(frozen_[i]);
      else
        saved_[i] = frozen_[i].detach().clone();
    }
  }

  void on_before_optimizer_step(shrink::TrainContext& ctx) override {
    if (!frozen(ctx)) return;
    for (auto& p : frozen_)
      if (p.grad().defined()) p.grad().zero_();
  }

  void on_after_optimizer_step(shrink::TrainContext& ctx) override {
    if (!frozen(ctx)) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < frozen_.size(); ++i) frozen_[i].copy_(saved_[i]);
    if (ctx.step + 1 == freeze_steps(ctx)) {
      saved_.assign(frozen_.size(), torch::Tensor());  // not needed any more
      ctx.log(spec_.method + ": targets unfrozen after step " + std::to_string(ctx.step + 1));
    }
  }

 private:
  int64_t freeze_steps(const shrink::TrainContext& ctx) const {
    return static_cast<int64_t>(std::llround(options_.epochs * static_cast<double>(ctx.steps_per_epoch)));
  }
  /// Frozen at this step: within the first `epochs` epochs and inside the method's schedule.
  bool frozen(const shrink::TrainContext& ctx) const { return ctx.step < freeze_steps(ctx) && active(ctx); }

  Options options_;
  std::vector<torch::Tensor> frozen_;  ///< parameters kept fixed (aliases of the model's tensors)
  std::vector<torch::Tensor> saved_;   ///< their values at the start of the current step
};

}  // namespace example

SHRINK_REGISTER_METHOD("freeze_layers", example::FreezeLayers,
                       "Keep the targeted layers fixed for the first `epochs` epochs (example plug-in)");
