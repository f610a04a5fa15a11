#include "shrink/compression/builtin.h"
#include "shrink/lowrank/low_rank.h"

namespace shrink::detail {

void register_lowrank_methods(Registry<MethodFactory>& registry) {
  registry.add(method_entry<lowrank::LowRankFactorization>(
      "low_rank",
      "Factorize Linear (truncated SVD) or Conv2d layers (Jaderberg, CP, Tucker-2, BN low-rank) before training, "
      "from the current weights or freshly initialized; fixed ranks, energy, VBMF or a global parameter/MAC "
      "target"));
}

}  // namespace shrink::detail
