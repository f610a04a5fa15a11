#include "shrink/lowrank/factorize.h"

#include <algorithm>
#include <cmath>

#include "shrink/lowrank/decompose.h"
#include "shrink/nn/low_rank_conv.h"

namespace shrink::lowrank {

namespace {

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& parameter : module.parameters()) count += parameter.numel();
  return count;
}

/// ||reference - approximation||_F / ||reference||_F (0 for a zero reference).
double relative_error(const torch::Tensor& reference, const torch::Tensor& approximation) {
  const double norm = reference.norm().item<double>();
  if (norm == 0) return 0;
  return (reference - approximation).norm().item<double>() / norm;
}

/// CP's scale is free among the four factors; giving every factor's r-th column the same norm
/// keeps the layers' weights of comparable size for fine-tuning.
void balance_cp(CpFactors& cp) {
  auto norms = torch::stack({cp.out.norm(2, {0}), cp.in.norm(2, {0}), cp.vertical.norm(2, {0}),
                             cp.horizontal.norm(2, {0})});  // [4, R]
  const auto nonzero = (norms > 0).all(0);
  const auto common = torch::where(nonzero, norms.prod(0).pow(0.25), torch::ones_like(norms[0]));
  const auto scale = torch::where(nonzero.unsqueeze(0), common.unsqueeze(0) / norms, torch::ones_like(norms));
  cp.out = cp.out * scale[0];
  cp.in = cp.in * scale[1];
  cp.vertical = cp.vertical * scale[2];
  cp.horizontal = cp.horizontal * scale[3];
}

void check_rank(bool ok, const nn::Conv2dImpl& layer, const nn::ConvForm& form, const char* bound) {
  TORCH_CHECK(ok, "factorize_conv: form ", form.str(), " does not fit a ", layer.options.out_channels(), "x",
              layer.options.in_channels(), "x", (*layer.options.kernel_size())[0], "x",
              (*layer.options.kernel_size())[1], " kernel (", bound, ")");
}

}  // namespace

void match_device_and_dtype(torch::nn::Module& module, const torch::Device& device, torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  auto move = [&](torch::Tensor& tensor) {
    if (!tensor.defined()) return;
    if (tensor.is_floating_point()) {
      if (tensor.device() != device || tensor.scalar_type() != dtype) tensor.set_data(tensor.to(device, dtype));
    } else if (tensor.device() != device) {
      tensor.set_data(tensor.to(device));
    }
  };
  for (auto& parameter : module.parameters()) move(parameter);
  for (auto& buffer : module.buffers()) move(buffer);
}

FactorizeReport factorize_conv(nn::Conv2dImpl& layer, const nn::ConvForm& form, int64_t cp_iterations,
                               int64_t tucker_iterations, uint64_t seed) {
  TORCH_CHECK(!layer.composite(), "factorize_conv: the layer is already ", layer.options.form().str());
  TORCH_CHECK(!layer.masked(), "factorize_conv: cannot factorize a masked layer");
  TORCH_CHECK(layer.options.groups() == 1, "factorize_conv: needs groups == 1, got ", layer.options.groups());
  TORCH_CHECK(form.sizes.size() == nn::conv_form_size_count(form.kind), "factorize_conv: malformed form ",
              form.str());
  for (auto size : form.sizes) TORCH_CHECK(size > 0, "factorize_conv: the ranks of ", form.str(), " must be positive");
  const int64_t out = layer.options.out_channels(), in = layer.options.in_channels();
  const int64_t kh = (*layer.options.kernel_size())[0], kw = (*layer.options.kernel_size())[1];
  switch (form.kind) {
    case nn::ConvFormKind::jaderberg:
    case nn::ConvFormKind::bn_low_rank:
      check_rank(form.sizes[0] <= std::min(in * kh, out * kw), layer, form, "rank <= min(in * kh, out * kw)");
      break;
    case nn::ConvFormKind::cp:
      TORCH_CHECK(cp_iterations > 0, "factorize_conv: cp_iterations must be positive, got ", cp_iterations);
      break;
    case nn::ConvFormKind::tucker2:
      check_rank(form.sizes[0] <= in && form.sizes[1] <= out, layer, form, "rank_in <= in, rank_out <= out");
      TORCH_CHECK(tucker_iterations >= 0, "factorize_conv: tucker_iterations must be >= 0, got ", tucker_iterations);
      break;
    default:
      TORCH_CHECK(false, "factorize_conv: ", form.str(), " is not a low-rank form");
  }

  FactorizeReport report;
  report.params_before = count_parameters(layer);
  const auto device = layer.weight.device();
  const auto dtype = layer.weight.scalar_type();
  // Decompose on the CPU in float64 whatever the layer's device and dtype.
  const auto kernel = layer.weight.detach().to(torch::kCPU, torch::kFloat64);
  const auto bias = layer.bias.defined() ? layer.bias.detach().clone() : torch::Tensor();

  // Factors as the inner convs' weights, in float64 on the CPU, and the kernel they rebuild.
  torch::Tensor approximation;
  auto load = [&](torch::Tensor& weight, const torch::Tensor& value) {
    TORCH_CHECK(weight.sizes() == value.sizes(), "factorize_conv: factor of shape ", value.sizes(),
                " for a weight of shape ", weight.sizes());
    weight.copy_(value);
  };
  auto load_bias = [&](nn::Conv2d& last) {
    if (bias.defined()) last->bias.copy_(bias);
  };

  switch (form.kind) {
    case nn::ConvFormKind::jaderberg:
    case nn::ConvFormKind::bn_low_rank: {
      const auto factors = jaderberg(kernel, form.sizes[0]);
      const auto vertical = factors.vertical.to(torch::kFloat64), horizontal = factors.horizontal.to(torch::kFloat64);
      approximation = torch::einsum("okx,kcy->ocyx", {horizontal.squeeze(2), vertical.squeeze(3)});
      layer.set_form(form);
      match_device_and_dtype(layer, device, dtype);
      torch::NoGradGuard no_grad;
      if (form.kind == nn::ConvFormKind::jaderberg) {
        auto& host = *layer.form_module()->as<nn::JaderbergConvImpl>();
        load(host.vertical->weight, vertical);
        load(host.horizontal->weight, horizontal);
        load_bias(host.horizontal);
      } else {
        auto& host = *layer.form_module()->as<nn::BnLowRankConvImpl>();
        load(host.vertical->weight, vertical);
        load(host.horizontal->weight, horizontal);
        load_bias(host.horizontal);
        // Identity in eval: (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0.
        host.bn->running_mean.fill_(0);
        host.bn->running_var.fill_(1);
        host.bn->weight.fill_(std::sqrt(1 + host.bn->options.eps()));
        host.bn->bias.fill_(0);
      }
      break;
    }
    case nn::ConvFormKind::cp: {
      auto factors = cp_als(kernel, form.sizes[0], cp_iterations, 1e-7, seed);
      factors.out = factors.out.to(torch::kFloat64);
      factors.in = factors.in.to(torch::kFloat64);
      factors.vertical = factors.vertical.to(torch::kFloat64);
      factors.horizontal = factors.horizontal.to(torch::kFloat64);
      balance_cp(factors);
      approximation = torch::einsum("or,cr,yr,xr->ocyx", {factors.out, factors.in, factors.vertical, factors.horizontal});
      const int64_t r = form.sizes[0];
      layer.set_form(form);
      match_device_and_dtype(layer, device, dtype);
      torch::NoGradGuard no_grad;
      auto& host = *layer.form_module()->as<nn::CpConvImpl>();
      load(host.pointwise_in->weight, factors.in.t().reshape({r, in, 1, 1}));
      load(host.vertical->weight, factors.vertical.t().reshape({r, 1, kh, 1}));
      load(host.horizontal->weight, factors.horizontal.t().reshape({r, 1, 1, kw}));
      load(host.pointwise_out->weight, factors.out.reshape({out, r, 1, 1}));
      load_bias(host.pointwise_out);
      break;
    }
    case nn::ConvFormKind::tucker2: {
      const int64_t r_in = form.sizes[0], r_out = form.sizes[1];
      const auto factors = tucker2(kernel, r_in, r_out, tucker_iterations);
      const auto in_factor = factors.in.to(torch::kFloat64), out_factor = factors.out.to(torch::kFloat64);
      const auto core = factors.core.to(torch::kFloat64);
      approximation = torch::einsum("pqyx,op,cq->ocyx", {core, out_factor, in_factor});
      layer.set_form(form);
      match_device_and_dtype(layer, device, dtype);
      torch::NoGradGuard no_grad;
      auto& host = *layer.form_module()->as<nn::Tucker2ConvImpl>();
      load(host.first->weight, in_factor.t().reshape({r_in, in, 1, 1}));
      load(host.core->weight, core);
      load(host.last->weight, out_factor.reshape({out, r_out, 1, 1}));
      load_bias(host.last);
      break;
    }
    default:
      break;  // rejected above
  }
  report.relative_error = relative_error(kernel, approximation);
  report.params_after = count_parameters(layer);
  return report;
}

FactorizeReport factorize_linear(nn::LinearImpl& layer, int64_t rank) {
  TORCH_CHECK(!layer.composite(), "factorize_linear: the layer already has rank ", layer.options.rank());
  TORCH_CHECK(!layer.masked(), "factorize_linear: cannot factorize a masked layer");
  const int64_t in = layer.options.in_features(), out = layer.options.out_features();
  TORCH_CHECK(rank >= 1 && rank <= std::min(in, out), "factorize_linear: rank must be in [1, min(in, out) = ",
              std::min(in, out), "] for a ", out, "x", in, " weight, got ", rank);
  FactorizeReport report;
  report.params_before = count_parameters(layer);
  const auto device = layer.weight.device();
  const auto dtype = layer.weight.scalar_type();
  const auto matrix = layer.weight.detach().to(torch::kCPU, torch::kFloat64);
  const auto bias = layer.bias.defined() ? layer.bias.detach().clone() : torch::Tensor();
  const auto factors = truncated_svd(matrix, rank);
  const auto first = factors.first.to(torch::kFloat64), second = factors.second.to(torch::kFloat64);
  report.relative_error = relative_error(matrix, second.matmul(first));

  layer.set_rank(rank);
  match_device_and_dtype(layer, device, dtype);
  torch::NoGradGuard no_grad;
  layer.first->weight.copy_(first);
  layer.second->weight.copy_(second);
  if (bias.defined()) layer.second->bias.copy_(bias);
  report.params_after = count_parameters(layer);
  return report;
}

}  // namespace shrink::lowrank
