#include "shrink/compact/compact_filters.h"
#include "shrink/compression/builtin.h"

namespace shrink::detail {

void register_compact_methods(Registry<MethodFactory>& registry) {
  registry.add(method_entry<compact::CompactFilters>(
      "compact_filters",
      "Rebuild convolutions before training as compact or transferred filters: depthwise separable, fire, CReLU, "
      "multi-bias (MBA) or cyclic (rotated) filters"));
}

}  // namespace shrink::detail
