#pragma once
// AlexNet as in torchvision ("One weird trick", Krizhevsky 2014: 64-192-384-256-256 channels,
// no local response norm), built from Shrink's layers:
//   "alexnet"  features (conv 11x11/4 64, pool, conv 5x5 192, pool, conv 3x3 384, 256, 256, pool)
//              -> AdaptiveAvgPool2d(6x6) -> flatten -> classifier (Dropout, Linear 9216-4096,
//              ReLU, Dropout, Linear 4096-4096, ReLU, Linear 4096-classes).
//              61,100,840 parameters and ~714 MMACs at 3x224x224 with 1000 classes.
//
// Parameter names are torchvision's: features.0/3/6/8/10 and classifier.1/4/6 (.weight, .bias);
// ReLU, MaxPool2d and Dropout placeholders keep the indices. Init is torchvision's, i.e. the
// layers' defaults (kaiming uniform a = sqrt(5), as torch::nn::Conv2d / Linear).
// `features` and `classifier` are ModuleLists run child by child (see zoo_blocks.h).
//
// Taps: "features" ([N, 256, 6, 6] at 224x224), "pooled" (the classifier's input, flattened:
// [N, 9216]) and "logits".
#include <torch/torch.h>

#include "shrink/config/options.h"
#include "shrink/models/zoo_blocks.h"

namespace shrink {

/// torchvision's AlexNet. Needs inputs of at least 63x63 pixels.
class AlexNetImpl : public ZooModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;  ///< 0: take it from the data
    double dropout = 0.5;     ///< dropout before the 1st and 2nd Linear
  };
  static OptionSchema<Options> schema();

  AlexNetImpl(Options options, const DataInfo& data);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  torch::nn::ModuleList features{nullptr};
  torch::nn::AdaptiveAvgPool2d avgpool{nullptr};
  torch::nn::ModuleList classifier{nullptr};
};

}  // namespace shrink
