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

/// Parses "cpu", "cuda", "cuda:N"; throws UserError on anything else or when CUDA is missing.
torch::Device parse_device(const std::string& text);

}  // namespace shrink::compat
