#include "shrink/nn/conv.h"

#include <cmath>

#include "shrink/nn/conv_forms.h"
#include "shrink/nn/init.h"

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
  form_ = nullptr;
  form_forward_ = nullptr;
  quant_ = QuantizerSlots();
  folded_bn_ = nullptr;
  if (composite()) {
    TORCH_CHECK(!options.quant().any(), "shrink::nn::Conv2d: a ", options.form().str(),
                " layer has no weight of its own to quantize (quantize its inner layers)");
    TORCH_CHECK(!options.masked(), "shrink::nn::Conv2d: a ", options.form().str(),
                " layer has no weight of its own to mask (mask its inner layers)");
    weight = bias = weight_mask = torch::Tensor();
    form_ = register_module("form", make_conv_form(options));
    form_forward_ = dynamic_cast<ConvFormLayer*>(form_.get());
    TORCH_CHECK(form_forward_ != nullptr, "shrink::nn::Conv2d: the ", options.form().str(),
                " module does not implement ConvFormLayer");
    return;
  }
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
  quant_.attach(*this, options.quant());
}

void init_conv_parameters(torch::Tensor& weight, torch::Tensor& bias) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    int64_t fan_in, fan_out;
    std::tie(fan_in, fan_out) = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
    const auto bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

void Conv2dImpl::reset_parameters() {
  if (composite()) return;  // the form initialized its own layers
  init_conv_parameters(weight, bias);
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& input) {
  if (form_forward_ != nullptr) return form_forward_->forward(input);
  torch::Tensor output;
  if (kernel_) {
    output = kernel_->forward(input);
  } else if (!quant_.any() && !folded_bn_) {
    output = torch::conv2d(input, weight, bias, options.stride(), options.padding(), options.dilation(),
                           options.groups());
  } else {
    const auto x = quant_.input ? quant_.input->quantize(input) : input;
    if (folded_bn_) {
      // Jacob et al. 2018 (and PyTorch's ConvBn2d): quantize the folded weight, undo the scale
      // on the output so the model's BatchNorm (still applied after) sees the usual input.
      // The convolution is linear in its weight, so conv(x, Q(w s)) / s = conv(x, Q(w s) / s):
      // dividing the weight instead of the output keeps the folding off the activations.
      const auto scale = fold_scale(folded_bn_).view({-1, 1, 1, 1});
      auto w = weight * scale;
      if (quant_.weight) w = quant_.weight->quantize(w);
      output = torch::conv2d(x, w / scale, bias, options.stride(), options.padding(), options.dilation(),
                             options.groups());
    } else {
      const auto w = quant_.weight ? quant_.weight->quantize(weight) : weight;
      output = torch::conv2d(x, w, bias, options.stride(), options.padding(), options.dilation(), options.groups());
    }
    if (quant_.output) output = quant_.output->quantize(output);
  }
  out_h_ = output.size(-2);
  out_w_ = output.size(-1);
  return output;
}

namespace {
/// gamma / sqrt(running_var + eps), 0 where gamma is 0.
torch::Tensor bn_gain(const torch::nn::BatchNorm2d& bn) {
  auto scale = torch::rsqrt(bn->running_var + bn->options.eps());
  return bn->options.affine() ? bn->weight * scale : scale;
}
}  // namespace

torch::Tensor fold_scale(const torch::nn::BatchNorm2d& bn) {
  const auto scale = bn_gain(bn);
  // A zero gamma makes the BatchNorm's output constant: any nonzero scale gives the same result.
  return torch::where(scale == 0, torch::ones_like(scale), scale);
}

void Conv2dImpl::set_quantizers(const LayerQuantizers& quant) {
  TORCH_CHECK(!composite() || !quant.any(), "shrink::nn::Conv2d: a ", options.form().str(),
              " layer has no weight of its own to quantize (quantize its inner layers)");
  quant_.detach(*this);
  options.quant(quant);
  quant_.attach(*this, quant);
  if (!weight.defined()) return;
  for (auto& child : children()) child->to(weight.device());
}

void Conv2dImpl::fold_batch_norm(torch::nn::BatchNorm2d bn) {
  TORCH_CHECK(!composite(), "shrink::nn::Conv2d: cannot fold a BatchNorm into a ", options.form().str(), " layer");
  if (bn) {
    TORCH_CHECK(bn->options.num_features() == options.out_channels(), "shrink::nn::Conv2d: the BatchNorm has ",
                bn->options.num_features(), " features, the convolution ", options.out_channels(), " outputs");
    TORCH_CHECK(bn->options.track_running_stats(), "shrink::nn::Conv2d: cannot fold a BatchNorm without running statistics");
  }
  folded_bn_ = std::move(bn);
}

torch::Tensor Conv2dImpl::folded_weight() const {
  if (!folded_bn_) return weight;
  // The true factor here (0 where gamma is 0): those output channels are the BN's beta alone.
  return weight * bn_gain(folded_bn_).view({-1, 1, 1, 1});
}

double Conv2dImpl::bits_per_weight() const {
  if (!quant_.weight || !weight.defined()) return 32.0;
  return quant_.weight->stored_bits(weight) / static_cast<double>(weight.numel());
}

void Conv2dImpl::set_form(const ConvForm& form) {
  TORCH_CHECK(!quant_.any(), "shrink::nn::Conv2d: cannot change the form of a quantized layer");
  TORCH_CHECK(!options.masked(), "shrink::nn::Conv2d: cannot change the form of a masked layer");
  // An unmasked layer owns no buffers; its only possible child is "form".
  auto clear = [this] {
    parameters_.clear();
    if (form_) unregister_module("form");
    form_ = nullptr;
    form_forward_ = nullptr;
  };
  // A form that does not fit throws from reset(); the layer then gets its old parameters back
  // (not a fresh init, and the generator is not touched again).
  const auto old = options.form();
  const auto saved_parameters = parameters_;
  const auto saved_form = form_;
  auto* const saved_forward = form_forward_;
  const auto saved_weight = weight, saved_bias = bias;
  options.form(form);
  clear();
  try {
    reset();
  } catch (...) {
    options.form(old);
    clear();
    parameters_ = saved_parameters;
    if (saved_form) form_ = register_module("form", saved_form);
    form_forward_ = saved_forward;
    weight = saved_weight;
    bias = saved_bias;
    throw;
  }
}

void Conv2dImpl::enable_mask() {
  TORCH_CHECK(!composite(), "shrink::nn::Conv2d: a ", options.form().str(),
              " layer has no weight of its own to mask (mask its inner layers)");
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
  if (composite()) return 0;
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
  if (composite()) stream << ", form=" << options.form().str();
  if (options.quant().weight) stream << ", weight_quant=" << options.quant().weight->description;
  if (options.quant().input) stream << ", input_quant=" << options.quant().input->description;
  if (options.quant().output) stream << ", output_quant=" << options.quant().output->description;
  stream << ")";
}

}  // namespace shrink::nn
