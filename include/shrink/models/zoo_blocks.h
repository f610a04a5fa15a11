#pragma once
// Building blocks shared by the model zoo (VGG, AlexNet, SqueezeNet, MobileNet V1/V2), built
// from Shrink's layers so that compression methods act on every conv and fc:
//   ConvBNAct           conv (no bias) -> BatchNorm2d -> ReLU/ReLU6: torchvision's Conv2dNormActivation
//   DepthwiseSeparable  3x3 depthwise conv -> BN -> act -> 1x1 pointwise conv -> BN -> act (MobileNet V1)
//   InvertedResidual    1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ identity) (MobileNet V2)
//   Fire                1x1 squeeze -> concat(1x1 expand, 3x3 expand) (SqueezeNet)
//
// How forward runs the layers (LibTorch trap: Sequential ignores replace_module):
// - A torch::nn::ModuleList in a zoo model is run by walking its *current* children in order
//   (`forward_sequence`), so `list->replace_module("3", new_layer)` takes effect, provided the
//   new layer is one of the types `forward_layer` knows.
// - A block runs its typed public members. To swap one, assign the member from
//   replace_module, the LibTorch way: `fire->expand3x3 = fire->replace_module("expand3x3", conv)`.
//   InvertedResidual keeps its layers in a ModuleList (`conv`, for torchvision's names) and
//   walks it; its accessors read the list's current children.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "shrink/models/model.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink {

/// Activation after a conv + BN.
enum class BlockActivation { none, relu, relu6 };

/// Options for `ConvBNAct`. Padding is (kernel_size - 1) / 2 ("same" for odd kernels at stride 1).
struct ConvBNActOptions {
  ConvBNActOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// number of channels of the input
  TORCH_ARG(int64_t, in_channels);
  /// number of channels produced
  TORCH_ARG(int64_t, out_channels);
  /// square kernel size
  TORCH_ARG(int64_t, kernel_size);
  /// stride of the convolution. Default: 1
  TORCH_ARG(int64_t, stride) = 1;
  /// groups of the convolution (in_channels for a depthwise conv). Default: 1
  TORCH_ARG(int64_t, groups) = 1;
  /// activation after the BN. Default: ReLU
  TORCH_ARG(BlockActivation, activation) = BlockActivation::relu;
};

/// torchvision's Conv2dNormActivation: children "0" (shrink::nn::Conv2d, no bias), "1"
/// (BatchNorm2d) and, unless the activation is none, "2" (a parameter-free ReLU/ReLU6
/// placeholder that keeps torchvision's printout; forward applies options.activation()).
class ConvBNActImpl : public torch::nn::Cloneable<ConvBNActImpl> {
 public:
  explicit ConvBNActImpl(const ConvBNActOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);

  ConvBNActOptions options;
  nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvBNAct);

/// Options for `DepthwiseSeparable`.
struct DepthwiseSeparableOptions {
  DepthwiseSeparableOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// stride of the depthwise conv. Default: 1
  TORCH_ARG(int64_t, stride) = 1;
  /// kernel of the depthwise conv (padding (k - 1) / 2). Default: 3
  TORCH_ARG(int64_t, kernel_size) = 3;
  /// activation after each BN. Default: ReLU (Howard et al. 2017, Fig. 3)
  TORCH_ARG(BlockActivation, activation) = BlockActivation::relu;
};

/// MobileNet V1's depthwise separable convolution (Howard et al. 2017, Fig. 3): depthwise kxk
/// conv -> BN -> act -> pointwise 1x1 conv -> BN -> act. Convs have no bias. Children:
/// depthwise, depthwise_bn, pointwise, pointwise_bn.
class DepthwiseSeparableImpl : public torch::nn::Cloneable<DepthwiseSeparableImpl> {
 public:
  explicit DepthwiseSeparableImpl(const DepthwiseSeparableOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);

  DepthwiseSeparableOptions options;
  nn::Conv2d depthwise{nullptr};  ///< [in, 1, k, k], groups = in
  torch::nn::BatchNorm2d depthwise_bn{nullptr};
  nn::Conv2d pointwise{nullptr};  ///< [out, in, 1, 1]
  torch::nn::BatchNorm2d pointwise_bn{nullptr};
};
TORCH_MODULE(DepthwiseSeparable);

/// Options for `InvertedResidual`.
struct InvertedResidualOptions {
  InvertedResidualOptions(int64_t in_channels, int64_t out_channels, int64_t stride, int64_t expand_ratio)
      : in_channels_(in_channels), out_channels_(out_channels), stride_(stride), expand_ratio_(expand_ratio) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// stride of the depthwise conv (1 or 2)
  TORCH_ARG(int64_t, stride);
  /// hidden channels = round(in_channels * expand_ratio); 1 drops the expansion conv
  TORCH_ARG(int64_t, expand_ratio);
};

/// torchvision's MobileNet V2 InvertedResidual. `conv` holds, as torchvision's Sequential does:
///   expand_ratio != 1: "0" ConvBNAct 1x1 expand (ReLU6), "1" ConvBNAct 3x3 depthwise (ReLU6),
///                      "2" 1x1 projection conv (no bias), "3" BatchNorm2d
///   expand_ratio == 1: "0" ConvBNAct 3x3 depthwise, "1" projection conv, "2" BatchNorm2d
/// so parameter names match torchvision (features.2.conv.0.0.weight, features.2.conv.2.weight).
/// The input is added back when stride is 1 and in_channels == out_channels.
class InvertedResidualImpl : public torch::nn::Cloneable<InvertedResidualImpl> {
 public:
  explicit InvertedResidualImpl(const InvertedResidualOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);

  /// The current layers in `conv` (nullptr when absent or replaced by another type).
  ConvBNAct expand() const;  ///< null when expand_ratio == 1
  ConvBNAct depthwise() const;
  nn::Conv2d project() const;
  torch::nn::BatchNorm2d project_bn() const;

  InvertedResidualOptions options;
  int64_t hidden_channels = 0;
  bool use_residual = false;
  torch::nn::ModuleList conv{nullptr};
};
TORCH_MODULE(InvertedResidual);

/// Options for `Fire`.
struct FireOptions {
  FireOptions(int64_t in_channels, int64_t squeeze_channels, int64_t expand1x1_channels, int64_t expand3x3_channels)
      : in_channels_(in_channels),
        squeeze_channels_(squeeze_channels),
        expand1x1_channels_(expand1x1_channels),
        expand3x3_channels_(expand3x3_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, squeeze_channels);
  TORCH_ARG(int64_t, expand1x1_channels);
  TORCH_ARG(int64_t, expand3x3_channels);
};

/// SqueezeNet's Fire module (Iandola et al. 2016), as torchvision: relu(squeeze 1x1) ->
/// concat(relu(expand1x1), relu(expand3x3, padding 1)) along channels. Convs have biases.
/// Output channels: expand1x1 + expand3x3. Member names are torchvision's.
class FireImpl : public torch::nn::Cloneable<FireImpl> {
 public:
  explicit FireImpl(const FireOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);

  FireOptions options;
  nn::Conv2d squeeze{nullptr};
  torch::nn::ReLU squeeze_activation{nullptr};
  nn::Conv2d expand1x1{nullptr};
  torch::nn::ReLU expand1x1_activation{nullptr};
  nn::Conv2d expand3x3{nullptr};
  torch::nn::ReLU expand3x3_activation{nullptr};
};
TORCH_MODULE(Fire);

/// Runs one layer of a zoo container. Knows shrink::nn::Conv2d and Linear (and subclasses),
/// BatchNorm2d, ReLU, ReLU6, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Flatten, Identity,
/// the blocks above, and a nested ModuleList. Any other type is an error naming it.
torch::Tensor forward_layer(torch::nn::Module& layer, const torch::Tensor& input);

/// Runs the current children of `list` (a ModuleList) in order.
torch::Tensor forward_sequence(const torch::nn::Module& list, torch::Tensor input);

/// Base of the zoo models: a ModelImpl that can run a ModuleList while marking taps after
/// given children.
class ZooModelImpl : public ModelImpl {
 public:
  using ModelImpl::ModelImpl;

 protected:
  /// (index of a child, tap name), sorted by index.
  using TapPositions = std::vector<std::pair<size_t, const char*>>;
  /// forward_sequence(list, input), calling tap_point(name, x) after each child in `taps`.
  torch::Tensor forward_with_taps(const torch::nn::ModuleList& list, torch::Tensor input, const TapPositions& taps);
};

namespace detail {
/// torchvision's init of VGG and MobileNet: conv weights kaiming_normal(fan_out, relu), conv
/// biases 0, BN weight 1 and bias 0, Linear weights N(0, 0.01) and biases 0.
void init_like_torchvision(torch::nn::Module& model);  // children only (safe in constructors)
/// Output size of a conv/pool along one dimension (PyTorch's formula, with ceil_mode).
int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode = false);
}  // namespace detail

}  // namespace shrink
