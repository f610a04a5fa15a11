#pragma once
// MobileNets, built from Shrink's layers (depthwise convs are shrink::nn::Conv2d with groups):
//   "mobilenet_v1"        Howard et al. 2017, Table 1: ConvBNAct 3x3/2 32, then 13 depthwise
//                         separable blocks (64, 128/2, 128, 256/2, 256, 512/2, 5x 512, 1024/2,
//                         1024), global average pool, Linear(1024, classes). ReLU after every
//                         BN (Fig. 3). 4,231,976 parameters and 568.7M MACs at 3x224x224 with
//                         1000 classes and width 1.0 (paper: 4.2M, 569M).
//   "mobilenet_v1_cifar"  the same with a stride-1 stem (the common CIFAR form): a 32x32 input
//                         ends at 2x2 (four stride-2 blocks: 32 -> 16 -> 8 -> 4 -> 2).
//                         3,217,226 parameters and 46.4M MACs with 10 classes.
//   "mobilenet_v2"        torchvision's mobilenet_v2 (Sandler et al. 2018): ConvBNAct 3x3/2 32,
//                         17 InvertedResidual blocks (t, c, n, s = 1,16,1,1; 6,24,2,2; 6,32,3,2;
//                         6,64,4,2; 6,96,3,1; 6,160,3,2; 6,320,1,1), ConvBNAct 1x1 1280, global
//                         average pool, Dropout, Linear(1280, classes). ReLU6. 3,504,872 parameters
//                         and ~300M MACs at 3x224x224 with 1000 classes and width 1.0.
//   "mobilenet_v2_cifar"  the same with the stem and the first downsampling block (the 24-channel
//                         stage) at stride 1 (the common CIFAR form): a 32x32 input ends at 4x4
//                         (32 -> 16 -> 8 -> 4). 2,236,682 parameters and 88.0M MACs with 10
//                         classes. The blocks are torchvision's (no 1x1 conv shortcut where the
//                         channels change, unlike some CIFAR ports).
//
// width_multiplier (alpha): V1 uses int(channels * alpha) (at least 1), as the reference
// implementation (Keras); V2 rounds to multiples of 8 and keeps 1280 final channels for
// alpha <= 1, as torchvision.
//
// Parameter names: mobilenet_v2 matches torchvision (features.0.0.weight, features.0.1.weight,
// features.1.conv.0.0.weight, features.2.conv.0.0.weight, features.18.0.weight,
// classifier.1.weight; BN buffers running_mean / running_var / num_batches_tracked). V1 has no
// torchvision model: features.0 is a ConvBNAct (features.0.0 conv, features.0.1 BN), features.1..13
// are DepthwiseSeparable (features.<i>.depthwise / depthwise_bn / pointwise / pointwise_bn),
// and the Linear is `classifier` (classifier.weight). Init is torchvision's (kaiming normal
// fan_out convs, N(0, 0.01) linear, zero biases, BN 1/0) for both.
// `features` (and V2's `classifier`) are ModuleLists run child by child (see zoo_blocks.h).
//
// Taps ("stageK" = the last output at stride 2^K on ImageNet; on CIFAR the strides differ):
//   V1: "stage1" (features.1, 64 ch), "stage2" (features.3, 128), "stage3" (features.5, 256),
//       "stage4" (features.11, 512), "features" (features.13: [N, 1024, 7, 7] at 224,
//       [N, 1024, 2, 2] on CIFAR), "pooled" ([N, 1024]), "logits".
//   V2: "stage1" (features.1, 16 ch), "stage2" (features.3, 24), "stage3" (features.6, 32),
//       "stage4" (features.13, 96), "stage5" (features.17, 320), "features" (features.18:
//       [N, 1280, 7, 7] at 224, [N, 1280, 4, 4] on CIFAR), "pooled" ([N, 1280]), "logits".
// (Channel counts at width 1.0.)
#include <torch/torch.h>

#include <string>

#include "shrink/config/options.h"
#include "shrink/models/zoo_blocks.h"

namespace shrink {

/// MobileNet V1; `cifar` selects the stride-1 stem.
class MobileNetV1Impl : public ZooModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;        ///< 0: take it from the data
    double width_multiplier = 1.0;  ///< alpha: scales every layer's channels
  };
  static OptionSchema<Options> schema();

  MobileNetV1Impl(Options options, const DataInfo& data, bool cifar, const std::string& model_name);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  torch::nn::ModuleList features{nullptr};
  nn::Linear classifier{nullptr};

 private:
  TapPositions taps_;
};

/// "mobilenet_v1"
class MobileNetV1ImageNetImpl : public MobileNetV1Impl {
 public:
  MobileNetV1ImageNetImpl(Options options, const DataInfo& data)
      : MobileNetV1Impl(options, data, false, "mobilenet_v1") {}
};

/// "mobilenet_v1_cifar"
class MobileNetV1CifarImpl : public MobileNetV1Impl {
 public:
  MobileNetV1CifarImpl(Options options, const DataInfo& data)
      : MobileNetV1Impl(options, data, true, "mobilenet_v1_cifar") {}
};

/// MobileNet V2 as torchvision; `cifar` sets the stem and the 24-channel stage to stride 1.
class MobileNetV2Impl : public ZooModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;        ///< 0: take it from the data
    double width_multiplier = 1.0;  ///< alpha: scales channels (rounded to multiples of 8)
    double dropout = 0.2;           ///< dropout before the Linear
  };
  static OptionSchema<Options> schema();

  MobileNetV2Impl(Options options, const DataInfo& data, bool cifar, const std::string& model_name);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  torch::nn::ModuleList features{nullptr};
  torch::nn::ModuleList classifier{nullptr};  ///< "0" Dropout, "1" Linear

 private:
  TapPositions taps_;
};

/// "mobilenet_v2"
class MobileNetV2ImageNetImpl : public MobileNetV2Impl {
 public:
  MobileNetV2ImageNetImpl(Options options, const DataInfo& data)
      : MobileNetV2Impl(options, data, false, "mobilenet_v2") {}
};

/// "mobilenet_v2_cifar"
class MobileNetV2CifarImpl : public MobileNetV2Impl {
 public:
  MobileNetV2CifarImpl(Options options, const DataInfo& data)
      : MobileNetV2Impl(options, data, true, "mobilenet_v2_cifar") {}
};

namespace detail {
/// torchvision's _make_divisible: the multiple of `divisor` nearest to v, at least `divisor`,
/// and not below 90% of v.
int64_t make_divisible(double v, int64_t divisor = 8);
}  // namespace detail

}  // namespace shrink
