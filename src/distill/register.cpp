#include "shrink/compression/builtin.h"
#include "shrink/distill/distillation.h"

namespace shrink::detail {

void register_distill_methods(Registry<MethodFactory>& registry) {
  registry.add({"distillation",
                "Knowledge distillation from a teacher (zoo model with weights, or TorchScript): weighted "
                "cross-entropy, Hinton KD, FitNets hints, attention transfer and similarity-preserving terms",
                [](const MethodSpec& spec, const ConfigNode& entry) -> MethodPtr {
                  return std::make_unique<distill::Distillation>(spec, distill::Distillation::parse_options(entry));
                },
                distill::Distillation::docs()});
}

}  // namespace shrink::detail
