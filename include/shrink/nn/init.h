#pragma once
// LibTorch's default initialization of a convolution (torch::nn::Conv2d::reset_parameters):
// kaiming_uniform(a = sqrt(5)) weights and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases, in that
// generator order, shared by Shrink's Conv2d and the forms that own a kernel.
#include <torch/torch.h>

namespace shrink::nn {

/// Initializes `weight` [out, in / groups, kh, kw] and `bias` (skipped when undefined).
void init_conv_parameters(torch::Tensor& weight, torch::Tensor& bias);

}  // namespace shrink::nn
