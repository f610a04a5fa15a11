#pragma once
// shrink::nn::Conv2d: 2-d convolution like torch::nn::Conv2d (same options for zero padding,
// parameter names and default initialization), plus the cost it reports for `shrink summary`.
#include <torch/torch.h>

#include "shrink/nn/layer.h"
#include "shrink/nn/layer_form.h"
#include "shrink/nn/quant_hook.h"

namespace shrink::nn {

/// Options for `Conv2d`. Padding is numeric (zeros); padding modes are not supported.
///
/// Example:
/// ```
/// shrink::nn::Conv2d conv(shrink::nn::Conv2dOptions(1, 20, 5).stride(1).padding(2));
/// ```
struct Conv2dOptions {
  Conv2dOptions(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// number of channels of the input
  TORCH_ARG(int64_t, in_channels);
  /// number of channels produced by the convolution
  TORCH_ARG(int64_t, out_channels);
  /// size of the kernel (one value or {h, w})
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  /// stride of the convolution. Default: 1
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  /// zeros added to both sides of each spatial dimension. Default: 0
  TORCH_ARG(torch::ExpandingArray<2>, padding) = 0;
  /// spacing between kernel elements. Default: 1
  TORCH_ARG(torch::ExpandingArray<2>, dilation) = 1;
  /// number of blocked connections from input to output channels; must divide both. Default: 1
  TORCH_ARG(int64_t, groups) = 1;
  /// If false, the layer learns no additive bias. Default: true
  TORCH_ARG(bool, bias) = true;
  /// If true, the layer has a `weight_mask` buffer (1 kept, 0 pruned) that pruning methods
  /// fill; `enable_mask()` sets it. Default: false
  TORCH_ARG(bool, masked) = false;
  /// How the layer computes (layer_form.h): dense (default) uses `weight`; a composite form
  /// (low-rank factors, compact or transferred filters) keeps its parameters in the child
  /// "form" and leaves `weight` and `bias` undefined. Not combinable with `masked`.
  TORCH_ARG(ConvForm, form) = ConvForm();
  /// Fake quantizers on the weight, input and output (quantization-aware training; see
  /// shrink/quant). Dense form only. Default: none
  TORCH_ARG(LayerQuantizers, quant) = {};
};

class ConvFormLayer;

/// gamma / sqrt(running_var + eps) of `bn` (1 where that is 0): the per-output-channel factor
/// by which folding `bn` into the convolution before it multiplies the weight.
torch::Tensor fold_scale(const torch::nn::BatchNorm2d& bn);

class Conv2dImpl : public torch::nn::Cloneable<Conv2dImpl>, public CostedLayer {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : Conv2dImpl(Conv2dOptions(in_channels, out_channels, kernel_size)) {}
  explicit Conv2dImpl(const Conv2dOptions& options);

  /// Registers `weight` [out, in / groups, kh, kw] and `bias` [out] (when enabled) and
  /// initializes them; for a composite form, registers the child "form" instead.
  void reset() override;
  /// Same initialization and generator order as torch::nn::Conv2d.
  void reset_parameters();

  /// Input [N, C, H, W] (or unbatched [C, H, W]) -> [N, out_channels, H', W'].
  torch::Tensor forward(const torch::Tensor& input);

  void pretty_print(std::ostream& stream) const override;

  /// Adds the `weight_mask` buffer (all ones, like `weight`) if the layer has none yet. The
  /// mask is not applied in forward: pruned weights are kept at zero by whoever edits them
  /// (`apply_mask()`; the trainer after every optimizer step), which keeps forward at dense cost.
  void enable_mask();
  bool masked() const { return options.masked(); }
  /// weight *= weight_mask (no-op without a mask).
  void apply_mask();

  /// out_h * out_w * out_channels * (in_channels / groups) * kh * kw of the last forward; 0 for
  /// a composite form (its inner Shrink layers report their own).
  int64_t macs_per_sample() const override;

  /// True when options.form() is not dense: `weight`/`bias` are undefined, `form_module()` holds
  /// the parameters. Code that reads `weight` skips composite layers.
  bool composite() const { return !options.form().dense(); }
  /// The child "form" (null for a dense layer).
  const std::shared_ptr<torch::nn::Module>& form_module() const { return form_; }
  /// Rebuilds the layer in `form`, freshly initialized, keeping its other options. Parameters,
  /// buffers and children are replaced (build the optimizer afterwards). TORCH_CHECKs that the
  /// form fits the layer and that the layer has no mask.
  void set_form(const ConvForm& form);

  /// Replaces the layer's quantizers (children "weight_quantizer", "input_quantizer",
  /// "output_quantizer"), freshly built; none when `quant` is empty. Dense form only.
  void set_quantizers(const LayerQuantizers& quant);
  const QuantizerSlots& quantizers() const { return quant_; }
  /// Folds `bn` (the BatchNorm2d the model applies to this layer's output) into the weight
  /// quantization as in Jacob et al. 2018: the weight quantizer sees weight * gamma / sigma
  /// (running sigma), the output is divided back by gamma / sigma, and `bn` still runs after.
  /// In eval mode the layer then computes exactly the folded, quantized convolution. Null
  /// undoes it. Runtime only: not saved, and reset()/clone() drop it.
  void fold_batch_norm(torch::nn::BatchNorm2d bn);
  const torch::nn::BatchNorm2d& folded_batch_norm() const { return folded_bn_; }
  /// weight * gamma / sigma with the folded BatchNorm (0 for channels whose gamma is 0, whose
  /// output is then the BN's beta alone); `weight` when none is folded.
  torch::Tensor folded_weight() const;
  /// Runs `kernel` instead of the float convolution (int8 inference); null restores it.
  void set_kernel(std::shared_ptr<LayerKernel> kernel) { kernel_ = std::move(kernel); }
  const std::shared_ptr<LayerKernel>& kernel() const { return kernel_; }
  /// The weight quantizer's stored bits per weight (32 without one).
  double bits_per_weight() const override;

  Conv2dOptions options;
  torch::Tensor weight;  ///< [out_channels, in_channels / groups, kh, kw]
  torch::Tensor weight_mask;  ///< like `weight`, 1 kept / 0 pruned; undefined unless masked
  torch::Tensor bias;    ///< [out_channels], undefined when options.bias() is false

 protected:
  int64_t out_h_ = 0, out_w_ = 0;  ///< output size of the last forward (0 before any forward)
  std::shared_ptr<torch::nn::Module> form_;  ///< composite forms only
  ConvFormLayer* form_forward_ = nullptr;     ///< form_ as the interface forward calls
  QuantizerSlots quant_;                      ///< options.quant() as built by reset()
  torch::nn::BatchNorm2d folded_bn_{nullptr};
  std::shared_ptr<LayerKernel> kernel_;
};

TORCH_MODULE(Conv2d);

}  // namespace shrink::nn
