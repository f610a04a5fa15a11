#include "shrink/compression/builtin.h"
#include "shrink/dynamic/block_gating.h"
#include "shrink/dynamic/dcn.h"
#include "shrink/dynamic/stochastic_depth.h"

namespace shrink::detail {

void register_dynamic_methods(Registry<MethodFactory>& registry) {
  registry.add(method_entry<dynamic::DcnHint>(
      "dcn_hint", "Dynamic Capacity Networks' hint term (Almahairi et al. 2016): loss += weight * ||f_c - f_f||^2 "
                  "at the patches the dcn model re-processed (fine features as fixed targets)"));
  registry.add(method_entry<dynamic::StochasticDepth>(
      "stochastic_depth",
      "Stochastic depth (Huang et al. 2016): drop each residual block's branch per mini-batch in training with "
      "survival probability decaying linearly from 1 to final_survival; scale the branches by it at test time"));
  registry.add(method_entry<dynamic::BlockGating>(
      "block_gating",
      "ConvNet-AIG gating (Veit & Belongie 2018): a small gate per residual block decides per input whether its "
      "branch runs (Gumbel-softmax straight-through in training, argmax at inference, where skipped inputs "
      "compute nothing of the branch); a loss pulls each block's execution rate to target_rate"));
}

}  // namespace shrink::detail
