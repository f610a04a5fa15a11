#pragma once
// shrink::nn::HashedLinear: the HashedNets layer (Chen et al. 2015). Its virtual weight matrix
// V [out, in] is read from a small learned vector w through a fixed hash:
//   V[i][j] = sign(i, j) * w[h(i, j)],  h(i, j) in [0, size), sign(i, j) in {-1, +1}
// with size = max(1, round(compression * in * out)). Only w (and the bias) is stored and
// trained; the gradient of w[k] is the sum of sign * dL/dV over the virtual weights hashed to k.
//
// Both hashes are splitmix64 (shrink::mix64) of the position and the layer's seed, so the layer
// is the same wherever it is rebuilt. They are computed once in reset() into the `hash_index`
// buffer (int32 [out, in]; the sign is folded in as an offset into [w; -w]), so forward is a
// single gather followed by a dense linear.
#include <torch/torch.h>

#include <cstdint>

#include "shrink/nn/layer.h"

namespace shrink::nn {

/// Options for `HashedLinear`.
///
/// Example:
/// ```
/// shrink::nn::HashedLinear fc(shrink::nn::HashedLinearOptions(784, 1000).compression(1.0 / 64).seed(1));
/// ```
struct HashedLinearOptions {
  HashedLinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  /// size of each input sample
  TORCH_ARG(int64_t, in_features);
  /// size of each output sample
  TORCH_ARG(int64_t, out_features);
  /// If false, the layer learns no additive bias. Default: true
  TORCH_ARG(bool, bias) = true;
  /// Fraction of the in * out virtual weights actually stored, in (0, 1]. Default: 1/8
  TORCH_ARG(double, compression) = 0.125;
  /// Seed of the index and sign hashes; give each layer of a model its own. Default: 0
  TORCH_ARG(int64_t, seed) = 0;
};

namespace detail {
/// h(i, j): the index of w that virtual weight (row i, column j) reads, in [0, size).
int64_t hashed_index(int64_t seed, int64_t row, int64_t column, int64_t size);
/// sign(i, j) in {-1, +1}, independent of h.
int hashed_sign(int64_t seed, int64_t row, int64_t column);
}  // namespace detail

class HashedLinearImpl : public torch::nn::Cloneable<HashedLinearImpl>, public CostedLayer {
 public:
  HashedLinearImpl(int64_t in_features, int64_t out_features)
      : HashedLinearImpl(HashedLinearOptions(in_features, out_features)) {}
  explicit HashedLinearImpl(const HashedLinearOptions& options);

  /// Registers `weight` [size], `bias` [out] (when enabled) and the `hash_index` buffer, and
  /// initializes the parameters.
  void reset() override;
  /// w and b ~ U(-1/sqrt(in), 1/sqrt(in)): the virtual weights start with the spread of
  /// torch::nn::Linear's default initialization.
  void reset_parameters();

  /// Input [*, in_features] -> [*, out_features].
  torch::Tensor forward(const torch::Tensor& input);
  /// The virtual weight matrix V [out, in] (differentiable with respect to `weight`).
  torch::Tensor virtual_weight() const;

  void pretty_print(std::ostream& stream) const override;

  /// Stored entries of `weight`: max(1, round(compression * in * out)).
  int64_t size() const { return weight.numel(); }
  /// MACs of the dense virtual product: in * out * (rows per sample of the last forward).
  int64_t macs_per_sample() const override;
  /// 32: `weight` is the stored vector itself (`shrink summary` multiplies by its numel), so the
  /// layer's stored bits are 32 * size; per virtual weight that is 32 * size / (in * out).
  double bits_per_weight() const override { return 32.0; }

  HashedLinearOptions options;
  torch::Tensor weight;      ///< [size]: the stored, learned values
  torch::Tensor bias;        ///< [out_features], undefined when options.bias() is false
  /// int32 [out, in] buffer: h(i, j) where sign(i, j) = +1, size + h(i, j) where it is -1.
  torch::Tensor hash_index;

 protected:
  int64_t positions_ = 0;  ///< rows per sample in the last forward (0 before any forward)
};

TORCH_MODULE(HashedLinear);

}  // namespace shrink::nn
