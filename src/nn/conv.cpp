#include "shrink/nn/conv.h"

#include <cmath>

namespace shrink::nn {

Conv2dImpl::Conv2dImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void Conv2dImpl::reset() {
  TORCH_CHECK(options.in_channels() > 0 && options.out_channels() > 0,
              "shrink::nn::Conv2d: in_channels and out_channels must be positive, got ",
              options.in_channels(), " and ", options.out_channels());
  TORCH_CHECK(options.groups() > 0, "shrink::nn::Conv2d: groups must be positive, got ", options.groups());
  TORCH_CHECK(options.in_channels() % options.groups() == 0 && options.out_channels() % options.groups() == 0,
              "shrink::nn::Conv2d: groups (", options.groups(), ") must divide in_channels (",
              options.in_channels(), ") and out_channels (", options.out_channels(), ")");
  const auto& k = *options.kernel_size();
  weight = register_parameter(
      "weight", torch::empty({options.out_channels(), options.in_channels() / options.groups(), k[0], k[1]}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_channels()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  weight_mask = options.masked() ? register_buffer("weight_mask", torch::ones_like(weight)) : torch::Tensor();
  reset_parameters();
}

void Conv2dImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    int64_t fan_in, fan_out;
    std::tie(fan_in, fan_out) = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
    const auto bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& input) {
  auto output = torch::conv2d(input, weight, bias, options.stride(), options.padding(), options.dilation(),
                              options.groups());
  out_h_ = output.size(-2);
  out_w_ = output.size(-1);
  return output;
}

void Conv2dImpl::enable_mask() {
  if (options.masked()) return;
  options.masked(true);
  weight_mask = register_buffer("weight_mask", torch::ones_like(weight));
}

void Conv2dImpl::apply_mask() {
  if (!weight_mask.defined()) return;
  torch::NoGradGuard no_grad;
  weight.mul_(weight_mask);
}

int64_t Conv2dImpl::macs_per_sample() const {
  const auto& k = *options.kernel_size();
  return out_h_ * out_w_ * options.out_channels() * (options.in_channels() / options.groups()) * k[0] * k[1];
}

void Conv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "shrink::nn::Conv2d(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride();
  if (*options.padding() != *torch::ExpandingArray<2>(0)) stream << ", padding=" << options.padding();
  if (*options.dilation() != *torch::ExpandingArray<2>(1)) stream << ", dilation=" << options.dilation();
  if (options.groups() != 1) stream << ", groups=" << options.groups();
  if (!options.bias()) stream << ", bias=" << std::boolalpha << false;
  stream << ")";
}

}  // namespace shrink::nn
