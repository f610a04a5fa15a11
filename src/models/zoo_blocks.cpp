#include "shrink/models/zoo_blocks.h"

#include <cmath>
#include <string>

#include "shrink/core/error.h"

namespace shrink {
namespace {

torch::Tensor activate(const torch::Tensor& x, BlockActivation activation) {
  switch (activation) {
    case BlockActivation::relu:
      return torch::relu(x);
    case BlockActivation::relu6:
      return torch::hardtanh(x, 0.0, 6.0);
    case BlockActivation::none:
      break;
  }
  return x;
}

nn::Conv2d bias_free_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups) {
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).groups(groups).bias(false));
}

}  // namespace

// ---- ConvBNAct ----

ConvBNActImpl::ConvBNActImpl(const ConvBNActOptions& options_) : options(options_) { reset(); }

void ConvBNActImpl::reset() {
  conv = register_module("0", bias_free_conv(options.in_channels(), options.out_channels(), options.kernel_size(),
                                             options.stride(), options.groups()));
  bn = register_module("1", torch::nn::BatchNorm2d(options.out_channels()));
  if (options.activation() == BlockActivation::relu) register_module("2", torch::nn::ReLU());
  if (options.activation() == BlockActivation::relu6) register_module("2", torch::nn::ReLU6());
}

torch::Tensor ConvBNActImpl::forward(const torch::Tensor& input) {
  return activate(bn(conv(input)), options.activation());
}

// ---- DepthwiseSeparable ----

DepthwiseSeparableImpl::DepthwiseSeparableImpl(const DepthwiseSeparableOptions& options_) : options(options_) {
  reset();
}

void DepthwiseSeparableImpl::reset() {
  const int64_t in = options.in_channels(), out = options.out_channels();
  depthwise = register_module("depthwise", bias_free_conv(in, in, options.kernel_size(), options.stride(), in));
  depthwise_bn = register_module("depthwise_bn", torch::nn::BatchNorm2d(in));
  pointwise = register_module("pointwise", bias_free_conv(in, out, 1, 1, 1));
  pointwise_bn = register_module("pointwise_bn", torch::nn::BatchNorm2d(out));
}

torch::Tensor DepthwiseSeparableImpl::forward(const torch::Tensor& input) {
  auto x = activate(depthwise_bn(depthwise(input)), options.activation());
  return activate(pointwise_bn(pointwise(x)), options.activation());
}

// ---- InvertedResidual ----

InvertedResidualImpl::InvertedResidualImpl(const InvertedResidualOptions& options_) : options(options_) { reset(); }

void InvertedResidualImpl::reset() {
  TORCH_CHECK(options.stride() == 1 || options.stride() == 2, "InvertedResidual: stride must be 1 or 2, got ",
              options.stride());
  TORCH_CHECK(options.expand_ratio() >= 1, "InvertedResidual: expand_ratio must be at least 1, got ",
              options.expand_ratio());
  const int64_t in = options.in_channels(), out = options.out_channels();
  hidden_channels = in * options.expand_ratio();
  use_residual = options.stride() == 1 && in == out;
  torch::nn::ModuleList layers;
  if (options.expand_ratio() != 1)
    layers->push_back(ConvBNAct(ConvBNActOptions(in, hidden_channels, 1).activation(BlockActivation::relu6)));
  layers->push_back(ConvBNAct(ConvBNActOptions(hidden_channels, hidden_channels, 3)
                                  .stride(options.stride())
                                  .groups(hidden_channels)
                                  .activation(BlockActivation::relu6)));
  layers->push_back(bias_free_conv(hidden_channels, out, 1, 1, 1));
  layers->push_back(torch::nn::BatchNorm2d(out));
  conv = register_module("conv", layers);
}

torch::Tensor InvertedResidualImpl::forward(const torch::Tensor& input) {
  auto y = forward_sequence(*conv, input);
  return use_residual ? input + y : y;
}

namespace {
template <class Holder>
Holder list_entry(const torch::nn::ModuleList& list, int64_t index) {
  if (index < 0) return Holder(nullptr);
  auto children = list->children();
  if (static_cast<size_t>(index) >= children.size()) return Holder(nullptr);
  return Holder(std::dynamic_pointer_cast<typename Holder::ContainedType>(children[index]));
}
}  // namespace

ConvBNAct InvertedResidualImpl::expand() const {
  return options.expand_ratio() != 1 ? list_entry<ConvBNAct>(conv, 0) : ConvBNAct(nullptr);
}
ConvBNAct InvertedResidualImpl::depthwise() const {
  return list_entry<ConvBNAct>(conv, options.expand_ratio() != 1 ? 1 : 0);
}
nn::Conv2d InvertedResidualImpl::project() const {
  return list_entry<nn::Conv2d>(conv, options.expand_ratio() != 1 ? 2 : 1);
}
torch::nn::BatchNorm2d InvertedResidualImpl::project_bn() const {
  return list_entry<torch::nn::BatchNorm2d>(conv, options.expand_ratio() != 1 ? 3 : 2);
}

// ---- Fire ----

FireImpl::FireImpl(const FireOptions& options_) : options(options_) { reset(); }

void FireImpl::reset() {
  squeeze = register_module("squeeze", nn::Conv2d(options.in_channels(), options.squeeze_channels(), 1));
  squeeze_activation = register_module("squeeze_activation", torch::nn::ReLU());
  expand1x1 = register_module("expand1x1", nn::Conv2d(options.squeeze_channels(), options.expand1x1_channels(), 1));
  expand1x1_activation = register_module("expand1x1_activation", torch::nn::ReLU());
  expand3x3 = register_module(
      "expand3x3",
      nn::Conv2d(nn::Conv2dOptions(options.squeeze_channels(), options.expand3x3_channels(), 3).padding(1)));
  expand3x3_activation = register_module("expand3x3_activation", torch::nn::ReLU());
}

torch::Tensor FireImpl::forward(const torch::Tensor& input) {
  auto x = squeeze_activation(squeeze(input));
  return torch::cat({expand1x1_activation(expand1x1(x)), expand3x3_activation(expand3x3(x))}, 1);
}

// ---- running containers ----

torch::Tensor forward_layer(torch::nn::Module& layer, const torch::Tensor& x) {
  if (auto* m = layer.as<nn::Conv2dImpl>()) return m->forward(x);
  if (auto* m = layer.as<nn::LinearImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::BatchNorm2dImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::ReLUImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::ReLU6Impl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::MaxPool2dImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::AvgPool2dImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::AdaptiveAvgPool2dImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::DropoutImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::FlattenImpl>()) return m->forward(x);
  if (auto* m = layer.as<torch::nn::IdentityImpl>()) return m->forward(x);
  if (auto* m = layer.as<ConvBNActImpl>()) return m->forward(x);
  if (auto* m = layer.as<DepthwiseSeparableImpl>()) return m->forward(x);
  if (auto* m = layer.as<InvertedResidualImpl>()) return m->forward(x);
  if (auto* m = layer.as<FireImpl>()) return m->forward(x);
  if (layer.as<torch::nn::ModuleListImpl>()) return forward_sequence(layer, x);
  TORCH_CHECK(false, "shrink model zoo: cannot run a layer of type ", layer.name(),
              " inside a layer list (known: shrink::nn::Conv2d, shrink::nn::Linear, BatchNorm2d, ReLU, ReLU6, "
              "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Flatten, Identity, ConvBNAct, "
              "DepthwiseSeparable, InvertedResidual, Fire, ModuleList)");
}

torch::Tensor forward_sequence(const torch::nn::Module& list, torch::Tensor x) {
  for (const auto& layer : list.children()) x = forward_layer(*layer, x);
  return x;
}

torch::Tensor ZooModelImpl::forward_with_taps(const torch::nn::ModuleList& list, torch::Tensor x,
                                              const TapPositions& taps) {
  size_t index = 0, next = 0;
  for (const auto& layer : list->children()) {
    x = forward_layer(*layer, x);
    while (next < taps.size() && taps[next].first == index) tap_point(taps[next++].second, x);
    ++index;
  }
  return x;
}

// ---- helpers ----

namespace detail {

int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode) {
  const int64_t span = in + 2 * padding - kernel;
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // PyTorch: with ceil_mode the last window must start inside the input (or left padding).
  if (ceil_mode && (out - 1) * stride >= in + padding) --out;
  return out;
}

void init_like_torchvision(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  // Not include_self: this runs in constructors, before the model is owned by a shared_ptr.
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      if (bn->weight.defined()) bn->weight.fill_(1.0);
      if (bn->bias.defined()) bn->bias.zero_();
    } else if (auto* fc = m->as<nn::LinearImpl>()) {
      fc->weight.normal_(0.0, 0.01);
      if (fc->bias.defined()) fc->bias.zero_();
    }
  }
}

}  // namespace detail
}  // namespace shrink
