#pragma once
// The low-rank forms of a composite shrink::nn::Conv2d (layer_form.h): its child "form" is one
// of these, built by make_low_rank_conv(). Each holds a copy of the host's options and computes
// the host's function (same input and output shapes) as a chain of smaller dense Shrink convs;
// lowrank::factorize_conv() loads them from a trained kernel's decomposition.
#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "shrink/nn/conv.h"
#include "shrink/nn/conv_forms.h"

namespace shrink::nn {

/// Jaderberg et al. 2014, scheme 2: `vertical` (in -> rank, kernel {kh, 1}, the host's stride,
/// padding and dilation along H, no bias), then `horizontal` (rank -> out, kernel {1, kw}, the
/// host's settings along W, the host's bias). Form jaderberg(rank).
class JaderbergConvImpl : public torch::nn::Cloneable<JaderbergConvImpl>, public ConvFormLayer {
 public:
  explicit JaderbergConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;
  int64_t rank() const { return options.form().sizes.at(0); }

  Conv2dOptions options;  ///< the host's, form included
  Conv2d vertical{nullptr}, horizontal{nullptr};
};
TORCH_MODULE(JaderbergConv);

/// Tai et al. 2016: the Jaderberg pair with `bn` (BatchNorm2d over the rank channels) between
/// them. Form bn_low_rank(rank).
class BnLowRankConvImpl : public torch::nn::Cloneable<BnLowRankConvImpl>, public ConvFormLayer {
 public:
  explicit BnLowRankConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;
  int64_t rank() const { return options.form().sizes.at(0); }

  Conv2dOptions options;
  Conv2d vertical{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  Conv2d horizontal{nullptr};
};
TORCH_MODULE(BnLowRankConv);

/// Lebedev et al. 2015, rank-R CP: `pointwise_in` 1x1 (in -> R, no bias), `vertical` {kh, 1}
/// depthwise over R (the host's stride, padding, dilation along H), `horizontal` {1, kw}
/// depthwise over R (along W), `pointwise_out` 1x1 (R -> out, the host's bias). Form cp(R).
class CpConvImpl : public torch::nn::Cloneable<CpConvImpl>, public ConvFormLayer {
 public:
  explicit CpConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;
  int64_t rank() const { return options.form().sizes.at(0); }

  Conv2dOptions options;
  Conv2d pointwise_in{nullptr}, vertical{nullptr}, horizontal{nullptr}, pointwise_out{nullptr};
};
TORCH_MODULE(CpConv);

/// Kim et al. 2016, Tucker-2: `first` 1x1 (in -> rank_in, no bias), `core` kh x kw
/// (rank_in -> rank_out, the host's stride, padding and dilation, no bias), `last` 1x1
/// (rank_out -> out, the host's bias). Form tucker2(rank_in, rank_out).
class Tucker2ConvImpl : public torch::nn::Cloneable<Tucker2ConvImpl>, public ConvFormLayer {
 public:
  explicit Tucker2ConvImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input) override;
  void pretty_print(std::ostream& stream) const override;
  int64_t rank_in() const { return options.form().sizes.at(0); }
  int64_t rank_out() const { return options.form().sizes.at(1); }

  Conv2dOptions options;
  Conv2d first{nullptr}, core{nullptr}, last{nullptr};
};
TORCH_MODULE(Tucker2Conv);

}  // namespace shrink::nn
