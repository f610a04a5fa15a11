#pragma once
// How a shrink::nn::Conv2d computes. `dense` uses the layer's own `weight`; every other form
// replaces it by smaller Shrink layers held in the layer's child "form" (low-rank
// factorizations, compact and transferred filters). The form is one of the layer's options,
// so clone(), printing, MACs and checkpoints follow it, and models need no other change:
// parents keep calling the same Conv2d (LibTorch cannot swap a layer under a parent's typed
// member or inside a Sequential).
#include <cstdint>
#include <string>
#include <vector>

namespace shrink::nn {

enum class ConvFormKind {
  dense,
  jaderberg,            ///< kh x 1 conv to `rank` channels, then 1 x kw (Jaderberg et al. 2014, scheme 2)
  cp,                   ///< 1x1 -> kh x 1 depthwise -> 1 x kw depthwise -> 1x1 (Lebedev et al. 2015)
  tucker2,              ///< 1x1 in -> rank_in, k x k rank_in -> rank_out, 1x1 -> out (Kim et al. 2016)
  bn_low_rank,          ///< jaderberg with BatchNorm between the factors (Tai et al. 2016)
  depthwise_separable,  ///< k x k depthwise -> BN -> ReLU -> 1x1 pointwise (MobileNet)
  fire,                 ///< 1x1 squeeze -> ReLU -> concat(1x1 expand, k x k expand) (SqueezeNet)
  crelu,                ///< out / 2 filters, output [y, -y] (Shang et al. 2016)
  mba,                  ///< out / K filters, each with K biases (multi-bias activation, Li et al. 2016)
  cyclic,               ///< out / 4 filters and their 90/180/270-degree rotations (Dieleman et al. 2016)
};

struct ConvForm {
  ConvFormKind kind = ConvFormKind::dense;
  /// The form's sizes:
  ///   jaderberg, bn_low_rank, cp: {rank}
  ///   tucker2: {rank_in, rank_out}
  ///   fire: {squeeze, expand1x1} (the k x k expand gets out_channels - expand1x1)
  ///   mba: {biases}
  ///   dense, depthwise_separable, crelu, cyclic: {}
  std::vector<int64_t> sizes;

  bool dense() const { return kind == ConvFormKind::dense; }
  /// "dense", "jaderberg(8)", "tucker2(16,32)", ...; parse() reads it back.
  std::string str() const;
  /// Inverse of str(); throws std::invalid_argument naming what is wrong.
  static ConvForm parse(const std::string& text);
  bool operator==(const ConvForm& other) const { return kind == other.kind && sizes == other.sizes; }
  bool operator!=(const ConvForm& other) const { return !(*this == other); }
};

/// "dense", "jaderberg", ... (the names str() uses).
const char* conv_form_name(ConvFormKind kind);
/// Throws std::invalid_argument for an unknown name.
ConvFormKind conv_form_kind(const std::string& name);
/// How many sizes the kind takes.
size_t conv_form_size_count(ConvFormKind kind);

}  // namespace shrink::nn
