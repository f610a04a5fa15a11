#include "shrink/nn/linear.h"

#include <cmath>

namespace shrink::nn {

LinearImpl::LinearImpl(const LinearOptions& options_) : options(options_) { reset(); }

void LinearImpl::reset() {
  TORCH_CHECK(options.in_features() > 0 && options.out_features() > 0,
              "shrink::nn::Linear: in_features and out_features must be positive, got ",
              options.in_features(), " and ", options.out_features());
  TORCH_CHECK(options.rank() >= 0, "shrink::nn::Linear: rank must be >= 0, got ", options.rank());
  first = second = nullptr;
  quant_ = QuantizerSlots();
  if (composite()) {
    TORCH_CHECK(!options.quant().any(), "shrink::nn::Linear: a rank-", options.rank(),
                " layer has no weight of its own to quantize (quantize its inner layers)");
    TORCH_CHECK(!options.masked(), "shrink::nn::Linear: a rank-", options.rank(),
                " layer has no weight of its own to mask (mask its inner layers)");
    weight = bias = weight_mask = torch::Tensor();
    first = register_module("first", std::make_shared<LinearImpl>(
                                         LinearOptions(options.in_features(), options.rank()).bias(false)));
    second = register_module("second", std::make_shared<LinearImpl>(
                                           LinearOptions(options.rank(), options.out_features()).bias(options.bias())));
    return;
  }
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_features()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  weight_mask = options.masked() ? register_buffer("weight_mask", torch::ones_like(weight)) : torch::Tensor();
  reset_parameters();
  quant_.attach(*this, options.quant());
}

void LinearImpl::reset_parameters() {
  if (composite()) return;
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const auto bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& input) {
  // Rows per sample: every dimension between the batch and the features ([B, in] -> 1).
  int64_t positions = 1;
  const auto sizes = input.sizes();
  for (size_t d = 1; d + 1 < sizes.size(); ++d) positions *= sizes[d];
  positions_ = positions;
  if (composite()) return second->forward(first->forward(input));
  if (kernel_) return kernel_->forward(input);
  if (!quant_.any()) return torch::linear(input, weight, bias);
  const auto x = quant_.input ? quant_.input->quantize(input) : input;
  const auto w = quant_.weight ? quant_.weight->quantize(weight) : weight;
  auto output = torch::linear(x, w, bias);
  return quant_.output ? quant_.output->quantize(output) : output;
}

void LinearImpl::set_quantizers(const LayerQuantizers& quant) {
  TORCH_CHECK(!composite() || !quant.any(), "shrink::nn::Linear: a rank-", options.rank(),
              " layer has no weight of its own to quantize (quantize its inner layers)");
  quant_.detach(*this);
  options.quant(quant);
  quant_.attach(*this, quant);
  if (!weight.defined()) return;
  for (auto& child : children()) child->to(weight.device());
}

double LinearImpl::bits_per_weight() const {
  if (!quant_.weight || !weight.defined()) return 32.0;
  return quant_.weight->stored_bits(weight) / static_cast<double>(weight.numel());
}

void LinearImpl::set_rank(int64_t rank) {
  TORCH_CHECK(!quant_.any(), "shrink::nn::Linear: cannot change the rank of a quantized layer");
  TORCH_CHECK(!options.masked(), "shrink::nn::Linear: cannot change the rank of a masked layer");
  TORCH_CHECK(rank >= 0, "shrink::nn::Linear: rank must be >= 0, got ", rank);
  options.rank(rank);
  // An unmasked layer owns no buffers; its only possible children are first and second.
  parameters_.clear();
  if (first) unregister_module("first");
  if (second) unregister_module("second");
  reset();
}

void LinearImpl::enable_mask() {
  TORCH_CHECK(!composite(), "shrink::nn::Linear: a rank-", options.rank(),
              " layer has no weight of its own to mask (mask its inner layers)");
  if (options.masked()) return;
  options.masked(true);
  weight_mask = register_buffer("weight_mask", torch::ones_like(weight));
}

void LinearImpl::apply_mask() {
  if (!weight_mask.defined()) return;
  torch::NoGradGuard no_grad;
  weight.mul_(weight_mask);
}

int64_t LinearImpl::macs_per_sample() const {
  if (composite()) return 0;
  return positions_ * options.in_features() * options.out_features();
}

void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "shrink::nn::Linear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias();
  if (composite()) stream << ", rank=" << options.rank();
  if (options.quant().weight) stream << ", weight_quant=" << options.quant().weight->description;
  if (options.quant().input) stream << ", input_quant=" << options.quant().input->description;
  if (options.quant().output) stream << ", output_quant=" << options.quant().output->description;
  stream << ")";
}

}  // namespace shrink::nn
