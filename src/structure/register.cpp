#include "shrink/compression/builtin.h"
#include "shrink/structure/structured_pruning.h"

namespace shrink::detail {

void register_structure_methods(Registry<MethodFactory>& registry) {
  registry.add(method_entry<structure::FilterPruning>(
      "filter_pruning",
      "Structured pruning of whole channels (L1 filters, Li et al. 2017; BN scales, network slimming), then "
      "thinning: smaller convs, BatchNorms and following layers, residual groups tied"));
  registry.add(method_entry<structure::GroupLasso>(
      "group_lasso", "Group lasso over filters or channels of conv/linear weights (SSL, Wen et al. 2016)"));
}

}  // namespace shrink::detail
