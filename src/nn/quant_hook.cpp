#include "shrink/nn/quant_hook.h"

#include <torch/torch.h>

namespace shrink::nn {

namespace {
TensorQuantizer* add(torch::nn::Module& layer, const char* name, const QuantizerFactoryPtr& factory) {
  if (!factory) return nullptr;
  TORCH_CHECK(factory->make, "shrink::nn: quantizer factory '", factory->description, "' has no make()");
  auto module = factory->make();
  auto* quantizer = dynamic_cast<TensorQuantizer*>(module.get());
  TORCH_CHECK(quantizer != nullptr, "shrink::nn: quantizer '", factory->description,
              "' does not implement shrink::nn::TensorQuantizer");
  layer.register_module(name, module);
  return quantizer;
}
}  // namespace

void QuantizerSlots::attach(torch::nn::Module& layer, const LayerQuantizers& quantizers) {
  weight = add(layer, "weight_quantizer", quantizers.weight);
  input = add(layer, "input_quantizer", quantizers.input);
  output = add(layer, "output_quantizer", quantizers.output);
}

void QuantizerSlots::detach(torch::nn::Module& layer) {
  if (weight) layer.unregister_module("weight_quantizer");
  if (input) layer.unregister_module("input_quantizer");
  if (output) layer.unregister_module("output_quantizer");
  weight = input = output = nullptr;
}

}  // namespace shrink::nn
