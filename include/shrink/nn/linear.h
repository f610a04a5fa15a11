#pragma once
// shrink::nn::Linear: y = x W^T + b, like torch::nn::Linear (same options, parameter names and
// default initialization), plus the cost it reports for `shrink summary`. Compression methods
// act on Shrink's layers, so models are built from these rather than from torch::nn::Linear.
#include <torch/torch.h>

#include "shrink/nn/layer.h"
#include "shrink/nn/quant_hook.h"

namespace shrink::nn {

/// Options for `Linear`.
///
/// Example:
/// ```
/// shrink::nn::Linear fc(shrink::nn::LinearOptions(784, 300).bias(false));
/// ```
struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  /// size of each input sample
  TORCH_ARG(int64_t, in_features);
  /// size of each output sample
  TORCH_ARG(int64_t, out_features);
  /// If false, the layer learns no additive bias. Default: true
  TORCH_ARG(bool, bias) = true;
  /// If true, the layer has a `weight_mask` buffer (1 kept, 0 pruned) that pruning methods
  /// fill; `enable_mask()` sets it. Default: false
  TORCH_ARG(bool, masked) = false;
  /// 0: dense (`weight` [out, in]). r > 0: the truncated-SVD form x -> first (in -> r, no bias)
  /// -> second (r -> out, with the bias), two Shrink Linear children; `weight` and `bias` are
  /// then undefined. Not combinable with `masked`. Default: 0
  TORCH_ARG(int64_t, rank) = 0;
  /// Fake quantizers on the weight, input and output (quantization-aware training; see
  /// shrink/quant). Dense (rank 0) only. Default: none
  TORCH_ARG(LayerQuantizers, quant) = {};
};

class LinearImpl : public torch::nn::Cloneable<LinearImpl>, public CostedLayer {
 public:
  LinearImpl(int64_t in_features, int64_t out_features)
      : LinearImpl(LinearOptions(in_features, out_features)) {}
  explicit LinearImpl(const LinearOptions& options);

  /// Registers `weight` [out, in] and `bias` [out] (when enabled) and initializes them; with
  /// a rank, the children `first` and `second` instead.
  void reset() override;
  /// kaiming_uniform(a = sqrt(5)) weights and U(-1/sqrt(in), 1/sqrt(in)) biases, drawing from
  /// the generator in the same order as torch::nn::Linear.
  void reset_parameters();

  /// Input [*, in_features] -> [*, out_features].
  torch::Tensor forward(const torch::Tensor& input);

  void pretty_print(std::ostream& stream) const override;

  /// Adds the `weight_mask` buffer (all ones, like `weight`) if the layer has none yet. The
  /// mask is not applied in forward: pruned weights are kept at zero by whoever edits them
  /// (`apply_mask()`; the trainer after every optimizer step), which keeps forward at dense cost.
  void enable_mask();
  bool masked() const { return options.masked(); }
  /// weight *= weight_mask (no-op without a mask).
  void apply_mask();

  /// in * out * (product of the input's dimensions between the batch and the feature dimension);
  /// 0 in the low-rank form (its children report their own).
  int64_t macs_per_sample() const override;

  /// True in the low-rank form (options.rank() > 0).
  bool composite() const { return options.rank() > 0; }
  /// Rebuilds the layer with `rank` (0: dense), freshly initialized, keeping its other options.
  /// Parameters, buffers and children are replaced (build the optimizer afterwards).
  void set_rank(int64_t rank);

  /// Replaces the layer's quantizers (children "weight_quantizer", "input_quantizer",
  /// "output_quantizer"), freshly built; none when `quant` is empty. Dense (rank 0) only.
  void set_quantizers(const LayerQuantizers& quant);
  const QuantizerSlots& quantizers() const { return quant_; }
  /// Runs `kernel` instead of the float computation (int8 inference); null restores it.
  void set_kernel(std::shared_ptr<LayerKernel> kernel) { kernel_ = std::move(kernel); }
  const std::shared_ptr<LayerKernel>& kernel() const { return kernel_; }
  /// The weight quantizer's stored bits per weight (32 without one).
  double bits_per_weight() const override;

  LinearOptions options;
  torch::Tensor weight;  ///< [out_features, in_features]
  torch::Tensor weight_mask;  ///< like `weight`, 1 kept / 0 pruned; undefined unless masked
  torch::Tensor bias;    ///< [out_features], undefined when options.bias() is false
  /// Low-rank form only (null otherwise): in -> rank without bias, rank -> out with the bias.
  std::shared_ptr<LinearImpl> first, second;

 protected:
  QuantizerSlots quant_;  ///< options.quant() as built by reset()
  std::shared_ptr<LayerKernel> kernel_;
  int64_t positions_ = 0;  ///< rows per sample in the last forward (0 before any forward)
};

TORCH_MODULE(Linear);

}  // namespace shrink::nn
