#include "shrink/nn/compact_conv.h"

#include <cmath>
#include <sstream>

#include "shrink/nn/init.h"

namespace shrink::nn {

namespace {

int64_t kernel(const Conv2dOptions& o, int dim) { return (*o.kernel_size())[dim]; }

/// The host's stride, padding and dilation on a new inner conv.
Conv2dOptions with_geometry(Conv2dOptions inner, const Conv2dOptions& host) {
  return inner.stride(host.stride()).padding(host.padding()).dilation(host.dilation());
}

void check_fits(const Conv2dOptions& options) {
  const auto why = compact_form_misfit(options);
  TORCH_CHECK(why.empty(), "shrink::nn::Conv2d(", options.in_channels(), ", ", options.out_channels(),
              ", kernel_size=", options.kernel_size(), "): form ", options.form().str(), " does not fit: ", why);
}

/// Channels are dim 1 of a batch [N, C, H, W] and dim 0 of one sample [C, H, W].
int64_t channel_dim(const torch::Tensor& t) { return t.dim() - 3; }

}  // namespace

std::string compact_form_misfit(const Conv2dOptions& options) {
  const auto& form = options.form();
  const int64_t out = options.out_channels();
  std::ostringstream why;
  if (form.sizes.size() != conv_form_size_count(form.kind)) {
    why << form.str() << " needs " << conv_form_size_count(form.kind) << " size(s)";
    return why.str();
  }
  if (options.groups() != 1) {
    why << "needs groups 1 (the layer has groups " << options.groups() << ")";
    return why.str();
  }
  switch (form.kind) {
    case ConvFormKind::depthwise_separable:
      break;
    case ConvFormKind::fire: {
      const int64_t s = form.sizes[0], e1 = form.sizes[1];
      if (s < 1) {
        why << "the squeeze needs at least 1 channel (got " << s << ")";
      } else if (out < 2) {
        why << "needs at least 2 output channels to split between the expands (the layer has " << out << ")";
      } else if (e1 < 1 || e1 >= out) {
        why << "expand1x1 must be in [1, " << out - 1 << "] (got " << e1 << ")";
      } else {
        for (int dim = 0; dim < 2; ++dim) {
          const int64_t k = kernel(options, dim), p = (*options.padding())[dim], d = (*options.dilation())[dim];
          if (2 * p != d * (k - 1)) {
            why << "needs 'same' padding so the 1x1 and " << kernel(options, 0) << "x" << kernel(options, 1)
                << " expands give one output size (2 * padding == dilation * (kernel - 1); the layer has kernel "
                << options.kernel_size() << ", padding " << options.padding() << ", dilation "
                << options.dilation() << ")";
            break;
          }
        }
      }
      break;
    }
    case ConvFormKind::crelu:
      if (out % 2 != 0) why << "needs an even number of output channels (the layer has " << out << ")";
      break;
    case ConvFormKind::mba: {
      const int64_t k = form.sizes[0];
      if (k < 1 || out % k != 0)
        why << "the number of biases (" << k << ") must divide the output channels (" << out << ")";
      break;
    }
    case ConvFormKind::cyclic:
      if (out % 4 != 0) {
        why << "needs output channels divisible by 4 (the layer has " << out << ")";
      } else if (kernel(options, 0) != kernel(options, 1)) {
        why << "needs a square kernel to rotate (the layer has " << options.kernel_size() << ")";
      }
      break;
    default:
      why << form.str() << " is not a compact form";
  }
  return why.str();
}

// ---------------------------------------------------------------------------------------------
// depthwise_separable

DepthwiseSeparableConvImpl::DepthwiseSeparableConvImpl(const Conv2dOptions& options_) : options(options_) {
  reset();
}

void DepthwiseSeparableConvImpl::reset() {
  check_fits(options);
  const int64_t in = options.in_channels();
  depthwise = register_module(
      "depthwise", Conv2d(with_geometry(Conv2dOptions(in, in, options.kernel_size()), options).groups(in).bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(in));
  pointwise = register_module("pointwise", Conv2d(Conv2dOptions(in, options.out_channels(), 1).bias(options.bias())));
}

torch::Tensor DepthwiseSeparableConvImpl::forward(const torch::Tensor& input) {
  // BatchNorm2d takes batches only.
  if (input.dim() == 3) return forward(input.unsqueeze(0)).squeeze(0);
  return pointwise(torch::relu(bn(depthwise(input))));
}

void DepthwiseSeparableConvImpl::pretty_print(std::ostream& stream) const {
  stream << "shrink::nn::DepthwiseSeparableConv(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ")";
}

// ---------------------------------------------------------------------------------------------
// fire

FireConvImpl::FireConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void FireConvImpl::reset() {
  check_fits(options);
  const int64_t s = options.form().sizes[0], e1 = options.form().sizes[1];
  squeeze = register_module("squeeze", Conv2d(Conv2dOptions(options.in_channels(), s, 1).stride(options.stride())));
  expand1x1 = register_module("expand1x1", Conv2d(Conv2dOptions(s, e1, 1).bias(options.bias())));
  expand3x3 = register_module("expand3x3", Conv2d(Conv2dOptions(s, options.out_channels() - e1, options.kernel_size())
                                                      .padding(options.padding())
                                                      .dilation(options.dilation())
                                                      .bias(options.bias())));
}

torch::Tensor FireConvImpl::forward(const torch::Tensor& input) {
  auto x = torch::relu(squeeze(input));
  return torch::cat({expand1x1(x), expand3x3(x)}, channel_dim(x));
}

void FireConvImpl::pretty_print(std::ostream& stream) const {
  const int64_t e1 = options.form().sizes[1];
  stream << "shrink::nn::FireConv(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", squeeze=" << options.form().sizes[0]
         << ", expand1x1=" << e1 << ", expand3x3=" << options.out_channels() - e1 << ")";
}

// ---------------------------------------------------------------------------------------------
// crelu

CReluConvImpl::CReluConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void CReluConvImpl::reset() {
  check_fits(options);
  const auto half = Conv2dOptions(options.in_channels(), options.out_channels() / 2, options.kernel_size());
  conv = register_module("conv", Conv2d(with_geometry(half, options).bias(options.bias())));
}

torch::Tensor CReluConvImpl::forward(const torch::Tensor& input) {
  auto y = conv(input);
  return torch::cat({y, -y}, channel_dim(y));
}

void CReluConvImpl::pretty_print(std::ostream& stream) const {
  stream << "shrink::nn::CReluConv(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", filters=" << options.out_channels() / 2 << ")";
}

// ---------------------------------------------------------------------------------------------
// mba

MbaConvImpl::MbaConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void MbaConvImpl::reset() {
  check_fits(options);
  const int64_t k = options.form().sizes[0], filters = options.out_channels() / k;
  conv = register_module(
      "conv", Conv2d(with_geometry(Conv2dOptions(options.in_channels(), filters, options.kernel_size()), options)
                         .bias(false)));
  const double fan_in = static_cast<double>(options.in_channels() * kernel(options, 0) * kernel(options, 1));
  const double bound = 1.0 / std::sqrt(fan_in);
  auto spread = k > 1 ? torch::linspace(-bound, bound, k) : torch::zeros({1});
  biases = register_parameter("biases", spread.unsqueeze(1).expand({k, filters}).contiguous());
}

torch::Tensor MbaConvImpl::forward(const torch::Tensor& input) {
  auto y = conv(input);
  const int64_t k = biases.size(0), filters = biases.size(1);
  // [.., 1, C, H, W] + [K, C, 1, 1] -> [.., K, C, H, W] -> [.., K * C, H, W]
  auto out = y.unsqueeze(channel_dim(y)) + biases.view({k, filters, 1, 1});
  return out.flatten(channel_dim(y), channel_dim(y) + 1);
}

void MbaConvImpl::pretty_print(std::ostream& stream) const {
  stream << "shrink::nn::MbaConv(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", filters=" << biases.size(1)
         << ", biases=" << biases.size(0) << ")";
}

// ---------------------------------------------------------------------------------------------
// cyclic

CyclicConvImpl::CyclicConvImpl(const Conv2dOptions& options_) : options(options_) { reset(); }

void CyclicConvImpl::reset() {
  check_fits(options);
  const int64_t k = kernel(options, 0);
  weight = register_parameter("weight", torch::empty({options.out_channels() / 4, options.in_channels(), k, k}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_channels()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  reset_parameters();
}

void CyclicConvImpl::reset_parameters() { init_conv_parameters(weight, bias); }

torch::Tensor CyclicConvImpl::effective_weight() const {
  return torch::cat({weight, torch::rot90(weight, 1, {2, 3}), torch::rot90(weight, 2, {2, 3}),
                     torch::rot90(weight, 3, {2, 3})},
                    0);
}

torch::Tensor CyclicConvImpl::forward(const torch::Tensor& input) {
  torch::Tensor kernel;
  if (torch::GradMode::is_enabled()) {
    kernel = effective_weight();
    cached_kernel_ = torch::Tensor();
  } else {
    if (!cached_kernel_.defined() || cached_data_ != weight.data_ptr() || cached_version_ != weight._version()) {
      cached_kernel_ = effective_weight();
      cached_data_ = weight.data_ptr();
      cached_version_ = weight._version();
    }
    kernel = cached_kernel_;
  }
  auto output = torch::conv2d(input, kernel, bias, options.stride(), options.padding(), options.dilation());
  out_h_ = output.size(-2);
  out_w_ = output.size(-1);
  return output;
}

int64_t CyclicConvImpl::macs_per_sample() const {
  const int64_t k = kernel(options, 0);
  return out_h_ * out_w_ * options.out_channels() * options.in_channels() * k * k;
}

void CyclicConvImpl::pretty_print(std::ostream& stream) const {
  stream << "shrink::nn::CyclicConv(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", filters=" << options.out_channels() / 4 << ")";
}

// ---------------------------------------------------------------------------------------------

std::shared_ptr<torch::nn::Module> make_compact_conv(const Conv2dOptions& options) {
  switch (options.form().kind) {
    case ConvFormKind::depthwise_separable:
      return std::make_shared<DepthwiseSeparableConvImpl>(options);
    case ConvFormKind::fire:
      return std::make_shared<FireConvImpl>(options);
    case ConvFormKind::crelu:
      return std::make_shared<CReluConvImpl>(options);
    case ConvFormKind::mba:
      return std::make_shared<MbaConvImpl>(options);
    case ConvFormKind::cyclic:
      return std::make_shared<CyclicConvImpl>(options);
    default:
      TORCH_CHECK(false, "make_compact_conv: ", options.form().str(), " is not a compact form");
  }
}

}  // namespace shrink::nn
