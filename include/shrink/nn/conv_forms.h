#pragma once
// The child module of a composite shrink::nn::Conv2d (see layer_form.h). Each form is a
// Cloneable module that also implements ConvFormLayer; Conv2d::forward calls it.
#include <torch/torch.h>

#include <memory>

#include "shrink/nn/conv.h"

namespace shrink::nn {

class ConvFormLayer {
 public:
  virtual ~ConvFormLayer() = default;
  /// Same contract as Conv2d::forward with the host layer's options (stride, padding, ...).
  virtual torch::Tensor forward(const torch::Tensor& input) = 0;
};

/// Builds the "form" child for a Conv2d with `options` (options.form() not dense), freshly
/// initialized. TORCH_CHECKs that the form fits the options.
std::shared_ptr<torch::nn::Module> make_conv_form(const Conv2dOptions& options);

/// The two families, in src/nn/low_rank_conv.cpp and src/nn/compact_conv.cpp.
std::shared_ptr<torch::nn::Module> make_low_rank_conv(const Conv2dOptions& options);
std::shared_ptr<torch::nn::Module> make_compact_conv(const Conv2dOptions& options);

}  // namespace shrink::nn
