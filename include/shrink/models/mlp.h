#pragma once
// Plain multilayer perceptrons, built from Shrink's layers:
//   "mlp"         flatten (C*H*W) -> [input dropout] -> fc1 relu [dropout] -> ... -> fcL relu [dropout]
//                 -> fc{L+1} (-> classes). Default hidden [300, 100] is LeNet-300-100 (266,610
//                 parameters on 28x28 inputs with 10 classes); hidden [1200, 1200] with dropout 0.5
//                 and input dropout 0.2 is the teacher of Hinton et al. (2015).
//   "hashed_mlp"  the same with every layer a HashedLinear (HashedNets, Chen et al. 2015) storing
//                 `compression` of its virtual weights. The "equally sized" dense baseline of the
//                 paper is an `mlp` whose hidden widths are scaled so that its parameters match.
// Layers are named fc1, fc2, ... so recipe targets like "fc*.weight" work. Taps: "fc1".."fcL"
// (hidden activations after ReLU), "features" (the last of them, or the flattened input without
// hidden layers) and "logits".
#include <torch/torch.h>

#include <vector>

#include "shrink/config/options.h"
#include "shrink/models/model.h"
#include "shrink/nn/hashed_linear.h"
#include "shrink/nn/linear.h"

namespace shrink {

class MlpImpl : public ModelImpl {
 public:
  struct Options {
    std::vector<int64_t> hidden = {300, 100};  ///< widths of the hidden layers ([] = logistic regression)
    double dropout = 0.0;                      ///< dropout after each hidden ReLU
    double input_dropout = 0.0;                ///< dropout on the flattened input
    int64_t num_classes = 0;                   ///< 0: take it from the data
  };
  static OptionSchema<Options> schema();

  MlpImpl(Options options, const DataInfo& data);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  std::vector<nn::Linear> layers;  ///< fc1, fc2, ..., the last one produces the logits
};

class HashedMlpImpl : public ModelImpl {
 public:
  struct Options {
    std::vector<int64_t> hidden = {300, 100};
    double dropout = 0.0;
    double input_dropout = 0.0;
    int64_t num_classes = 0;
    double compression = 0.125;  ///< stored fraction of each layer's virtual weights, in (0, 1]
    int64_t seed = 0;            ///< hash seed; layer l hashes with a seed mixed from (seed, l)
  };
  static OptionSchema<Options> schema();

  HashedMlpImpl(Options options, const DataInfo& data);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  std::vector<nn::HashedLinear> layers;  ///< fc1, fc2, ..., the last one produces the logits
};

}  // namespace shrink
