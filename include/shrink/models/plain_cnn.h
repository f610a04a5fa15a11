#pragma once
// "cnn": a plain VGG-style CNN of any configuration, for small inputs such as 28x28
// Fashion-MNIST: conv 3x3 pad 1 -> BN -> ReLU per entry, MaxPool2d(2) per 0, then flatten ->
// Linear(classes). The default [32, 0, 64, 0, 128, 0] has 104,650 parameters and 7.46M MACs at 1x28x28
// with 10 classes.
// It is the "plain CNN" that compact (depthwise-separable, fire) and transferred filters (CReLU,
// MBA, cyclic) replace layer by layer (docs/results/lowrank_compact.md). Same layout, names and taps as
// vgg11_bn_cifar (features.<i>, classifier), which it reuses.
#include <vector>

#include "shrink/models/vgg.h"

namespace shrink {

class PlainCnnImpl : public VggCifarImpl {
 public:
  struct Options {
    int64_t num_classes = 0;  ///< 0: take it from the data
    std::vector<int64_t> config = {32, 0, 64, 0, 128, 0};  ///< conv widths, 0 = 2x2 max pool
  };
  static OptionSchema<Options> schema();
  PlainCnnImpl(Options options, const DataInfo& data);

  Options cnn_options;
};

}  // namespace shrink
