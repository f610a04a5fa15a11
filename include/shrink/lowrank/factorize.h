#pragma once
// Turning a trained dense layer into a low-rank form whose factors come from the decompositions
// in decompose.h, so that before fine-tuning the layer approximates the original.
#include <torch/torch.h>

#include <cstdint>

#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink::lowrank {

/// What factorizing one layer did.
struct FactorizeReport {
  int64_t params_before = 0, params_after = 0;  ///< weights and biases of the layer
  double relative_error = 0;  ///< ||W - W_hat||_F / ||W||_F of the kernel (0 when exact)
};

/// Rebuilds `layer` (dense) in `form` (jaderberg, cp, tucker2 or bn_low_rank) and loads its
/// factors from the decomposition of its current weight (the bias moves to the last factor;
/// bn_low_rank's BatchNorm starts as the identity in eval). TORCH_CHECKs a dense layer, a
/// low-rank form and ranks the kernel allows. `cp_iterations`/`tucker_iterations`: ALS sweeps
/// and HOOI sweeps; `seed`: CP's random start columns.
FactorizeReport factorize_conv(nn::Conv2dImpl& layer, const nn::ConvForm& form, int64_t cp_iterations = 100,
                               int64_t tucker_iterations = 0, uint64_t seed = 0);

/// Moves the floating parameters and buffers of `module` to `device` and `dtype` and the others
/// (BatchNorm's num_batches_tracked) to `device` only: what a rebuilt layer needs to match its
/// model (Module::to(dtype) would also cast integer buffers).
void match_device_and_dtype(torch::nn::Module& module, const torch::Device& device, torch::Dtype dtype);

/// Rebuilds `layer` (dense) with `rank` (1 <= rank <= min(in, out)) from the truncated SVD of its
/// weight; the bias moves to `second`.
FactorizeReport factorize_linear(nn::LinearImpl& layer, int64_t rank);

}  // namespace shrink::lowrank
