#include "shrink/compression/builtin.h"

namespace shrink {

OptionSchema<L1Regularization::Options> L1Regularization::schema() {
  OptionSchema<Options> s;
  s.add("strength", &Options::strength, "Coefficient of the L1 penalty sum |w| over the targets.").min(0);
  return s;
}

L1Regularization::L1Regularization(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(options) {}

void L1Regularization::on_before_optimizer_step(TrainContext& ctx) {
  if (!due(ctx)) return;
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : target_parameters_) {
    if (!p.grad().defined()) continue;
    p.grad().add_(p.sign(), options_.strength);
  }
}

void L1Regularization::on_epoch_end(TrainContext& ctx) {
  torch::NoGradGuard no_grad;
  double total = 0;
  for (auto& [name, p] : target_parameters_) total += p.abs().sum().item<double>();
  ctx.metrics["l1_norm"] = total;
}

namespace detail {
void register_builtin_methods(Registry<MethodFactory>& registry) {
  registry.add(method_entry<L1Regularization>(
      "l1_regularization", "L1 penalty on the targeted weights (sparsity-inducing regularizer)"));
  register_pruning_methods(registry);
  register_structure_methods(registry);
  register_sharing_methods(registry);
  register_lowrank_methods(registry);
  register_compact_methods(registry);
  register_distill_methods(registry);
  register_dynamic_methods(registry);
  register_quant_methods(registry);
}
}  // namespace detail

}  // namespace shrink
