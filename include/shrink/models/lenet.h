#pragma once
// The LeNets of the pruning and Deep Compression papers (Han et al. 2015, 2016), built from
// Shrink's layers:
//   "lenet300"  LeNet-300-100: flatten -> fc1 (in -> 300) relu -> fc2 (300 -> 100) relu -> fc3 (100 -> classes)
//               266,610 parameters on 28x28 inputs with 10 classes.
//   "lenet5"    Caffe's LeNet (the "LeNet-5" of Deep Compression): conv1 5x5x20 -> maxpool 2 ->
//               conv2 5x5x50 -> maxpool 2 -> flatten -> fc1 (-> 500) relu -> fc2 (500 -> classes)
//               431,080 parameters on 1x28x28 inputs with 10 classes.
#include <torch/torch.h>

#include "shrink/config/options.h"
#include "shrink/models/model.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink {

/// LeNet-300-100. The input [N, C, H, W] (or any [N, ...]) is flattened to C*H*W features.
class LeNet300Impl : public ModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;  ///< 0: take it from the data
  };
  static OptionSchema<Options> schema();

  LeNet300Impl(Options options, const DataInfo& data);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

/// Caffe's LeNet: ReLU only after fc1, as in Caffe's lenet_train_test.prototxt (which the
/// Deep Compression numbers were measured on); the convolutions feed max pooling directly.
/// The flatten size follows the input: 50 * ((H - 4) / 2 - 4) / 2 * ((W - 4) / 2 - 4) / 2.
class LeNet5Impl : public ModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;  ///< 0: take it from the data
  };
  static OptionSchema<Options> schema();

  LeNet5Impl(Options options, const DataInfo& data);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
};

}  // namespace shrink
