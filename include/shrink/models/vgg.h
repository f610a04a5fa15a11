#pragma once
// VGG (Simonyan & Zisserman 2015), built from Shrink's layers:
//   "vgg16"           torchvision's vgg16 (configuration D, no BN) for ImageNet:
//                     features -> AdaptiveAvgPool2d(7x7) -> flatten -> classifier
//                     (Linear 25088-4096, ReLU, Dropout, Linear 4096-4096, ReLU, Dropout,
//                     Linear 4096-classes). 138,357,544 parameters and ~15.5 GMACs at 3x224x224
//                     with 1000 classes.
//   "vgg11_bn_cifar"  configurations A and D with BatchNorm after every conv, in the common CIFAR
//   "vgg16_bn_cifar"  form: 5 max pools take 32x32 to 1x1, then flatten 512 -> Linear(512, classes)
//                     (no 4096-wide layers, no dropout). On other input sizes the Linear takes
//                     512 * (H / 32) * (W / 32) features. With 10 classes: 9,231,114 parameters
//                     and 152.8M MACs (vgg11_bn_cifar), 14,728,266 and 313.2M (vgg16_bn_cifar).
//
// Parameter names are torchvision's: features.<i>.weight/bias for the convs (and BN of the _bn
// models: conv, BN, ReLU at features.i, i+1, i+2; MaxPool2d at the end of each stage), and for
// vgg16 classifier.0/3/6. The CIFAR models' single Linear is `classifier` (classifier.weight),
// as in the common CIFAR implementations (torchvision has none). Convs have biases, as in
// torchvision, also before BN. Init is torchvision's (kaiming normal fan_out convs, N(0, 0.01)
// linears, zero biases, BN 1/0).
//
// `features` and `classifier` are torch::nn::ModuleLists run child by child (see zoo_blocks.h),
// so replacing an entry with replace_module takes effect.
//
// Taps: "stage1".."stage4" (after the 1st..4th max pool, strides 2..16), "features" (after the
// 5th pool: [N, 512, 1, 1] on 32x32, [N, 512, 7, 7] on 224x224), "pooled" (the classifier's
// input, flattened: [N, 512] on CIFAR, [N, 25088] for vgg16) and "logits".
#include <torch/torch.h>

#include <vector>

#include "shrink/config/options.h"
#include "shrink/models/zoo_blocks.h"

namespace shrink {

/// A VGG configuration: output channels of 3x3 convs, 0 for a 2x2 max pool.
using VggConfig = std::vector<int64_t>;
/// Configurations A (VGG-11) and D (VGG-16) of the paper.
const VggConfig& vgg_config_a();
const VggConfig& vgg_config_d();

/// torchvision's VGG for ImageNet-sized inputs (at least 32x32).
class VggImpl : public ZooModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;  ///< 0: take it from the data
    double dropout = 0.5;     ///< dropout before the 2nd and 3rd Linear
  };
  static OptionSchema<Options> schema();

  VggImpl(Options options, const DataInfo& data, const VggConfig& config, bool batch_norm,
          const std::string& model_name);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  torch::nn::ModuleList features{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};
  torch::nn::ModuleList classifier{nullptr};

 private:
  TapPositions taps_;
};

/// "vgg16": configuration D without BN.
class Vgg16Impl : public VggImpl {
 public:
  Vgg16Impl(Options options, const DataInfo& data) : VggImpl(options, data, vgg_config_d(), false, "vgg16") {}
};

/// VGG with BN after every conv and one Linear, for 32x32 inputs (any multiple of 32 works).
class VggCifarImpl : public ZooModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;  ///< 0: take it from the data
  };
  static OptionSchema<Options> schema();

  VggCifarImpl(Options options, const DataInfo& data, const VggConfig& config, const std::string& model_name);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  torch::nn::ModuleList features{nullptr};
  nn::Linear classifier{nullptr};

 private:
  TapPositions taps_;
};

/// "vgg11_bn_cifar": configuration A with BN.
class Vgg11BnCifarImpl : public VggCifarImpl {
 public:
  Vgg11BnCifarImpl(Options options, const DataInfo& data)
      : VggCifarImpl(options, data, vgg_config_a(), "vgg11_bn_cifar") {}
};

/// "vgg16_bn_cifar": configuration D with BN.
class Vgg16BnCifarImpl : public VggCifarImpl {
 public:
  Vgg16BnCifarImpl(Options options, const DataInfo& data)
      : VggCifarImpl(options, data, vgg_config_d(), "vgg16_bn_cifar") {}
};

}  // namespace shrink
