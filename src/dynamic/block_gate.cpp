#include "shrink/dynamic/block_gate.h"

#include <cmath>

namespace shrink::dynamic {

BlockGateImpl::BlockGateImpl(BlockGateOptions options_) : options(std::move(options_)) { reset(); }

void BlockGateImpl::reset() {
  TORCH_CHECK(options.channels() >= 1, "BlockGate: channels must be at least 1, got ", options.channels());
  TORCH_CHECK(options.hidden() >= 1, "BlockGate: hidden must be at least 1, got ", options.hidden());
  TORCH_CHECK(options.temperature() > 0 && std::isfinite(options.temperature()),
              "BlockGate: temperature must be positive, got ", options.temperature());
  fc1 = register_module("fc1", nn::Linear(options.channels(), options.hidden()));
  bn = register_module("bn", torch::nn::BatchNorm1d(options.hidden()));
  fc2 = register_module("fc2", nn::Linear(options.hidden(), 2));
  torch::NoGradGuard no_grad;
  fc2->bias[0].fill_(0.1);
  fc2->bias[1].fill_(2.0);
}

torch::Tensor BlockGateImpl::logits(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2 && x.size(1) == options.channels(), "BlockGate: expected an input [N, ",
              options.channels(), ", ...], got ", x.sizes());
  auto z = x.dim() > 2 ? x.flatten(2).mean(2) : x;
  z = fc1(z);
  if (is_training() && z.size(0) == 1)
    z = torch::batch_norm(z, bn->weight, bn->bias, bn->running_mean, bn->running_var, /*training=*/false, 0.0,
                          bn->options.eps(), /*cudnn_enabled=*/false);
  else
    z = bn(z);
  return fc2(torch::relu(z));
}

torch::Tensor BlockGateImpl::forward(const torch::Tensor& x) {
  const auto l = logits(x);
  if (!is_training()) return l.select(1, 1).gt(l.select(1, 0)).to(l.dtype());
  // Drawn on the CPU generator whatever the device, so that seeds and resumed runs replay.
  const auto u = torch::rand(l.sizes(), torch::TensorOptions().dtype(l.dtype()).device(torch::kCPU)).to(l.device());
  const double eps = 1e-20;
  const auto noisy = l - torch::log(-torch::log(u + eps) + eps);
  const auto soft = torch::softmax(noisy / options.temperature(), 1).select(1, 1);
  const auto hard = noisy.select(1, 1).gt(noisy.select(1, 0)).to(l.dtype());
  // soft - soft.detach() is exactly 0 in forward, so the values stay exactly 0/1.
  return hard + (soft - soft.detach());
}

int64_t BlockGateImpl::linear_macs() const {
  return options.channels() * options.hidden() + options.hidden() * 2;
}

void BlockGateImpl::pretty_print(std::ostream& stream) const {
  stream << "shrink::dynamic::BlockGate(channels=" << options.channels() << ", hidden=" << options.hidden()
         << ", temperature=" << options.temperature() << ")";
}

}  // namespace shrink::dynamic
