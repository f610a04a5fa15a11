#include "shrink/compression/builtin.h"
#include "shrink/sharing/weight_sharing.h"

namespace shrink::detail {

void register_sharing_methods(Registry<MethodFactory>& registry) {
  registry.add(method_entry<sharing::WeightSharing>(
      "weight_sharing",
      "k-means weight sharing per layer (2^bits centroids; linear, density or random init) with centroid "
      "fine-tuning: cluster gradients summed into their centroid (Deep Compression, Han et al. 2016)"));
}

}  // namespace shrink::detail
