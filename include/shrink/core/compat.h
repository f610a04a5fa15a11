#pragma once
// The one place for calls that differ between LibTorch 1.13 (Debian) and 2.x (CUDA wheels).
#include <torch/torch.h>
#include <torch/version.h>

#include <string>

namespace shrink::compat {

/// "1.13.0", "2.4.1", ...
std::string torch_version();

/// Whether this LibTorch was built with CUDA and a device is present.
bool cuda_available();

/// CPU generator state as a byte tensor, and restoring it (for exact resume).
torch::Tensor cpu_rng_state();
void set_cpu_rng_state(const torch::Tensor& state);

/// Drops the optimizer's per-parameter state (momentum, Adam moments) of `param`, e.g. after
/// the parameter was resized or rewound; the optimizer starts that state afresh. The state's
/// key is version-specific. Returns whether there was state to drop.
bool erase_optimizer_state(torch::optim::Optimizer& optimizer, const torch::Tensor& param);

/// A CPU generator seeded with `seed` (for draws that must not disturb the global generator).
torch::Generator make_cpu_generator(uint64_t seed);

/// Parses "cpu", "cuda", "cuda:N"; throws UserError on anything else or when CUDA is missing.
torch::Device parse_device(const std::string& text);

}  // namespace shrink::compat
