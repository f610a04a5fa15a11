#pragma once
// Built-in compression methods, registered explicitly when the method registry is first used.
#include "shrink/compression/method.h"

namespace shrink {

/// L1 penalty strength * sum |w| on the targeted parameters, applied as its (sub)gradient
/// strength * sign(w) after backward, so no autograd graph is built for it.
class L1Regularization : public CompressionMethod {
 public:
  struct Options {
    double strength = 1e-4;  ///< coefficient of sum |w|
  };
  static OptionSchema<Options> schema();
  L1Regularization(MethodSpec spec, Options options);
  void on_before_optimizer_step(TrainContext& ctx) override;
  void on_epoch_end(TrainContext& ctx) override;

 private:
  Options options_;
};

namespace detail {
/// Every built-in method; calls the per-concern functions below.
void register_builtin_methods(Registry<MethodFactory>& registry);
void register_pruning_methods(Registry<MethodFactory>& registry);    ///< src/pruning/register.cpp
void register_structure_methods(Registry<MethodFactory>& registry);  ///< src/structure/register.cpp
void register_sharing_methods(Registry<MethodFactory>& registry);    ///< src/sharing/register.cpp
void register_lowrank_methods(Registry<MethodFactory>& registry);    ///< src/lowrank/register.cpp
void register_compact_methods(Registry<MethodFactory>& registry);    ///< src/compact/register.cpp
void register_distill_methods(Registry<MethodFactory>& registry);    ///< src/distill/register.cpp
void register_dynamic_methods(Registry<MethodFactory>& registry);    ///< src/dynamic/register.cpp
void register_quant_methods(Registry<MethodFactory>& registry);      ///< src/quant/register.cpp
}  // namespace detail

}  // namespace shrink
