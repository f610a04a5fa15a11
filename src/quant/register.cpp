#include "shrink/compression/builtin.h"
#include "shrink/quant/quantization.h"

namespace shrink::detail {

void register_quant_methods(Registry<MethodFactory>& registry) {
  registry.add({"quantization",
                "Quantization-aware training: fake quantizers on weights, inputs and outputs of Conv2d/Linear layers "
                "(uniform 2-8/16 bits with minmax/EMA/percentile ranges, LSQ, PACT, 16-bit stochastic rounding, "
                "BinaryConnect, BWN, XNOR sign activations, ternary, DoReFa), Conv+BN folding",
                [](const MethodSpec& spec, const ConfigNode& entry) -> MethodPtr {
                  return std::make_unique<quant::Quantization>(spec, quant::Quantization::parse_options(entry));
                },
                quant::Quantization::docs()});
}

}  // namespace shrink::detail
