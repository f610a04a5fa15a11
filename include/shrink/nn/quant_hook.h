#pragma once
// What a Shrink layer (Conv2d, Linear) needs to run quantization-aware, kept out of the layers'
// own headers' concerns: fake quantizers on its weight, its input and its output, registered as
// the children "weight_quantizer", "input_quantizer", "output_quantizer" (so ranges and learned
// scales are saved, moved and cloned with the layer), and an optional kernel that replaces the
// layer's float computation (int8 inference after `shrink export --format int8`).
// The quantizers themselves live in shrink/quant.
#include <ATen/Tensor.h>

#include <functional>
#include <memory>
#include <string>

namespace torch::nn {
class Module;
}

namespace shrink::nn {

/// A fake quantizer module: quantize() returns the quantized-then-dequantized tensor (float),
/// with the gradient its estimator defines.
class TensorQuantizer {
 public:
  virtual ~TensorQuantizer() = default;
  virtual at::Tensor quantize(const at::Tensor& x) = 0;
  /// Bits needed to store `x` quantized: values plus scales, offsets and codebooks.
  virtual double stored_bits(const at::Tensor& x) const = 0;
  /// One line, e.g. "uniform(8 bits, per-channel, symmetric, minmax)".
  virtual std::string describe() const = 0;
};

/// Builds one quantizer module (which implements TensorQuantizer); layers keep the factory in
/// their options so reset() and clone() rebuild the same quantizer.
struct QuantizerFactory {
  std::string description;
  std::function<std::shared_ptr<torch::nn::Module>()> make;
};
using QuantizerFactoryPtr = std::shared_ptr<const QuantizerFactory>;

/// Which quantizers a layer applies (null: none).
struct LayerQuantizers {
  QuantizerFactoryPtr weight, input, output;
  bool any() const { return weight || input || output; }
};

/// Replaces a layer's float computation (the int8 kernels of an exported model).
class LayerKernel {
 public:
  virtual ~LayerKernel() = default;
  virtual at::Tensor forward(const at::Tensor& input) = 0;
};

/// The quantizer children of one layer, as its forward calls them.
struct QuantizerSlots {
  TensorQuantizer* weight = nullptr;
  TensorQuantizer* input = nullptr;
  TensorQuantizer* output = nullptr;

  /// Registers on `layer` the children `quantizers` asks for (the layer's reset() calls it).
  void attach(torch::nn::Module& layer, const LayerQuantizers& quantizers);
  /// Unregisters the children attach() registered.
  void detach(torch::nn::Module& layer);
  bool any() const { return weight || input || output; }
};

}  // namespace shrink::nn
