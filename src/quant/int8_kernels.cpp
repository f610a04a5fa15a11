// Int8 kernels of converted Conv2d / Linear layers on LibTorch's quantized CPU operators, and the
// conversion of a fake-quantized layer into them (include/shrink/quant/int8_model.h).
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>

#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/quant/int8_model.h"
#include "shrink/quant/quantizers.h"

namespace shrink::quant {
namespace {

const c10::OperatorHandle& op(const char* name, const char* overload) {
  // Handles stay valid for the process; looked up once per operator.
  static std::mutex mutex;
  static std::vector<std::pair<std::string, std::unique_ptr<c10::OperatorHandle>>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = std::string(name) + "." + overload;
  for (const auto& [k, h] : cache)
    if (k == key) return *h;
  cache.emplace_back(key, std::make_unique<c10::OperatorHandle>(
                              c10::Dispatcher::singleton().findSchemaOrThrow(name, overload)));
  return *cache.back().second;
}

/// Runs `fn` with the global quantized engine set to `engine` (prepacking picks its backend from it).
template <class F>
auto with_engine(c10::QEngine engine, F&& fn) {
  auto& ctx = at::globalContext();
  const auto saved = ctx.qEngine();
  ctx.setQEngine(engine);
  struct Restore {
    c10::QEngine e;
    ~Restore() { at::globalContext().setQEngine(e); }
  } restore{saved};
  return fn();
}

c10::IValue prepack_linear(const at::Tensor& qweight, const at::Tensor& bias) {
  std::vector<c10::IValue> stack{qweight, bias.defined() ? c10::IValue(bias) : c10::IValue()};
  op("quantized::linear_prepack", "").callBoxed(&stack);
  return stack.at(0);
}

/// quantized::linear and quantized::conv2d.new take the same arguments: input, packed weight,
/// output scale and zero point.
at::Tensor run_packed(const char* name, const char* overload, const at::Tensor& qx, const c10::IValue& packed,
                      double scale, int64_t zero_point) {
  std::vector<c10::IValue> stack{qx, packed, scale, zero_point};
  op(name, overload).callBoxed(&stack);
  return stack.at(0).toTensor();
}

at::Tensor run_linear(const at::Tensor& qx, const c10::IValue& packed, double scale, int64_t zero_point) {
  return run_packed("quantized::linear", "", qx, packed, scale, zero_point);
}

c10::IValue prepack_conv(const at::Tensor& qweight, const at::Tensor& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  std::vector<c10::IValue> stack{qweight,
                                 bias.defined() ? c10::IValue(bias) : c10::IValue(),
                                 c10::List<int64_t>(stride),
                                 c10::List<int64_t>(padding),
                                 c10::List<int64_t>(dilation),
                                 groups};
  op("quantized::conv2d_prepack", "").callBoxed(&stack);
  return stack.at(0);
}

at::Tensor run_conv(const at::Tensor& qx, const c10::IValue& packed, double scale, int64_t zero_point) {
  return run_packed("quantized::conv2d", "new", qx, packed, scale, zero_point);
}

/// Whether `engine` computes a worst-case product sum exactly (255 * 127 over 64 inputs): on CPUs
/// without VNNI, onednn adds u8*s8 pairs in saturating int16 and does not.
bool exact_on_worst_case(c10::QEngine engine) {
  try {
    return with_engine(engine, [] {
      const auto qw = at::quantize_per_tensor(at::full({4, 64}, 127.0), 1.0, 0, at::kQInt8);
      const auto qx = at::quantize_per_tensor(at::full({2, 64}, 255.0), 1.0, 0, at::kQUInt8);
      const double want = 255.0 * 127.0 * 64.0;
      const auto lin = run_linear(qx, prepack_linear(qw, {}), want / 255.0, 0).dequantize();
      const auto cw = at::quantize_per_tensor(at::full({4, 64, 1, 1}, 127.0), 1.0, 0, at::kQInt8);
      const auto cx = at::quantize_per_tensor(at::full({1, 64, 2, 2}, 255.0), 1.0, 0, at::kQUInt8);
      const auto conv = run_conv(cx, prepack_conv(cw, {}, {1, 1}, {0, 0}, {1, 1}, 1), want / 255.0, 0).dequantize();
      return (lin - want).abs().max().item<double>() < 1.0 && (conv - want).abs().max().item<double>() < 1.0;
    });
  } catch (const c10::Error&) {
    return false;
  }
}

/// Whether onednn computes the full 8-bit ranges exactly on this CPU (VNNI).
bool onednn_exact() {
  static const bool exact = [] {
    const auto& supported = at::globalContext().supportedQEngines();
    return std::find(supported.begin(), supported.end(), c10::QEngine::ONEDNN) != supported.end() &&
           exact_on_worst_case(c10::QEngine::ONEDNN);
  }();
  return exact;
}

c10::QEngine chosen_engine() {
  static const c10::QEngine engine = [] {
    const auto& supported = at::globalContext().supportedQEngines();
    auto has = [&](c10::QEngine e) { return std::find(supported.begin(), supported.end(), e) != supported.end(); };
    if (const char* forced = std::getenv("SHRINK_QENGINE")) {
      const std::string f = forced;
      TORCH_CHECK(f == "onednn" || f == "qnnpack", "SHRINK_QENGINE must be onednn or qnnpack, got '", f, "'");
      const auto e = f == "onednn" ? c10::QEngine::ONEDNN : c10::QEngine::QNNPACK;
      TORCH_CHECK(has(e), "SHRINK_QENGINE=", f, ": this LibTorch has no such quantized engine");
      return e;
    }
    if (onednn_exact()) return c10::QEngine::ONEDNN;
    TORCH_CHECK(has(c10::QEngine::QNNPACK), "int8 inference: this LibTorch has neither an exact onednn nor qnnpack");
    return c10::QEngine::QNNPACK;
  }();
  return engine;
}

/// The engine for one layer: onednn when it is exact on this CPU, or when the layer's integers
/// cannot saturate its int16 pair sums (2 * input quant_max * max|w| <= 32767: 7-bit weights or
/// 7-bit inputs); else chosen_engine() (qnnpack without VNNI).
c10::QEngine layer_engine(const Int8Layer& layer) {
  if (std::getenv("SHRINK_QENGINE") || onednn_exact()) return chosen_engine();
  const auto& supported = at::globalContext().supportedQEngines();
  if (std::find(supported.begin(), supported.end(), c10::QEngine::ONEDNN) == supported.end()) return chosen_engine();
  const int64_t max_w = layer.weight.numel() ? layer.weight.abs().max().item<int64_t>() : 0;
  return 2 * layer.input.quant_max * max_w <= 32767 ? c10::QEngine::ONEDNN : chosen_engine();
}

at::Tensor quantized_weight(const Int8Layer& layer) {
  if (layer.weight_scale.numel() == 1)
    return at::_make_per_tensor_quantized_tensor(layer.weight, layer.weight_scale.item<double>(), 0);
  return at::_make_per_channel_quantized_tensor(layer.weight, layer.weight_scale.to(at::kDouble),
                                                layer.weight_zero_point.to(at::kLong), 0);
}

/// Quantizes a float activation onto `grid` (clamped first when the grid is narrower than 8 bits).
at::Tensor quantize_input(const at::Tensor& x, const ActivationGrid& grid) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "int8 kernel: expects a float32 CPU input, got ", x.scalar_type(), " on ", x.device());
  // Vectorized float ops instead of at::quantize_per_tensor (a scalar loop without fbgemm: ~4x
  // slower here), computed as fake_quantize_per_tensor_affine does: nearbyint(x * (1.0f / scale)).
  const float inv_scale = 1.0f / static_cast<float>(grid.scale);
  auto ints = x.mul(inv_scale).round_().add_(static_cast<double>(grid.zero_point))
                  .clamp_(static_cast<double>(grid.quant_min), static_cast<double>(grid.quant_max))
                  .to(at::kByte);
  return at::_make_per_tensor_quantized_tensor(ints, grid.scale, grid.zero_point);
}

at::Tensor dequantize_output(const at::Tensor& q, const ActivationGrid& grid) {
  // (q - zero_point) * scale in float ops (at::dequantize is a scalar loop here too).
  auto ints = q.int_repr().to(at::kFloat);
  if (grid.quant_min > 0 || grid.quant_max < 255)  // an output quantizer of fewer than 8 bits
    ints.clamp_(static_cast<double>(grid.quant_min), static_cast<double>(grid.quant_max));
  return ints.sub_(static_cast<double>(grid.zero_point)).mul_(grid.scale);
}

class Int8ConvKernel : public nn::LayerKernel {
 public:
  Int8ConvKernel(const Int8Layer& layer, const nn::Conv2dOptions& o) : input_(layer.input), output_(layer.output) {
    const auto qw = quantized_weight(layer);
    packed_ = with_engine(layer_engine(layer), [&] {
      return prepack_conv(qw, layer.bias, *o.stride(), *o.padding(), *o.dilation(), o.groups());
    });
  }
  at::Tensor forward(const at::Tensor& input) override {
    const bool unbatched = input.dim() == 3;
    TORCH_CHECK(input.dim() == 4 || unbatched, "int8 conv kernel: expects [N, C, H, W] or [C, H, W], got ",
                input.sizes());
    // Channels-last all the way: the quantized kernels compute NHWC, and the float glue between
    // layers (ReLU, adds, identity BatchNorms) keeps the layout, so only the model's input converts.
    const auto x = (unbatched ? input.unsqueeze(0) : input).contiguous(at::MemoryFormat::ChannelsLast);
    auto y = dequantize_output(run_conv(quantize_input(x, input_), packed_, output_.scale, output_.zero_point), output_);
    return unbatched ? y.squeeze(0) : y;
  }

 private:
  ActivationGrid input_, output_;
  c10::IValue packed_;
};

class Int8LinearKernel : public nn::LayerKernel {
 public:
  explicit Int8LinearKernel(const Int8Layer& layer)
      : input_(layer.input), output_(layer.output), in_features_(layer.weight.size(1)) {
    const auto qw = quantized_weight(layer);
    packed_ = with_engine(layer_engine(layer), [&] { return prepack_linear(qw, layer.bias); });
  }
  at::Tensor forward(const at::Tensor& input) override {
    TORCH_CHECK(input.dim() >= 1 && input.size(-1) == in_features_, "int8 linear kernel: expects [*, ", in_features_,
                "], got ", input.sizes());
    auto sizes = input.sizes().vec();
    const auto x = input.reshape({-1, in_features_});
    auto y = dequantize_output(run_linear(quantize_input(x, input_), packed_, output_.scale, output_.zero_point), output_);
    sizes.back() = y.size(1);
    return y.reshape(sizes);
  }

 private:
  ActivationGrid input_, output_;
  int64_t in_features_;
  c10::IValue packed_;
};

// --- conversion -------------------------------------------------------------------------------

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw UserError("int8: layer '" + path + "' " + why);
}

/// The quint8 grid of an activation quantizer (per tensor, at most 8 bits).
ActivationGrid activation_grid(const std::string& path, const char* which, nn::TensorQuantizer* slot) {
  auto* q = as_quantizer(slot);
  if (!q) refuse(path, std::string("has a ") + which + " quantizer that is not a Shrink quantizer");
  const auto affine = q->affine();
  if (!affine) refuse(path, std::string("has a ") + which + " quantizer (" + q->describe() + ") that is not affine");
  if (!q->enabled()) refuse(path, std::string("has its ") + which + " quantizer disabled");
  if (auto* u = dynamic_cast<UniformQuantizerImpl*>(q); u && !u->calibrated())
    refuse(path, std::string("has a ") + which + " quantizer that never saw data (no range)");
  if (affine->per_channel || affine->scale.numel() != 1)
    refuse(path, std::string("has a per-channel ") + which + " quantizer (int8 kernels take one activation scale)");
  if (affine->quant_max - affine->quant_min > 255)
    refuse(path, std::string("has a ") + which + " quantizer (" + q->describe() + ") of more than 8 bits");
  ActivationGrid g;
  g.scale = affine->scale.item<double>();
  // Signed grids shift onto quint8: q' = q - quant_min (zero point 2^(b-1) for symmetric).
  g.zero_point = affine->zero_point.item<int64_t>() - affine->quant_min;
  g.quant_min = 0;
  g.quant_max = affine->quant_max - affine->quant_min;
  if (g.zero_point < 0 || g.zero_point > 255 || !(g.scale > 0))
    refuse(path, std::string("has a ") + which + " quantizer with an unusable grid (scale " + std::to_string(g.scale) +
                     ", zero point " + std::to_string(affine->zero_point.item<int64_t>()) + ")");
  return g;
}

ActivationGrid calibrated_grid(const std::string& path, const std::optional<OutputRange>& range) {
  if (!range) refuse(path, "saw no calibration batch (its output range is unknown)");
  // The range always contains 0, so 0 is exact (as PyTorch's observers do).
  const double lo = std::min(range->min, 0.0), hi = std::max(range->max, 0.0);
  ActivationGrid g;
  g.scale = std::max((hi - lo) / 255.0, 1e-8);
  g.zero_point = std::clamp<int64_t>(std::llround(-lo / g.scale), 0, 255);
  return g;
}

/// Int8 values of `weight` on the weight quantizer's grid: q = round(Q(w) / scale) recovers the
/// integers exactly, whichever rounding the quantizer uses.
void quantize_weight(const std::string& path, nn::TensorQuantizer* slot, const torch::Tensor& weight, Int8Layer& out) {
  auto* q = as_quantizer(slot);
  if (!slot) refuse(path, "has no weight quantizer");
  if (!q) refuse(path, "has a weight quantizer that is not a Shrink quantizer");
  if (!q->enabled()) refuse(path, "has its weight quantizer disabled");
  const auto wq = q->quantize(weight);  // eval mode: on the grid of the last training step's range
  const auto affine = q->affine();
  if (!affine)
    refuse(path, "has a weight quantizer (" + q->describe() + ") without an affine grid; int8 export needs uniform or lsq");
  if (affine->quant_max - affine->quant_min > 255 || affine->quant_min < -128 || affine->quant_max > 127)
    refuse(path, "has a weight quantizer (" + q->describe() + ") that does not fit int8 (at most 8 bits, signed)");
  if (affine->zero_point.ne(0).any().item<bool>())
    refuse(path, "has an asymmetric weight quantizer (" + q->describe() + "); int8 kernels need symmetric weights");
  const int64_t out_channels = weight.size(0);
  auto scale = affine->scale.to(torch::kFloat).flatten();
  if (scale.numel() != 1 && scale.numel() != out_channels)
    refuse(path, "has " + std::to_string(scale.numel()) + " weight scales for " + std::to_string(out_channels) + " channels");
  std::vector<int64_t> view(weight.dim(), 1);
  view[0] = -1;
  const auto ints = torch::round(wq / scale.clamp_min(1e-12).view(view)).clamp(affine->quant_min, affine->quant_max);
  out.weight = ints.to(torch::kChar).contiguous();
  out.weight_scale = scale.contiguous();
  out.weight_zero_point = torch::zeros({scale.numel()}, torch::kLong);
}

}  // namespace

torch::Tensor Int8Layer::dequantized_weight() const {
  std::vector<int64_t> view(weight.dim(), 1);
  view[0] = -1;
  return weight.to(torch::kFloat) * weight_scale.view(view);
}

std::string int8_engine() { return chosen_engine() == c10::QEngine::ONEDNN ? "onednn" : "qnnpack"; }

std::string int8_engine(const Int8Layer& layer) {
  return layer_engine(layer) == c10::QEngine::ONEDNN ? "onednn" : "qnnpack";
}

Int8Layer convert_layer(const std::string& path, nn::Conv2dImpl& conv, const std::optional<OutputRange>& range) {
  torch::NoGradGuard no_grad;
  if (conv.composite()) refuse(path, "is a composite (" + conv.options.form().str() + ") layer");
  const auto& slots = conv.quantizers();
  if (!slots.input) refuse(path, "has no input quantizer (int8 kernels need the input's grid)");
  Int8Layer out;
  out.path = path;
  out.conv = true;
  out.input = activation_grid(path, "input", slots.input);
  quantize_weight(path, slots.weight, conv.folded_weight().detach(), out);
  const auto& bn = conv.folded_batch_norm();
  auto bias = conv.bias.defined() ? conv.bias.detach().clone() : torch::Tensor();
  if (bn) {
    // The eval layer gives o = conv(x, Q(w s)) / s + b with s = fold_scale (1 where gamma is 0),
    // its BatchNorm then (o - mean) * g + beta with g = gamma / sigma: conv(x, Q(w s)) * g / s
    // + (b - mean) * g + beta. g = s except where gamma is 0: there the output is beta.
    auto g = torch::rsqrt(bn->running_var + bn->options.eps());
    if (bn->options.affine()) g = bn->weight.detach() * g;
    auto folded = -bn->running_mean * g;
    if (bias.defined()) folded = folded + bias * g;
    if (bn->options.affine()) folded = folded + bn->bias.detach();
    bias = folded.contiguous();
    out.weight.masked_fill_((g == 0).view({-1, 1, 1, 1}), 0);
  }
  out.bias = bias.defined() ? bias.to(torch::kFloat).contiguous() : torch::Tensor();
  out.output = slots.output && !bn ? activation_grid(path, "output", slots.output) : calibrated_grid(path, range);
  return out;
}

Int8Layer convert_layer(const std::string& path, nn::LinearImpl& linear, const std::optional<OutputRange>& range) {
  torch::NoGradGuard no_grad;
  if (linear.composite()) refuse(path, "is a low-rank (rank " + std::to_string(linear.options.rank()) + ") layer");
  const auto& slots = linear.quantizers();
  if (!slots.input) refuse(path, "has no input quantizer (int8 kernels need the input's grid)");
  Int8Layer out;
  out.path = path;
  out.conv = false;
  out.input = activation_grid(path, "input", slots.input);
  quantize_weight(path, slots.weight, linear.weight.detach(), out);
  out.bias = linear.bias.defined() ? linear.bias.detach().to(torch::kFloat).contiguous() : torch::Tensor();
  out.output = slots.output ? activation_grid(path, "output", slots.output) : calibrated_grid(path, range);
  return out;
}

std::shared_ptr<nn::LayerKernel> make_int8_kernel(const Int8Layer& layer, const nn::Conv2dImpl& conv) {
  TORCH_CHECK(layer.conv && layer.weight.dim() == 4, "make_int8_kernel: '", layer.path, "' is not a converted conv");
  TORCH_CHECK(layer.weight.sizes() == conv.weight.sizes(), "make_int8_kernel: '", layer.path, "' has weight ",
              layer.weight.sizes(), ", the layer ", conv.weight.sizes());
  return std::make_shared<Int8ConvKernel>(layer, conv.options);
}

std::shared_ptr<nn::LayerKernel> make_int8_kernel(const Int8Layer& layer, const nn::LinearImpl& linear) {
  TORCH_CHECK(!layer.conv && layer.weight.dim() == 2, "make_int8_kernel: '", layer.path, "' is not a converted linear");
  TORCH_CHECK(layer.weight.sizes() == linear.weight.sizes(), "make_int8_kernel: '", layer.path, "' has weight ",
              layer.weight.sizes(), ", the layer ", linear.weight.sizes());
  return std::make_shared<Int8LinearKernel>(layer);
}

}  // namespace shrink::quant
