#pragma once
// The per-input gate of ConvNet-AIG (Veit & Belongie 2018, "Convolutional networks with adaptive
// inference graphs"): from a residual block's input x [N, C, H, W],
//   z = relu(bn(fc1(avg_pool(x))))  (C -> hidden, BatchNorm1d),  logits = fc2(z)  (hidden -> 2)
// column 0 "skip", column 1 "execute". The decision g_n is hard (exactly 0 or 1):
//   training: Gumbel-softmax with straight-through gradient: g = argmax(logits + G) (G Gumbel
//             noise from the global CPU generator, which the recipe seed starts and checkpoints
//             save) in forward, the gradient of softmax((logits + G) / temperature)[:, 1] backward;
//   eval:     argmax(logits), no noise.
// A ResidualBlockImpl with a gate (ResidualBlockImpl::set_gate) uses g to run its branch per
// input; the `block_gating` method (shrink/dynamic/block_gating.h) attaches gates and trains them.
#include <torch/torch.h>

#include <cstdint>
#include <ostream>

#include "shrink/nn/linear.h"

namespace shrink::dynamic {

/// Options for `BlockGate`.
struct BlockGateOptions {
  explicit BlockGateOptions(int64_t channels) : channels_(channels) {}
  /// Channels C of the block's input.
  TORCH_ARG(int64_t, channels);
  /// Width of the hidden layer (16 in ConvNet-AIG).
  TORCH_ARG(int64_t, hidden) = 16;
  /// Gumbel-softmax temperature of the straight-through gradient (training only), > 0.
  TORCH_ARG(double, temperature) = 1.0;
};

class BlockGateImpl : public torch::nn::Cloneable<BlockGateImpl> {
 public:
  explicit BlockGateImpl(BlockGateOptions options);

  /// Registers fc1, bn and fc2; fc2's bias starts at (0.1, 2) as in the authors' code, so that
  /// about 85% of the inputs execute at first.
  void reset() override;

  /// Logits [N, 2] (skip, execute) of an input [N, C, ...].
  torch::Tensor logits(const torch::Tensor& x);
  /// Decisions [N] in the logits' dtype, each exactly 0 (skip) or 1 (execute); in training with
  /// the straight-through gradient of the Gumbel-softmax. A training batch of one input uses bn's
  /// running statistics (BatchNorm1d cannot normalize a single value).
  torch::Tensor forward(const torch::Tensor& x);

  /// Multiply-accumulates per input of fc1 and fc2 (the pooling's additions are not counted).
  int64_t linear_macs() const;

  void pretty_print(std::ostream& stream) const override;

  BlockGateOptions options;
  nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};

TORCH_MODULE(BlockGate);

}  // namespace shrink::dynamic
