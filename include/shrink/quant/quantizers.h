#pragma once
// Fake quantizers for quantization-aware training. Each is a module (its ranges, step sizes and
// clipping levels are buffers and parameters, saved in checkpoints) implementing
// nn::TensorQuantizer, so a Shrink Conv2d or Linear applies it to its weight, its input or its
// output (shrink/nn/quant_hook.h). The `quantization` method (quantization.h) builds them from
// a recipe; from C++, make_quantizer_factory() and layer->set_quantizers() do the same.
//
//   uniform      b-bit affine quantization (2..8 and 16 bits), symmetric or asymmetric,
//                per-tensor or per-output-channel, with a straight-through estimator. Ranges:
//                minmax (weights: of the weight at the latest training step; activations:
//                running min/max),
//                moving_average (EMA of batch min/max), percentile (EMA of batch percentiles).
//   lsq          learned step size (Esser et al. 2020), gradient scale 1/sqrt(N * Qp)
//   pact         learned clipping level alpha for activations (Choi et al. 2018)
//   fixed_point  <word, fraction> fixed point with stochastic rounding in training (Gupta et al. 2015)
//   binary       BinaryConnect: sign(w) in {-1, +1}, STE cancelled where |w| > 1 (Courbariaux et al. 2015)
//   bwn          binary weights with a per-filter scale mean|w| (Rastegari et al. 2016)
//   sign         binary activations sign(x), STE where |x| <= 1 (XNOR-Net's inputs)
//   ternary      ternary weights {-a, 0, +a}, threshold 0.7 mean|w| (Li et al. 2016)
//   dorefa       DoReFa-Net k-bit weights (tanh transform) or activations (clip to [0, 1]) (Zhou et al. 2016)
#include <torch/torch.h>

#include <optional>
#include <string>

#include "shrink/nn/quant_hook.h"

namespace shrink::quant {

/// What a quantizer is applied to: weights (signed, per-channel possible) or activations.
enum class QuantizerRole { weight, activation };

/// One quantizer's settings (the recipe's `weights:`, `inputs:` or `outputs:` map).
struct QuantizerOptions {
  std::string quantizer = "uniform";  ///< see the file comment
  int64_t bits = 8;                   ///< uniform 2..8 or 16; lsq/pact/dorefa 1..8 (dorefa), 2..8
  bool symmetric = true;              ///< uniform: zero point 0; lsq: signed range; else [0, 2^b - 1]
  bool per_channel = false;           ///< weights: one range/scale per output channel (dim 0)
  std::string range = "minmax";       ///< uniform: minmax | moving_average | percentile
  double momentum = 0.01;             ///< EMA weight of the newest batch (moving_average, percentile)
  double percentile = 99.99;          ///< percentile range: the kept fraction of values, in percent
  int64_t fraction_bits = 8;          ///< fixed_point: bits after the binary point (word = bits)
  double init_alpha = 10.0;           ///< pact: initial clipping level
  double threshold = 0.7;             ///< ternary: delta = threshold * mean|w|
};

/// Throws std::invalid_argument naming the option that is wrong for `role`.
void validate(const QuantizerOptions& options, QuantizerRole role);

/// Affine parameters of a quantizer whose outputs are scale * (q - zero_point), q integer in
/// [quant_min, quant_max]: what int8 export needs.
struct AffineParams {
  torch::Tensor scale;       ///< float [1] or [C]
  torch::Tensor zero_point;  ///< int64 [1] or [C]
  int64_t quant_min = 0, quant_max = 255;
  bool per_channel = false;  ///< along dim 0
};

/// Controls every Shrink quantizer shares. A disabled quantizer returns its input unchanged;
/// one that does not observe keeps its ranges frozen.
class Quantizer : public nn::TensorQuantizer {
 public:
  /// `channels`: output channels of the weight (per-channel ranges and scales); 1 otherwise.
  Quantizer(QuantizerOptions options, QuantizerRole role, int64_t channels)
      : options_(std::move(options)), role_(role), channels_(channels) {}
  void set_enabled(bool enabled) { enabled_ = enabled; }
  bool enabled() const { return enabled_; }
  void set_observing(bool observing) { observing_ = observing; }
  bool observing() const { return observing_; }
  const QuantizerOptions& options() const { return options_; }
  QuantizerRole role() const { return role_; }
  /// The affine grid the quantizer's outputs lie on (uniform, lsq, pact), or nothing.
  virtual std::optional<AffineParams> affine() const { return std::nullopt; }
  std::string describe() const override;

 protected:
  QuantizerOptions options_;
  QuantizerRole role_;
  int64_t channels_ = 1;
  bool enabled_ = true, observing_ = true;
};

/// Integer range of a b-bit quantizer: signed [-2^(b-1), 2^(b-1) - 1] or unsigned [0, 2^b - 1].
std::pair<int64_t, int64_t> integer_range(int64_t bits, bool is_signed);

class UniformQuantizerImpl : public torch::nn::Cloneable<UniformQuantizerImpl>, public Quantizer {
 public:
  UniformQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels = 1);
  void reset() override;
  torch::Tensor quantize(const torch::Tensor& x) override;
  double stored_bits(const torch::Tensor& x) const override;
  std::optional<AffineParams> affine() const override;
  /// Sets scale and zero_point from a range (min_val, max_val as observed).
  void set_range(const torch::Tensor& min_val, const torch::Tensor& max_val);
  bool calibrated() const { return observed.item<int64_t>() > 0; }

  torch::Tensor min_val, max_val;  ///< observed range, [1] or [C]
  torch::Tensor scale, zero_point; ///< float and int32, [1] or [C]
  torch::Tensor observed;          ///< int64 scalar: batches observed (0: no range yet)

 private:
  void observe(const torch::Tensor& x);
  int64_t qmin_ = 0, qmax_ = 255;
};
TORCH_MODULE(UniformQuantizer);

class LsqQuantizerImpl : public torch::nn::Cloneable<LsqQuantizerImpl>, public Quantizer {
 public:
  LsqQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels = 1);
  void reset() override;
  torch::Tensor quantize(const torch::Tensor& x) override;
  double stored_bits(const torch::Tensor& x) const override;
  std::optional<AffineParams> affine() const override;
  torch::Tensor step;         ///< parameter, [1] or [C]
  torch::Tensor zero_point;   ///< float zeros (LSQ learns no offset)
  torch::Tensor initialized;  ///< int64 scalar: step set from data (2 mean|x| / sqrt(Qp))

 private:
  int64_t qmin_ = 0, qmax_ = 255;
};
TORCH_MODULE(LsqQuantizer);

class PactQuantizerImpl : public torch::nn::Cloneable<PactQuantizerImpl>, public Quantizer {
 public:
  PactQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels = 1);
  void reset() override;
  torch::Tensor quantize(const torch::Tensor& x) override;
  double stored_bits(const torch::Tensor& x) const override;
  std::optional<AffineParams> affine() const override;
  torch::Tensor alpha;  ///< parameter [1]: the clipping level
};
TORCH_MODULE(PactQuantizer);

class FixedPointQuantizerImpl : public torch::nn::Cloneable<FixedPointQuantizerImpl>, public Quantizer {
 public:
  FixedPointQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels = 1);
  void reset() override {}
  torch::Tensor quantize(const torch::Tensor& x) override;
  double stored_bits(const torch::Tensor& x) const override;
};
TORCH_MODULE(FixedPointQuantizer);

/// binary (BinaryConnect), bwn, sign (binary activations) and ternary.
class BinaryQuantizerImpl : public torch::nn::Cloneable<BinaryQuantizerImpl>, public Quantizer {
 public:
  BinaryQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels = 1);
  void reset() override {}
  torch::Tensor quantize(const torch::Tensor& x) override;
  double stored_bits(const torch::Tensor& x) const override;
};
TORCH_MODULE(BinaryQuantizer);

class DorefaQuantizerImpl : public torch::nn::Cloneable<DorefaQuantizerImpl>, public Quantizer {
 public:
  DorefaQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels = 1);
  void reset() override {}
  torch::Tensor quantize(const torch::Tensor& x) override;
  double stored_bits(const torch::Tensor& x) const override;
};
TORCH_MODULE(DorefaQuantizer);

/// The module behind `options` as a layer factory (validate() first; throws like it).
/// `channels`: the weight's output channels (dim 0), for per-channel quantizers and bwn.
nn::QuantizerFactoryPtr make_quantizer_factory(const QuantizerOptions& options, QuantizerRole role,
                                               int64_t channels = 1);

/// Recomputes scale and zero point of every calibrated uniform quantizer in `model` from its
/// min_val / max_val buffers (after something else, e.g. the average of buffers over
/// data-parallel ranks, changed them; a zero point cannot be averaged).
void recompute_quantizer_grids(torch::nn::Module& model);

/// The Shrink quantizer a layer holds in `slot` (null when none or not a Shrink quantizer).
Quantizer* as_quantizer(nn::TensorQuantizer* slot);

namespace detail {
/// Slow references for tests: element by element, in double.
torch::Tensor reference_fake_quantize(const torch::Tensor& x, const torch::Tensor& scale,
                                      const torch::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                                      bool per_channel);
}  // namespace detail

}  // namespace shrink::quant
