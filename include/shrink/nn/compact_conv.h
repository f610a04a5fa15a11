#pragma once
// Compact and transferred filters: the "form" children of a composite shrink::nn::Conv2d
// (layer_form.h) that compute the host's shapes with fewer parameters by design, trained
// from scratch (unlike the low-rank forms, they do not approximate a trained kernel):
//   depthwise_separable  k x k depthwise -> BN -> ReLU -> 1x1 pointwise (MobileNet)
//   fire                 1x1 squeeze -> ReLU -> concat(1x1 expand, k x k expand) (SqueezeNet)
//   crelu                out / 2 filters, output [y, -y] (Shang et al. 2016)
//   mba                  out / K filters, each shifted by K learned biases (Li et al. 2016)
//   cyclic               out / 4 filters and their 90/180/270-degree rotations (Dieleman et al. 2016)
#include <torch/torch.h>

#include <string>

#include "shrink/nn/conv.h"
#include "shrink/nn/conv_forms.h"
#include "shrink/nn/layer.h"

namespace shrink::nn {

/// Why the compact form `options.form()` cannot compute a Conv2d with `options` (groups != 1,
/// out_channels not divisible, ...); empty when it can. The forms TORCH_CHECK it; methods use it
/// to reject a recipe before building anything.
std::string compact_form_misfit(const Conv2dOptions& options);

/// MobileNet's depthwise separable convolution: `depthwise` k x k conv with one filter per input
/// channel (the host's stride, padding and dilation, no bias), `bn`, ReLU, then `pointwise` 1x1
/// in -> out with the host's bias. Parameters: in*k*k + in*out (+ out) + 2*in (BN).
class DepthwiseSeparableConvImpl : public torch::nn::Cloneable<DepthwiseSeparableConvImpl>, public ConvFormLayer {
 public:
  explicit DepthwiseSeparableConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;

  Conv2dOptions options;  ///< the host's (form depthwise_separable)
  Conv2d depthwise{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  Conv2d pointwise{nullptr};
};
TORCH_MODULE(DepthwiseSeparableConv);

/// SqueezeNet's fire module, sizes {squeeze s, expand1x1 e1}: `squeeze` 1x1 in -> s with the
/// host's stride (with bias), ReLU, then concat(`expand1x1` 1x1 s -> e1, `expand3x3` k x k
/// s -> out - e1 with the host's padding and dilation) along channels; the expands carry the host's
/// bias setting. No activation after the concat (the host model's own follows). Needs "same"
/// padding (2 * padding == dilation * (k - 1) in both dimensions) so the branches and the host
/// agree on the output size.
class FireConvImpl : public torch::nn::Cloneable<FireConvImpl>, public ConvFormLayer {
 public:
  explicit FireConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;

  Conv2dOptions options;  ///< the host's (form fire(s, e1))
  Conv2d squeeze{nullptr};
  Conv2d expand1x1{nullptr};
  Conv2d expand3x3{nullptr};
};
TORCH_MODULE(FireConv);

/// Concatenated ReLU filters: `conv` in -> out / 2 with the host's geometry and bias; the output
/// is cat([y, -y]) along channels (the host's ReLU then passes both phases). Half the parameters.
class CReluConvImpl : public torch::nn::Cloneable<CReluConvImpl>, public ConvFormLayer {
 public:
  explicit CReluConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;

  Conv2dOptions options;  ///< the host's (form crelu)
  Conv2d conv{nullptr};
};
TORCH_MODULE(CReluConv);

/// Multi-bias activation, sizes {K}: `conv` in -> out / K without bias and the parameter
/// `biases` [K, out / K]; output channel k * (out / K) + j is y_j + biases[k][j]. The biases are
/// learned even when the host has bias false (they are the method). They start spread over
/// [-b, b] along k (b = 1 / sqrt(fan_in), the range of Conv2d's default bias), so the K copies
/// differ from the first step.
class MbaConvImpl : public torch::nn::Cloneable<MbaConvImpl>, public ConvFormLayer {
 public:
  explicit MbaConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;

  Conv2dOptions options;  ///< the host's (form mba(K))
  Conv2d conv{nullptr};
  torch::Tensor biases;  ///< [K, out / K]
};
TORCH_MODULE(MbaConv);

/// Cyclic filter tying: `weight` [out / 4, in, k, k] (square kernels only) and `bias` [out] (when
/// the host has one); the effective kernel stacks w and its rotations by 90, 180 and 270 degrees
/// (torch::rot90 over the spatial dims) along the output channels, computed by one conv2d with
/// the host's geometry. A quarter of the weights; reports the MACs of the full convolution.
class CyclicConvImpl : public torch::nn::Cloneable<CyclicConvImpl>, public ConvFormLayer, public CostedLayer {
 public:
  explicit CyclicConvImpl(const Conv2dOptions& options);
  void reset() override;
  /// kaiming_uniform(a = sqrt(5)) and the bias range of nn::Conv2d (same fan-in as the full layer).
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;

  /// cat([w, rot90(w, 1), rot90(w, 2), rot90(w, 3)], 0): [out, in, k, k].
  torch::Tensor effective_weight() const;
  int64_t macs_per_sample() const override;

  Conv2dOptions options;  ///< the host's (form cyclic)
  torch::Tensor weight;   ///< [out / 4, in, k, k]
  torch::Tensor bias;     ///< [out], undefined when the host has no bias

 protected:
  int64_t out_h_ = 0, out_w_ = 0;  ///< output size of the last forward
  // Without autograd (eval, inference) the rotated kernel is kept until `weight` changes (its
  // version counter or storage), so inference does not rebuild it for every batch.
  torch::Tensor cached_kernel_;
  const void* cached_data_ = nullptr;
  uint32_t cached_version_ = 0;
};
TORCH_MODULE(CyclicConv);

}  // namespace shrink::nn
