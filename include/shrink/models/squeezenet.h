#pragma once
// SqueezeNet 1.1 (Iandola et al. 2016; the 1.1 variant of the SqueezeNet repository, as in
// torchvision), built from Shrink's layers:
//   "squeezenet1_1"        features: conv 3x3/2 64, ReLU, pool, Fire x2, pool, Fire x2, pool,
//                          Fire x4 -> classifier: Dropout, conv 1x1 512-classes ("final_conv"),
//                          ReLU, AdaptiveAvgPool2d(1) -> flatten. 1,235,496 parameters and ~349
//                          MMACs at 3x224x224 with 1000 classes. Pools are 3x3/2 with ceil_mode.
//   "squeezenet1_1_cifar"  the same layers with a CIFAR stem: the first conv is 3x3 stride 1
//                          with padding 1 (torchvision: stride 2, no padding), so a 32x32 input
//                          is downsampled three times instead of four (by the three pools:
//                          32 -> 16 -> 8 -> 4) and the Fire modules 9-12 run at 4x4.
//                          727,626 parameters and 23.5M MACs with 10 classes.
//
// Parameter names are torchvision's: features.0.weight, features.<i>.squeeze / expand1x1 /
// expand3x3 (.weight, .bias) for the Fire modules at i = 3, 4, 6, 7, 9, 10, 11, 12, and
// classifier.1 (final_conv). ReLU, MaxPool2d, Dropout and AdaptiveAvgPool2d placeholders keep
// the indices. Like torchvision, the logits come after a ReLU (they are nonnegative). Init is
// torchvision's: kaiming uniform (a = 0) convs, N(0, 0.01) final conv, zero biases.
// `features` and `classifier` are ModuleLists run child by child (see zoo_blocks.h).
//
// Taps: "features" ([N, 512, 13, 13] at 224x224, [N, 512, 4, 4] on CIFAR) and "logits".
#include <torch/torch.h>

#include <string>

#include "shrink/config/options.h"
#include "shrink/models/zoo_blocks.h"

namespace shrink {

/// SqueezeNet 1.1; `cifar_stem` selects the stride-1 3x3 stem for 32x32 inputs.
class SqueezeNetImpl : public ZooModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;  ///< 0: take it from the data
    double dropout = 0.5;     ///< dropout before the final conv
  };
  static OptionSchema<Options> schema();

  SqueezeNetImpl(Options options, const DataInfo& data, bool cifar_stem, const std::string& model_name);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  torch::nn::ModuleList features{nullptr};
  torch::nn::ModuleList classifier{nullptr};  ///< classifier.1 is torchvision's final_conv
};

/// "squeezenet1_1"
class SqueezeNet11Impl : public SqueezeNetImpl {
 public:
  SqueezeNet11Impl(Options options, const DataInfo& data) : SqueezeNetImpl(options, data, false, "squeezenet1_1") {}
};

/// "squeezenet1_1_cifar"
class SqueezeNet11CifarImpl : public SqueezeNetImpl {
 public:
  SqueezeNet11CifarImpl(Options options, const DataInfo& data)
      : SqueezeNetImpl(options, data, true, "squeezenet1_1_cifar") {}
};

}  // namespace shrink
