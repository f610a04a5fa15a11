#include "shrink/quant/fake_quantize.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace shrink::quant {

namespace {

// Adding and subtracting 1.5 * 2^23 rounds a float of magnitude below 2^22 to an integer, half
// to even (the default rounding mode), in plain SSE2 arithmetic the compiler vectorizes.
constexpr float kRoundMagic = 12582912.0f;

inline float round_half_even(float v) { return (v + kRoundMagic) - kRoundMagic; }

constexpr int64_t kGrain = 32768;

struct Grid {
  float scale, lo, hi;  // lo, hi: the integer range shifted by the zero point
};

void forward_kernel(const float* x, float* y, int64_t n, Grid g) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = std::min(std::max(x[i] / g.scale, g.lo), g.hi);
      y[i] = round_half_even(v) * g.scale;
    }
  });
}

void backward_kernel(const float* x, const float* grad, float* out, int64_t n, Grid g) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // Clamped one step beyond the range first, so the rounding trick stays exact.
      const float r = round_half_even(std::min(std::max(x[i] / g.scale, g.lo - 1.0f), g.hi + 1.0f));
      out[i] = (r >= g.lo && r <= g.hi) ? grad[i] : 0.0f;
    }
  });
}

class FakeQuantizeFunction : public torch::autograd::Function<FakeQuantizeFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, double scale,
                               double lo, double hi) {
    auto x = input.contiguous();
    auto y = torch::empty_like(x);
    forward_kernel(x.data_ptr<float>(), y.data_ptr<float>(), x.numel(),
                   {static_cast<float>(scale), static_cast<float>(lo), static_cast<float>(hi)});
    ctx->save_for_backward({x});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    const auto grad = grads[0].contiguous();
    auto out = torch::empty_like(x);
    backward_kernel(x.data_ptr<float>(), grad.data_ptr<float>(), out.data_ptr<float>(), x.numel(),
                    {static_cast<float>(ctx->saved_data["scale"].toDouble()),
                     static_cast<float>(ctx->saved_data["lo"].toDouble()),
                     static_cast<float>(ctx->saved_data["hi"].toDouble())});
    return {out, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fake_quantize_per_tensor(const torch::Tensor& x, double scale, int64_t zero_point, int64_t quant_min,
                                       int64_t quant_max) {
  TORCH_CHECK(quant_min <= quant_max && zero_point >= quant_min && zero_point <= quant_max,
              "fake_quantize_per_tensor: zero point ", zero_point, " outside [", quant_min, ", ", quant_max, "]");
  TORCH_CHECK(scale > 0, "fake_quantize_per_tensor: scale must be positive, got ", scale);
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat)
    return torch::fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max);
  return FakeQuantizeFunction::apply(x, scale, static_cast<double>(quant_min - zero_point),
                                     static_cast<double>(quant_max - zero_point));
}

}  // namespace shrink::quant
