#pragma once
// Per-tensor fake quantization on the hot path of QAT activations. LibTorch 1.13's CPU kernel
// (fake_quantize_per_tensor_affine) rounds element by element with std::nearbyint and writes a
// mask tensor for backward; on a ResNet-20 step its forward and backward cost about a third of
// the dense step. This one is one vectorizable pass forward (no mask) and one backward (the
// mask recomputed from the saved input), with the same values and gradients except on exact
// ties (ATen multiplies by 1 / scale, this divides by the scale, as the tests' reference does).
#include <torch/torch.h>

namespace shrink::quant {

/// (clamp(round(x / scale) + zero_point, quant_min, quant_max) - zero_point) * scale, rounding
/// half to even; gradient 1 where round(x / scale) + zero_point lies in [quant_min, quant_max],
/// else 0. Float32 CPU tensors take the fused kernels; others fall back to ATen's op.
torch::Tensor fake_quantize_per_tensor(const torch::Tensor& x, double scale, int64_t zero_point, int64_t quant_min,
                                       int64_t quant_max);

}  // namespace shrink::quant
