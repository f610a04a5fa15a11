#include "shrink/compression/builtin.h"
#include "shrink/pruning/unstructured.h"

namespace shrink::detail {

void register_pruning_methods(Registry<MethodFactory>& registry) {
  registry.add(method_entry<pruning::UnstructuredPruning>(
      "unstructured_pruning",
      "Prune individual weights (magnitude, random or OBD saliency; per layer or global; one-shot, iterative or "
      "AGP; optional lottery-ticket rewinding)"));
}

}  // namespace shrink::detail
