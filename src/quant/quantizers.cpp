#include "shrink/quant/quantizers.h"

#include "shrink/quant/fake_quantize.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace shrink::quant {

namespace {

bool is_one_of(const std::string& v, std::initializer_list<const char*> names) {
  for (const auto* n : names)
    if (v == n) return true;
  return false;
}

void require(bool ok, const std::string& key, const std::string& message) {
  if (!ok) throw std::invalid_argument(key + ": " + message);
}

/// Reduction dims of a per-channel statistic: all but dim 0.
std::vector<int64_t> non_channel_dims(const torch::Tensor& x) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

/// `v` ([C]) shaped to broadcast along dim 0 of `x`.
torch::Tensor along_dim0(const torch::Tensor& v, const torch::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = v.numel();
  return v.view(shape);
}

/// sign with +1 at zero, straight-through where |x| <= 1 (the clamp's gradient).
torch::Tensor binary_ste(const torch::Tensor& x) {
  const auto clipped = x.clamp(-1.0, 1.0);
  const auto sign = torch::where(x >= 0, torch::ones_like(x), -torch::ones_like(x));
  return clipped + (sign - clipped).detach();
}

/// DoReFa's quantize_k on [0, 1], straight-through.
torch::Tensor quantize_unit(const torch::Tensor& r, int64_t bits) {
  const double n = std::pow(2.0, static_cast<double>(bits)) - 1.0;
  return r + (torch::round(r * n) / n - r).detach();
}

bool per_channel_weights(const QuantizerOptions& o, QuantizerRole role) {
  return role == QuantizerRole::weight && o.per_channel;
}

}  // namespace

std::pair<int64_t, int64_t> integer_range(int64_t bits, bool is_signed) {
  if (is_signed) return {-(int64_t{1} << (bits - 1)), (int64_t{1} << (bits - 1)) - 1};
  return {0, (int64_t{1} << bits) - 1};
}

void validate(const QuantizerOptions& o, QuantizerRole role) {
  const bool weight = role == QuantizerRole::weight;
  require(is_one_of(o.quantizer, {"uniform", "lsq", "pact", "fixed_point", "binary", "bwn", "sign", "ternary", "dorefa"}),
          "quantizer",
          "must be one of uniform, lsq, pact, fixed_point, binary, bwn, sign, ternary, dorefa (got '" + o.quantizer + "')");
  const auto& q = o.quantizer;
  if (q == "uniform")
    require((o.bits >= 2 && o.bits <= 8) || o.bits == 16, "bits",
            "uniform quantization takes 2 to 8 or 16 bits (got " + std::to_string(o.bits) + ")");
  if (q == "lsq")
    require(o.bits >= 2 && o.bits <= 8, "bits", "lsq takes 2 to 8 bits (got " + std::to_string(o.bits) + ")");
  if (q == "pact" || q == "dorefa")
    require(o.bits >= 1 && o.bits <= 8, "bits", q + " takes 1 to 8 bits (got " + std::to_string(o.bits) + ")");
  if (q == "fixed_point") {
    require(o.bits >= 2 && o.bits <= 24, "bits",
            "fixed_point takes a word of 2 to 24 bits (got " + std::to_string(o.bits) + ")");
    require(o.fraction_bits >= 0 && o.fraction_bits < o.bits, "fraction_bits",
            "must be in [0, bits - 1] (got " + std::to_string(o.fraction_bits) + " with bits " + std::to_string(o.bits) + ")");
  }
  require(is_one_of(o.range, {"minmax", "moving_average", "percentile"}), "range",
          "must be one of minmax, moving_average, percentile (got '" + o.range + "')");
  require(o.momentum > 0 && o.momentum <= 1, "momentum", "must be in (0, 1] (got " + fmt::format("{}", o.momentum) + ")");
  require(o.percentile > 50 && o.percentile <= 100, "percentile",
          "must be in (50, 100] (got " + fmt::format("{}", o.percentile) + ")");
  require(o.init_alpha > 0, "init_alpha", "must be > 0 (got " + fmt::format("{}", o.init_alpha) + ")");
  require(o.threshold > 0 && o.threshold < 1, "threshold", "must be in (0, 1) (got " + fmt::format("{}", o.threshold) + ")");
  if (!weight) {
    require(!o.per_channel, "per_channel", "activations are quantized per tensor");
    require(!is_one_of(q, {"binary", "bwn", "ternary"}), "quantizer",
            "'" + q + "' quantizes weights; binary activations are 'sign' (XNOR-Net)");
  } else {
    require(!is_one_of(q, {"pact", "sign"}), "quantizer",
            "'" + q + "' quantizes activations (weights: uniform, lsq, fixed_point, binary, bwn, ternary, dorefa)");
    require(!o.per_channel || is_one_of(q, {"uniform", "lsq", "ternary"}), "per_channel",
            "per-channel ranges exist for uniform, lsq and ternary (bwn is always per filter)");
  }
}

std::string Quantizer::describe() const {
  const auto& o = options_;
  const auto& q = o.quantizer;
  if (q == "uniform")
    return fmt::format("uniform({} bits, {}, {}, {})", o.bits, o.per_channel ? "per-channel" : "per-tensor",
                       o.symmetric ? "symmetric" : "asymmetric", o.range);
  if (q == "lsq")
    return fmt::format("lsq({} bits, {}, {})", o.bits, o.per_channel ? "per-channel" : "per-tensor",
                       o.symmetric ? "signed" : "unsigned");
  if (q == "pact") return fmt::format("pact({} bits)", o.bits);
  if (q == "fixed_point") return fmt::format("fixed_point({}.{}, stochastic rounding)", o.bits - o.fraction_bits, o.fraction_bits);
  if (q == "dorefa") return fmt::format("dorefa({} bits)", o.bits);
  if (q == "ternary") return fmt::format("ternary({}, threshold {})", o.per_channel ? "per-channel" : "per-tensor", o.threshold);
  return q;
}

// ---------------------------------------------------------------------------------------- uniform

UniformQuantizerImpl::UniformQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels)
    : Quantizer(options, role, per_channel_weights(options, role) ? channels : 1) {
  reset();
}

void UniformQuantizerImpl::reset() {
  const int64_t c = channels_;
  std::tie(qmin_, qmax_) = integer_range(options_.bits, options_.symmetric);
  min_val = register_buffer("min_val", torch::zeros({c}));
  max_val = register_buffer("max_val", torch::zeros({c}));
  scale = register_buffer("scale", torch::ones({c}));
  zero_point = register_buffer("zero_point", torch::zeros({c}, torch::kInt));
  observed = register_buffer("observed", torch::zeros({}, torch::kLong));
}

void UniformQuantizerImpl::set_range(const torch::Tensor& lo_in, const torch::Tensor& hi_in) {
  torch::NoGradGuard no_grad;
  // PyTorch's observers' conventions: the range always contains 0, so 0 is exact.
  const auto lo = lo_in.clamp_max(0), hi = hi_in.clamp_min(0);
  torch::Tensor s, zp;
  if (options_.symmetric) {
    s = torch::max(-lo, hi) / (static_cast<double>(qmax_ - qmin_) / 2.0);
    s = s.clamp_min(1e-8);
    zp = torch::zeros_like(s, torch::kInt);
  } else {
    s = ((hi - lo) / static_cast<double>(qmax_ - qmin_)).clamp_min(1e-8);
    zp = (static_cast<double>(qmin_) - torch::round(lo / s)).clamp(qmin_, qmax_).to(torch::kInt);
  }
  scale.copy_(s);
  zero_point.copy_(zp);
}

void UniformQuantizerImpl::observe(const torch::Tensor& input) {
  torch::NoGradGuard no_grad;
  const auto x = input.detach();
  torch::Tensor lo, hi;
  const bool per_channel = channels_ > 1 || options_.per_channel;
  if (options_.range == "percentile") {
    // Percentiles of a large activation are estimated on an evenly strided subsample.
    auto flat = per_channel ? x.reshape({x.size(0), -1}) : x.reshape({1, -1});
    const int64_t limit = int64_t{1} << 18;
    if (flat.size(1) > limit) flat = flat.slice(1, 0, flat.size(1), (flat.size(1) + limit - 1) / limit);
    const double q = options_.percentile / 100.0;
    lo = torch::quantile(flat, 1.0 - q, /*dim=*/1);
    hi = torch::quantile(flat, q, /*dim=*/1);
  } else if (per_channel) {
    std::tie(lo, hi) = torch::aminmax(x.reshape({x.size(0), -1}), 1);
  } else {
    std::tie(lo, hi) = torch::aminmax(x);
    lo = lo.reshape({1});
    hi = hi.reshape({1});
  }
  const auto first = observed == 0;
  if (options_.range == "minmax" && role_ == QuantizerRole::weight) {
    min_val.copy_(lo);
    max_val.copy_(hi);
  } else if (options_.range == "minmax") {
    min_val.copy_(torch::where(first, lo, torch::min(min_val, lo)));
    max_val.copy_(torch::where(first, hi, torch::max(max_val, hi)));
  } else {
    const double m = options_.momentum;
    min_val.copy_(torch::where(first, lo, min_val + m * (lo - min_val)));
    max_val.copy_(torch::where(first, hi, max_val + m * (hi - max_val)));
  }
  observed.add_(1);
  set_range(min_val, max_val);
}

torch::Tensor UniformQuantizerImpl::quantize(const torch::Tensor& x) {
  if (!enabled_) return x;
  // Ranges move only in training (weights: those of the current step's weight), so evaluating,
  // exporting or summarizing a model never changes what it computes.
  if (observing_ && is_training()) {
    observe(x);
  } else if (observed.item<int64_t>() == 0) {
    // Never calibrated: a frozen quantizer still takes its range from its first training batch;
    // in eval there is nothing to quantize with.
    if (!is_training()) return x;
    observe(x);
  }
  if (channels_ > 1)
    return torch::fake_quantize_per_channel_affine(x, scale, zero_point, 0, qmin_, qmax_);
  if (x.device().is_cpu())
    return fake_quantize_per_tensor(x, scale.item<double>(), zero_point.item<int64_t>(), qmin_, qmax_);
  return torch::fake_quantize_per_tensor_affine(x, scale, zero_point, qmin_, qmax_);  // no host sync
}

double UniformQuantizerImpl::stored_bits(const torch::Tensor& x) const {
  const double per_scale = options_.symmetric ? 32.0 : 64.0;  // float scale (+ zero point)
  return static_cast<double>(x.numel()) * static_cast<double>(options_.bits) + per_scale * static_cast<double>(channels_);
}

std::optional<AffineParams> UniformQuantizerImpl::affine() const {
  AffineParams p;
  p.scale = scale.clone();
  p.zero_point = zero_point.to(torch::kLong);
  p.quant_min = qmin_;
  p.quant_max = qmax_;
  p.per_channel = channels_ > 1;
  return p;
}

// -------------------------------------------------------------------------------------------- lsq

LsqQuantizerImpl::LsqQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels)
    : Quantizer(options, role, per_channel_weights(options, role) ? channels : 1) {
  reset();
}

void LsqQuantizerImpl::reset() {
  std::tie(qmin_, qmax_) = integer_range(options_.bits, options_.symmetric);
  step = register_parameter("step", torch::ones({channels_}));
  zero_point = register_buffer("zero_point", torch::zeros({channels_}));
  initialized = register_buffer("initialized", torch::zeros({}, torch::kLong));
}

torch::Tensor LsqQuantizerImpl::quantize(const torch::Tensor& x) {
  if (!enabled_) return x;
  const bool per_channel = channels_ > 1;
  const bool initialized_now = initialized.item<int64_t>() != 0;
  if (!is_training() && !initialized_now) return x;  // a step of 1 would round most inputs to 0
  if (is_training() && !initialized_now) {
    // Esser et al.: s0 = 2 mean|x| / sqrt(Qp).
    torch::NoGradGuard no_grad;
    auto mean_abs = per_channel ? x.detach().abs().reshape({x.size(0), -1}).mean(1) : x.detach().abs().mean().reshape({1});
    step.copy_((2.0 * mean_abs / std::sqrt(static_cast<double>(qmax_))).clamp_min(1e-8));
    initialized.fill_(1);
  }
  {
    torch::NoGradGuard no_grad;
    step.clamp_min_(1e-8);  // a step driven through zero would flip the grid
  }
  const double per_scale_elements = static_cast<double>(x.numel()) / static_cast<double>(channels_);
  const double grad_factor = 1.0 / std::sqrt(per_scale_elements * static_cast<double>(qmax_));
  if (per_channel)
    return torch::_fake_quantize_learnable_per_channel_affine(x, step, zero_point, 0, qmin_, qmax_, grad_factor);
  return torch::_fake_quantize_learnable_per_tensor_affine(x, step, zero_point, qmin_, qmax_, grad_factor);
}

double LsqQuantizerImpl::stored_bits(const torch::Tensor& x) const {
  // The step sizes are parameters of the quantizer module: `shrink summary` counts them there.
  return static_cast<double>(x.numel()) * static_cast<double>(options_.bits);
}

std::optional<AffineParams> LsqQuantizerImpl::affine() const {
  AffineParams p;
  p.scale = step.detach().clone();
  p.zero_point = torch::zeros({channels_}, torch::kLong);
  p.quant_min = qmin_;
  p.quant_max = qmax_;
  p.per_channel = channels_ > 1;
  return p;
}

// ------------------------------------------------------------------------------------------- pact

PactQuantizerImpl::PactQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels)
    : Quantizer(std::move(options), role, 1) {
  (void)channels;
  reset();
}

void PactQuantizerImpl::reset() { alpha = register_parameter("alpha", torch::full({1}, options_.init_alpha)); }

torch::Tensor PactQuantizerImpl::quantize(const torch::Tensor& x) {
  if (!enabled_) return x;
  {
    torch::NoGradGuard no_grad;
    alpha.clamp_min_(1e-4);
  }
  // y = clip(x, 0, alpha): d/dalpha = 1 where x >= alpha (Choi et al. eq. 3); the rounding is
  // straight-through and its step alpha / (2^b - 1) gets no gradient.
  const auto y = torch::where(x < alpha, torch::relu(x), alpha);
  const int64_t levels = (int64_t{1} << options_.bits) - 1;
  if (y.device().is_cpu())
    return fake_quantize_per_tensor(y, alpha.item<double>() / static_cast<double>(levels), 0, 0, levels);
  const auto s = (alpha.detach() / static_cast<double>(levels)).to(torch::kFloat);
  return torch::fake_quantize_per_tensor_affine(y, s, torch::zeros({1}, s.options().dtype(torch::kInt)), 0, levels);
}

double PactQuantizerImpl::stored_bits(const torch::Tensor& x) const {
  return static_cast<double>(x.numel()) * static_cast<double>(options_.bits);  // alpha: a module parameter
}

std::optional<AffineParams> PactQuantizerImpl::affine() const {
  AffineParams p;
  p.scale = alpha.detach() / static_cast<double>((int64_t{1} << options_.bits) - 1);
  p.zero_point = torch::zeros({1}, torch::kLong);
  p.quant_min = 0;
  p.quant_max = (int64_t{1} << options_.bits) - 1;
  return p;
}

// ------------------------------------------------------------------------------------ fixed point

FixedPointQuantizerImpl::FixedPointQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels)
    : Quantizer(std::move(options), role, 1) {
  (void)channels;
}

torch::Tensor FixedPointQuantizerImpl::quantize(const torch::Tensor& x) {
  if (!enabled_) return x;
  const double step = std::ldexp(1.0, -static_cast<int>(options_.fraction_bits));
  const auto [qmin, qmax] = integer_range(options_.bits, true);
  const auto y = x.clamp(static_cast<double>(qmin) * step, static_cast<double>(qmax) * step);
  torch::Tensor q;
  {
    torch::NoGradGuard no_grad;
    // Gupta et al.: round up with probability equal to the fraction below one step; to
    // nearest at inference. Draws come from the device's default generator (on CPU the
    // checkpointed one, so CPU runs resume exactly).
    q = is_training() ? torch::floor(y / step + torch::rand_like(y)) : torch::round(y / step);
    q = q.clamp_(static_cast<double>(qmin), static_cast<double>(qmax)).mul_(step);
  }
  return y + (q - y.detach());
}

double FixedPointQuantizerImpl::stored_bits(const torch::Tensor& x) const {
  return static_cast<double>(x.numel()) * static_cast<double>(options_.bits);
}

// ------------------------------------------------------------------------- binary, bwn, sign, ternary

BinaryQuantizerImpl::BinaryQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels)
    : Quantizer(options, role,
                options.quantizer == "bwn" || (options.quantizer == "ternary" && options.per_channel) ? channels : 1) {}

torch::Tensor BinaryQuantizerImpl::quantize(const torch::Tensor& x) {
  if (!enabled_) return x;
  const auto& q = options_.quantizer;
  if (q == "binary" || q == "sign") return binary_ste(x);
  const bool per_channel = channels_ > 1 || (q == "bwn" && x.dim() > 1);
  auto mean_abs = [&](const torch::Tensor& v) {
    return per_channel ? along_dim0(v.abs().mean(non_channel_dims(v)), v) : v.abs().mean();
  };
  if (q == "bwn") return mean_abs(x) * binary_ste(x);  // the scale keeps its gradient (XNOR-Net sec. 3.1)
  // ternary: delta = t * mean|w|, alpha = mean of |w| over |w| > delta, straight-through.
  torch::Tensor ternary;
  {
    torch::NoGradGuard no_grad;
    const auto a = x.abs();
    const auto delta = options_.threshold * mean_abs(x);
    const auto kept = (a > delta).to(x.scalar_type());
    torch::Tensor alpha;
    if (per_channel) {
      const auto dims = non_channel_dims(x);
      alpha = along_dim0((a * kept).sum(dims) / kept.sum(dims).clamp_min(1.0), x);
    } else {
      alpha = (a * kept).sum() / kept.sum().clamp_min(1.0);
    }
    ternary = alpha * torch::sign(x) * kept;
  }
  return x + (ternary - x.detach());
}

double BinaryQuantizerImpl::stored_bits(const torch::Tensor& x) const {
  const auto& q = options_.quantizer;
  const double n = static_cast<double>(x.numel());
  if (q == "binary" || q == "sign") return n;
  const double scales = q == "bwn" ? static_cast<double>(x.dim() > 1 ? x.size(0) : 1) : static_cast<double>(channels_);
  return (q == "ternary" ? 2.0 : 1.0) * n + 32.0 * scales;
}

// ----------------------------------------------------------------------------------------- dorefa

DorefaQuantizerImpl::DorefaQuantizerImpl(QuantizerOptions options, QuantizerRole role, int64_t channels)
    : Quantizer(std::move(options), role, 1) {
  (void)channels;
}

torch::Tensor DorefaQuantizerImpl::quantize(const torch::Tensor& x) {
  if (!enabled_) return x;
  const int64_t k = options_.bits;
  if (role_ == QuantizerRole::activation) return quantize_unit(x.clamp(0.0, 1.0), k);
  if (k == 1) {
    // Zhou et al. eq. 7: sign(w) * E(|w|), gradient straight through.
    torch::Tensor b;
    {
      torch::NoGradGuard no_grad;
      b = torch::where(x >= 0, torch::ones_like(x), -torch::ones_like(x)) * x.abs().mean();
    }
    return x + (b - x.detach());
  }
  const auto t = torch::tanh(x);
  const auto unit = t / (2.0 * t.abs().max()) + 0.5;
  return 2.0 * quantize_unit(unit, k) - 1.0;
}

double DorefaQuantizerImpl::stored_bits(const torch::Tensor& x) const {
  return static_cast<double>(x.numel()) * static_cast<double>(options_.bits) + (role_ == QuantizerRole::weight ? 32.0 : 0.0);
}

// ---------------------------------------------------------------------------------------- factory

nn::QuantizerFactoryPtr make_quantizer_factory(const QuantizerOptions& options, QuantizerRole role, int64_t channels) {
  validate(options, role);
  auto factory = std::make_shared<nn::QuantizerFactory>();
  const auto& q = options.quantizer;
  std::function<std::shared_ptr<torch::nn::Module>()> make;
  if (q == "uniform")
    make = [=] { return std::make_shared<UniformQuantizerImpl>(options, role, channels); };
  else if (q == "lsq")
    make = [=] { return std::make_shared<LsqQuantizerImpl>(options, role, channels); };
  else if (q == "pact")
    make = [=] { return std::make_shared<PactQuantizerImpl>(options, role, channels); };
  else if (q == "fixed_point")
    make = [=] { return std::make_shared<FixedPointQuantizerImpl>(options, role, channels); };
  else if (q == "dorefa")
    make = [=] { return std::make_shared<DorefaQuantizerImpl>(options, role, channels); };
  else
    make = [=] { return std::make_shared<BinaryQuantizerImpl>(options, role, channels); };
  factory->make = make;
  factory->description = as_quantizer(dynamic_cast<nn::TensorQuantizer*>(make().get()))->describe();
  return factory;
}

Quantizer* as_quantizer(nn::TensorQuantizer* slot) { return dynamic_cast<Quantizer*>(slot); }

void recompute_quantizer_grids(torch::nn::Module& model) {
  for (const auto& m : model.modules(/*include_self=*/true))
    if (auto* q = m->as<UniformQuantizerImpl>())
      if (q->calibrated()) q->set_range(q->min_val, q->max_val);
}

namespace detail {

torch::Tensor reference_fake_quantize(const torch::Tensor& x, const torch::Tensor& scale,
                                      const torch::Tensor& zero_point, int64_t quant_min, int64_t quant_max,
                                      bool per_channel) {
  auto in = x.to(torch::kDouble).contiguous();
  auto out = torch::empty_like(in);
  const int64_t rows = per_channel ? in.size(0) : 1;
  const int64_t per_row = in.numel() / rows;
  auto src = in.reshape({rows, per_row});
  auto dst = out.reshape({rows, per_row});
  auto s = scale.to(torch::kDouble), z = zero_point.to(torch::kDouble);
  for (int64_t r = 0; r < rows; ++r) {
    const double sr = s[per_channel ? r : 0].item<double>();
    const double zr = z[per_channel ? r : 0].item<double>();
    for (int64_t i = 0; i < per_row; ++i) {
      const double v = src[r][i].item<double>();
      // In float like the kernels (x / scale, round half to even): the extreme value of a
      // symmetric range lies exactly on a tie, where double division could round the other way.
      double q = std::nearbyint(static_cast<float>(v) / static_cast<float>(sr)) + zr;
      q = std::min<double>(std::max<double>(q, static_cast<double>(quant_min)), static_cast<double>(quant_max));
      dst[r][i] = (q - zr) * sr;
    }
  }
  return out.to(x.scalar_type());
}

}  // namespace detail

}  // namespace shrink::quant
