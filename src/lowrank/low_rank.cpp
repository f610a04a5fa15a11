#include "shrink/lowrank/low_rank.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

#include "shrink/compression/method_errors.h"
#include "shrink/core/compat.h"
#include "shrink/core/error.h"
#include "shrink/lowrank/decompose.h"
#include "shrink/lowrank/factorize.h"
#include "shrink/nn/low_rank_conv.h"

namespace shrink::lowrank {

std::string svd_form_str(int64_t rank) { return fmt::format("svd({})", rank); }

namespace {

using nn::ConvForm;
using nn::ConvFormKind;

int64_t count_params(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

torch::Device model_device(const torch::nn::Module& model) {
  const auto params = model.parameters();
  return params.empty() ? torch::Device(torch::kCPU) : params.front().device();
}

torch::Dtype model_dtype(const torch::nn::Module& model) {
  const auto params = model.parameters();
  return params.empty() ? torch::kFloat : params.front().scalar_type();
}

/// Where a conv's factors run, per sample: P_in = input H * W (1x1 factors before the strided
/// one), vertical = H_out * W_in (the kh x 1 factor strides rows only), P_out = H_out * W_out.
/// Without a forward they are given per output position, with stride moving them exactly for
/// an input that tiles (P_in = s_h * s_w * P_out).
struct Positions {
  double in = 1, vertical = 1, out = 1;
  bool exact = false;
};

/// One targeted layer and what rank selection needs of it.
struct Layer {
  std::string path;
  nn::LinearImpl* linear = nullptr;
  nn::Conv2dImpl* conv = nullptr;
  int64_t in = 0, out = 0, kh = 1, kw = 1;
  bool bias = false;
  Positions pos;
  torch::Tensor spectrum, spectrum_out;  ///< singular values; tucker2: mode 1 (in) and mode 0 (out)
};

bool linear_scheme(const std::string& scheme) { return scheme == "svd"; }

ConvFormKind conv_kind(const std::string& scheme) { return nn::conv_form_kind(scheme); }

Layer describe(const std::string& path, torch::nn::Module& module) {
  Layer l;
  l.path = path;
  if ((l.linear = module.as<nn::LinearImpl>())) {
    l.in = l.linear->options.in_features();
    l.out = l.linear->options.out_features();
    l.bias = l.linear->options.bias();
  } else if ((l.conv = module.as<nn::Conv2dImpl>())) {
    l.in = l.conv->options.in_channels();
    l.out = l.conv->options.out_channels();
    l.kh = (*l.conv->options.kernel_size())[0];
    l.kw = (*l.conv->options.kernel_size())[1];
    l.bias = l.conv->options.bias();
    const auto stride = *l.conv->options.stride();
    l.pos.in = static_cast<double>(stride[0] * stride[1]);
    l.pos.vertical = static_cast<double>(stride[1]);
  }
  return l;
}

int64_t dense_params(const Layer& l) { return l.in * l.out * l.kh * l.kw + (l.bias ? l.out : 0); }

double dense_macs(const Layer& l) {
  return l.pos.out * static_cast<double>(l.in * l.out * l.kh * l.kw);
}

/// Parameters of `l` in the scheme with `sizes` (the form's own count, BatchNorm affine included).
int64_t form_params(const std::string& scheme, const Layer& l, const std::vector<int64_t>& sizes) {
  const int64_t b = l.bias ? l.out : 0, r = sizes[0];
  if (scheme == "svd") return r * (l.in + l.out) + b;
  if (scheme == "jaderberg") return r * (l.in * l.kh + l.out * l.kw) + b;
  if (scheme == "bn_low_rank") return r * (l.in * l.kh + l.out * l.kw) + 2 * r + b;
  if (scheme == "cp") return r * (l.in + l.kh + l.kw + l.out) + b;
  return sizes[0] * l.in + sizes[1] * sizes[0] * l.kh * l.kw + l.out * sizes[1] + b;  // tucker2
}

double form_macs(const std::string& scheme, const Layer& l, const std::vector<int64_t>& sizes) {
  const auto& p = l.pos;
  const double r = static_cast<double>(sizes[0]), in = static_cast<double>(l.in), out = static_cast<double>(l.out);
  const double kh = static_cast<double>(l.kh), kw = static_cast<double>(l.kw);
  if (scheme == "svd") return p.out * r * (in + out);
  if (scheme == "jaderberg" || scheme == "bn_low_rank") return p.vertical * in * kh * r + p.out * r * kw * out;
  if (scheme == "cp") return p.in * in * r + p.vertical * r * kh + p.out * r * (kw + out);
  const double r_out = static_cast<double>(sizes[1]);
  return p.in * in * r + p.out * (r_out * r * kh * kw + out * r_out);  // tucker2
}

/// The largest sizes the scheme allows (cp: none).
std::vector<int64_t> max_sizes(const std::string& scheme, const Layer& l) {
  constexpr int64_t unbounded = std::numeric_limits<int64_t>::max();
  if (scheme == "svd") return {std::min(l.in, l.out)};
  if (scheme == "jaderberg" || scheme == "bn_low_rank") return {std::min(l.in * l.kh, l.out * l.kw)};
  if (scheme == "tucker2") return {l.in, l.out};
  return {unbounded};
}

/// cp's maximal rank for the searches: where its parameters reach the dense layer's.
int64_t cp_max_rank(const Layer& l) {
  return std::max<int64_t>(1, l.in * l.out * l.kh * l.kw / (l.in + l.out + l.kh + l.kw));
}

torch::Tensor weight_of(const Layer& l) {
  const auto& w = l.linear ? l.linear->weight : l.conv->weight;
  return w.detach().to(torch::kCPU, torch::kDouble);
}

/// Singular values the energy rule and the searches read (computed once per layer).
void compute_spectra(const std::string& scheme, Layer& l) {
  if (l.spectrum.defined() || scheme == "cp") return;
  const auto w = weight_of(l);
  if (scheme == "svd") {
    l.spectrum = singular_values(w);
  } else if (scheme == "tucker2") {
    l.spectrum = singular_values(unfold(w, 1));
    l.spectrum_out = singular_values(unfold(w, 0));
  } else {
    l.spectrum = singular_values(jaderberg_matrix(w));
  }
}

/// Sizes at a shared level: energy kept per mode, or cp's fraction of its maximal rank.
std::vector<int64_t> sizes_at(const std::string& scheme, const Layer& l, double level) {
  if (scheme == "cp")
    return {std::max<int64_t>(1, std::llround(level * static_cast<double>(cp_max_rank(l))))};
  if (scheme == "tucker2") return {rank_for_energy(l.spectrum, level), rank_for_energy(l.spectrum_out, level)};
  return {rank_for_energy(l.spectrum, level)};
}

std::vector<int64_t> vbmf_sizes(const std::string& scheme, const Layer& l) {
  const auto w = weight_of(l);
  if (scheme == "svd") return {evbmf_rank(w)};
  if (scheme == "tucker2") return {evbmf_rank(unfold(w, 1)), evbmf_rank(unfold(w, 0))};
  return {evbmf_rank(jaderberg_matrix(w))};
}

std::string form_str(const std::string& scheme, const std::vector<int64_t>& sizes) {
  if (scheme == "svd") return svd_form_str(sizes[0]);
  return ConvForm{conv_kind(scheme), sizes}.str();
}

/// Fills the exact positions of every layer from one forward of zeros of `shape`, each conv
/// temporarily in the cp(1) form, whose factors run at all three resolutions. The weights and
/// the global generator are restored.
void probe_positions(ModelImpl& model, std::vector<Layer>& layers, const std::vector<int64_t>& shape) {
  const auto rng = compat::cpu_rng_state();
  const auto device = model_device(model);
  const auto dtype = model_dtype(model);
  const bool was_training = model.is_training();
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved(layers.size());
  auto restore = [&] {
    for (size_t i = 0; i < layers.size(); ++i) {
      auto* conv = layers[i].conv;
      if (!conv || !conv->composite()) continue;
      conv->set_form(ConvForm());
      match_device_and_dtype(*conv, device, dtype);
      torch::NoGradGuard no_grad;
      conv->weight.copy_(saved[i].first);
      if (saved[i].second.defined()) conv->bias.copy_(saved[i].second);
    }
    compat::set_cpu_rng_state(rng);
    model.train(was_training);
  };
  try {
    for (size_t i = 0; i < layers.size(); ++i) {
      auto* conv = layers[i].conv;
      if (!conv) continue;
      saved[i].first = conv->weight.detach().clone();
      if (conv->bias.defined()) saved[i].second = conv->bias.detach().clone();
      conv->set_form(ConvForm{ConvFormKind::cp, {1}});
      match_device_and_dtype(*conv, device, dtype);
    }
    std::vector<int64_t> input_shape = {1};
    input_shape.insert(input_shape.end(), shape.begin(), shape.end());
    torch::NoGradGuard no_grad;
    model.eval();
    model.forward(torch::zeros(input_shape, torch::TensorOptions().device(device).dtype(dtype)));
    model.train(was_training);
    for (auto& l : layers) {
      if (l.linear) {
        l.pos.out = static_cast<double>(l.linear->macs_per_sample()) / static_cast<double>(l.in * l.out);
      } else {
        auto& cp = *l.conv->form_module()->as<nn::CpConvImpl>();
        l.pos.in = static_cast<double>(cp.pointwise_in->macs_per_sample()) / static_cast<double>(l.in);
        l.pos.vertical = static_cast<double>(cp.vertical->macs_per_sample()) / static_cast<double>(l.kh);
        l.pos.out = static_cast<double>(cp.horizontal->macs_per_sample()) / static_cast<double>(l.kw);
      }
      l.pos.exact = true;
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
}

/// The Shrink layer at `path` (null when the model has none there).
std::shared_ptr<torch::nn::Module> find_module(torch::nn::Module& model, const std::string& path) {
  auto modules = model.named_modules("", /*include_self=*/false);
  auto* found = modules.find(path);
  return found ? *found : nullptr;
}

}  // namespace

OptionSchema<LowRankFactorization::Options> LowRankFactorization::schema() {
  OptionSchema<Options> s;
  s.add("scheme", &Options::scheme,
        "svd: truncated SVD of Linear layers (in -> r -> out); for Conv2d layers: jaderberg (kh x 1 then 1 x kw "
        "through r channels, Jaderberg et al. 2014), bn_low_rank (the same with BatchNorm between, Tai et al. "
        "2016), cp (1x1, kh x 1 and 1 x kw depthwise, 1x1 with CP rank R, Lebedev et al. 2015), tucker2 (1x1 to "
        "rank_in, k x k to rank_out, 1x1, Kim et al. 2016). Targets of the other layer kind are left alone.")
      .choices({"svd", "jaderberg", "cp", "tucker2", "bn_low_rank"});
  s.add("rank", &Options::rank,
        "One rank for every target (tucker2: both modes), clamped to what the layer allows (svd: min(in, out); "
        "jaderberg, bn_low_rank: min(in * kh, out * kw); tucker2: in and out; cp: no bound, a CP rank above the "
        "layer's may still help the fit). 0 (default): another rule.")
      .min(1);
  s.add("ranks", &Options::ranks, "tucker2 only: [rank_in, rank_out] for every target (clamped to in, out).");
  s.add("energy", &Options::energy,
        "Smallest ranks keeping this fraction of the squared singular values (tucker2: of each mode's "
        "unfolding; jaderberg, bn_low_rank: of the [(in kh), (out kw)] matrix), in (0, 1]. Not for cp. 0 "
        "(default): another rule.")
      .range(0, 1);
  s.add("vbmf", &Options::vbmf,
        "Ranks by empirical variational Bayesian matrix factorization (svd: of W; tucker2: of the mode-0 and "
        "mode-1 unfoldings, as Kim et al. 2016; jaderberg, bn_low_rank: of the [(in kh), (out kw)] matrix). "
        "Not for cp.");
  s.add("param_reduction", &Options::param_reduction,
        "Global target: the targets' parameters together become at most 1/N of what they were, with one energy "
        "level shared by all targets (cp: one fraction of a maximal rank), the largest that meets it.")
      .min(1);
  s.add("mac_reduction", &Options::mac_reduction,
        "Like param_reduction for multiply-accumulates, counted exactly at the data's input size (one forward of "
        "zeros). From C++ without set_sample_shape(), MACs are estimated per output position and every target must "
        "meet the target on its own.")
      .min(1);
  s.add("init", &Options::init,
        "decompose: factors from the current weights (e.g. a trained model.weights; then fine-tune); random: "
        "built factorized with fresh weights and trained from scratch.")
      .choices({"decompose", "random"});
  s.add("cp_iterations", &Options::cp_iterations, "cp: alternating least squares sweeps.").min(1);
  s.add("tucker_iterations", &Options::tucker_iterations,
        "tucker2: higher-order orthogonal iteration sweeps after the HOSVD.")
      .min(0);
  return s;
}

LowRankFactorization::LowRankFactorization(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  const auto& o = options_;
  const bool has_where = spec_.where.valid() && spec_.where.is_map();
  std::vector<std::string> given;
  if (o.rank > 0) given.push_back("rank");
  if (!o.ranks.empty()) given.push_back("ranks");
  if (o.energy != 0 || (has_where && spec_.where.has("energy"))) given.push_back("energy");
  if (o.vbmf) given.push_back("vbmf");
  if (o.param_reduction > 0) given.push_back("param_reduction");
  if (o.mac_reduction > 0) given.push_back("mac_reduction");
  if (given.empty()) {
    const std::string msg = "low_rank needs one rank rule: rank, ranks (tucker2), energy, vbmf, param_reduction or "
                            "mac_reduction";
    if (has_where) spec_.where.fail(msg);
    throw UserError(spec_.method + ": " + msg);
  }
  if (given.size() > 1)
    fail_at_option(spec_, given[1], "give one rank rule only; this entry also sets " + given[0]);
  if (!(o.energy >= 0 && o.energy <= 1) || (given[0] == "energy" && o.energy <= 0))
    fail_at_option(spec_, "energy", fmt::format("must be in (0, 1] (got {})", o.energy));
  if (!o.ranks.empty()) {
    if (o.scheme != "tucker2")
      fail_at_option(spec_, "ranks", "is for scheme tucker2 ([rank_in, rank_out]); use rank for " + o.scheme);
    if (o.ranks.size() != 2)
      fail_at_option(spec_, "ranks", fmt::format("needs two ranks [rank_in, rank_out] (got {})", o.ranks.size()));
    for (size_t i = 0; i < 2; ++i)
      if (o.ranks[i] < 1)
        fail_at_option(spec_, "ranks", fmt::format("must be >= 1 (got {})", o.ranks[i]), static_cast<int64_t>(i));
  }
  if (o.scheme == "cp" && (given[0] == "energy" || given[0] == "vbmf"))
    fail_at_option(spec_, given[0],
                   "cp has no singular values to read ranks from; use rank, param_reduction or mac_reduction");
  const auto& s = spec_.schedule;
  if (s.start_epoch > 0) fail_at_option(spec_, "start_epoch", "low_rank factorizes before training (start at 0)");
  if (s.start_step > 0) fail_at_option(spec_, "start_step", "low_rank factorizes before training (start at 0)");
}

void LowRankFactorization::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  const bool linear = linear_scheme(options_.scheme);
  auto modules = model->named_modules("", /*include_self=*/false);
  // Layers inside composite layers (a model built factorized) are factors, not targets.
  std::vector<std::string> composite;
  for (const auto& item : modules) {
    auto* c = item.value()->as<nn::Conv2dImpl>();
    auto* f = item.value()->as<nn::LinearImpl>();
    if ((c && c->composite()) || (f && f->composite())) composite.push_back(item.key() + ".");
  }
  std::set<std::string> matched;
  for (const auto& [path, m] : target_modules_) matched.insert(path);
  for (const auto& [name, p] : target_parameters_) {
    const auto dot = name.rfind('.');
    if (dot != std::string::npos && name.substr(dot + 1) == "weight") matched.insert(name.substr(0, dot));
  }
  paths_.clear();
  std::string grouped, other;
  for (const auto& item : modules) {
    const auto& path = item.key();
    if (!matched.count(path)) continue;
    if (std::any_of(composite.begin(), composite.end(), [&](const auto& c) { return path.rfind(c, 0) == 0; }))
      continue;
    auto* conv = item.value()->as<nn::Conv2dImpl>();
    auto* fc = item.value()->as<nn::LinearImpl>();
    if (linear && fc && !fc->composite()) {
      paths_.push_back(path);
    } else if (!linear && conv && !conv->composite()) {
      if (conv->options.groups() == 1)
        paths_.push_back(path);
      else
        grouped += (grouped.empty() ? "" : ", ") + path;
    } else if (conv || fc) {
      other += (other.empty() ? "" : ", ") + path;
    }
  }
  if (paths_.empty()) {
    std::string msg = linear ? "select no Linear layer to factorize (scheme svd factorizes nn::Linear layers)"
                             : "select no Conv2d layer to factorize (scheme " + options_.scheme +
                                   " factorizes nn::Conv2d layers with groups 1; svd factorizes Linear layers)";
    if (!grouped.empty()) msg += "; grouped convs are left alone: " + grouped;
    if (!other.empty()) msg += "; matched layers of the other kind: " + other;
    fail_at_option(spec_, "targets", msg);
  }
}

void LowRankFactorization::prepare_model(TrainContext& ctx) {
  if (applied_) return;
  if (restored_)
    rebuild(ctx);
  else
    factorize(ctx);
  applied_ = true;
}

void LowRankFactorization::factorize(TrainContext& ctx) {
  const auto& o = options_;
  const std::string& scheme = o.scheme;
  auto& model = *ctx.model;
  std::vector<Layer> layers;
  for (const auto& path : paths_) {
    auto module = find_module(model, path);
    TORCH_CHECK(module, "low_rank: bound layer ", path, " is not in the model");
    auto l = describe(path, *module);
    const bool masked = l.linear ? l.linear->masked() : l.conv->masked();
    if (masked)
      throw UserError(name() + ": layer '" + path +
                      "' has a pruning mask (an earlier compression entry); low_rank cannot factorize a masked "
                      "layer: do not target the same layers with pruning and low_rank in one recipe");
    if (l.linear && l.linear->composite())
      fail_at_option(spec_, "targets",
                     "layer " + path + " is already factorized (rank " + std::to_string(l.linear->options.rank()) +
                         ", by an earlier entry); it cannot be factorized again");
    if (l.conv && l.conv->composite())
      fail_at_option(spec_, "targets",
                     "layer " + path + " is already in form " + l.conv->options.form().str() +
                         " (set by an earlier entry); it cannot be factorized again");
    layers.push_back(std::move(l));
  }
  if (!sample_shape_.empty()) probe_positions(model, layers, sample_shape_);
  const bool exact_macs =
      !layers.empty() && std::all_of(layers.begin(), layers.end(), [](const Layer& l) { return l.pos.exact; });

  // Ranks by the entry's rule.
  std::vector<std::vector<int64_t>> sizes(layers.size());
  report_.clear();
  if (o.rank > 0 || !o.ranks.empty() || o.vbmf) {
    for (size_t i = 0; i < layers.size(); ++i) {
      if (o.vbmf)
        sizes[i] = vbmf_sizes(scheme, layers[i]);
      else if (!o.ranks.empty())
        sizes[i] = o.ranks;
      else
        sizes[i] = scheme == "tucker2" ? std::vector<int64_t>{o.rank, o.rank} : std::vector<int64_t>{o.rank};
    }
  } else if (o.energy > 0) {
    for (size_t i = 0; i < layers.size(); ++i) {
      compute_spectra(scheme, layers[i]);
      sizes[i] = sizes_at(scheme, layers[i], o.energy);
    }
  } else {
    const bool by_macs = o.mac_reduction > 0;
    const double n = by_macs ? o.mac_reduction : o.param_reduction;
    const std::string key = by_macs ? "mac_reduction" : "param_reduction";
    for (auto& l : layers) compute_spectra(scheme, l);
    double before = 0;
    for (const auto& l : layers) before += by_macs ? dense_macs(l) : static_cast<double>(dense_params(l));
    // Per layer when MACs are only known per output position: layers cannot be weighed.
    const bool per_layer = by_macs && !exact_macs;
    auto cost = [&](const Layer& l, const std::vector<int64_t>& s) {
      return by_macs ? form_macs(scheme, l, s) : static_cast<double>(form_params(scheme, l, s));
    };
    auto total_at = [&](double level) {
      double total = 0;
      for (const auto& l : layers) total += cost(l, sizes_at(scheme, l, level));
      return total;
    };
    auto meets = [&](double level) {
      if (!per_layer) return total_at(level) <= before / n;
      return std::all_of(layers.begin(), layers.end(), [&](const Layer& l) {
        return cost(l, sizes_at(scheme, l, level)) <= (by_macs ? dense_macs(l) : dense_params(l)) / n;
      });
    };
    constexpr double lowest = 1e-12;  // rank 1 everywhere
    if (!meets(lowest))
      fail_at_option(spec_, key,
                     fmt::format("cannot be met: rank 1 in every targeted layer gives {:.0f} -> {:.0f} {} (x{:.3f}){}",
                                 before, total_at(lowest), by_macs ? "MACs" : "parameters", before / total_at(lowest),
                                 per_layer ? " (each layer must meet it: the input size is unknown here)" : ""));
    double lo = lowest, hi = 1.0;
    if (meets(hi)) {
      lo = hi;
    } else {
      // The cost is a step function of the level: bisect to its last feasible step.
      for (int it = 0; it < 60; ++it) {
        const double mid = 0.5 * (lo + hi);
        (meets(mid) ? lo : hi) = mid;
      }
    }
    level_ = lo;
    for (size_t i = 0; i < layers.size(); ++i) sizes[i] = sizes_at(scheme, layers[i], level_);
    report_.push_back(fmt::format("{}: {} {}: {} {:.6g}{}", name(), key, n, scheme == "cp" ? "fraction of cp's maximal rank" : "energy", level_,
                                  per_layer ? " (each layer meets it on its own: without the input size, MACs are "
                                              "estimated per output position)"
                                            : ""));
  }

  // Clamp to what each layer allows.
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto limit = max_sizes(scheme, layers[i]);
    for (size_t k = 0; k < sizes[i].size(); ++k) {
      const int64_t want = sizes[i][k];
      sizes[i][k] = std::clamp<int64_t>(want, 1, limit[k]);
      if (sizes[i][k] != want)
        report_.push_back(fmt::format("{}: {}: rank {} clamped to {} (the {} layer allows {})", name(),
                                      layers[i].path, want, sizes[i][k],
                                      layers[i].linear ? fmt::format("{}x{}", layers[i].out, layers[i].in)
                                                       : fmt::format("{}x{}x{}x{}", layers[i].out, layers[i].in,
                                                                     layers[i].kh, layers[i].kw),
                                      limit[k]));
    }
  }

  // Factorize.
  done_.clear();
  const auto device = model_device(model);
  const auto dtype = model_dtype(model);
  int64_t params_before = 0, params_after = 0;
  double macs_before = 0, macs_after = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& l = layers[i];
    LayerFactorization f;
    f.path = l.path;
    f.form = form_str(scheme, sizes[i]);
    f.params_before = l.linear ? count_params(*l.linear) : count_params(*l.conv);
    if (o.init == "decompose") {
      const auto r = l.linear ? factorize_linear(*l.linear, sizes[i][0])
                              : factorize_conv(*l.conv, ConvForm{conv_kind(scheme), sizes[i]}, o.cp_iterations,
                                               o.tucker_iterations, static_cast<uint64_t>(i));
      f.relative_error = r.relative_error;
    } else if (l.linear) {
      l.linear->set_rank(sizes[i][0]);
      match_device_and_dtype(*l.linear, device, dtype);
    } else {
      l.conv->set_form(ConvForm{conv_kind(scheme), sizes[i]});
      match_device_and_dtype(*l.conv, device, dtype);
    }
    f.params_after = l.linear ? count_params(*l.linear) : count_params(*l.conv);
    params_before += f.params_before;
    params_after += f.params_after;
    macs_before += dense_macs(l);
    macs_after += form_macs(scheme, l, sizes[i]);
    report_.push_back(fmt::format("{}: {}: {}, params {} -> {}, {}", name(), l.path, f.form, f.params_before,
                                  f.params_after,
                                  f.relative_error >= 0 ? fmt::format("relative error {:.4g}", f.relative_error)
                                                        : std::string("random init")));
    done_.push_back(std::move(f));
  }
  std::string total = fmt::format("{}: factorized {} layers ({}, init {}): params {} -> {} (x{:.2f})", name(),
                                  done_.size(), scheme, o.init, params_before, params_after,
                                  static_cast<double>(params_before) / static_cast<double>(std::max<int64_t>(1, params_after)));
  if (exact_macs && macs_after > 0)
    total += fmt::format("; MACs/sample {:.0f} -> {:.0f} (x{:.2f})", macs_before, macs_after, macs_before / macs_after);
  report_.push_back(total);
}

void LowRankFactorization::rebuild(TrainContext& ctx) {
  auto& model = *ctx.model;
  const auto device = model_device(model);
  const auto dtype = model_dtype(model);
  report_.clear();
  for (const auto& f : done_) {
    auto module = find_module(model, f.path);
    if (!module)
      throw UserError(name() + ": the checkpoint factorized layer '" + f.path + "', which the model does not have");
    if (auto* fc = module->as<nn::LinearImpl>()) {
      int64_t rank = 0;
      if (std::sscanf(f.form.c_str(), "svd(%ld)", &rank) != 1 || rank < 1)
        throw UserError(name() + ": checkpoint form '" + f.form + "' of Linear layer '" + f.path + "' is not svd(r)");
      if (fc->options.rank() != rank) {
        fc->set_rank(rank);
        fc->to(device);
      }
    } else if (auto* conv = module->as<nn::Conv2dImpl>()) {
      ConvForm form;
      try {
        form = ConvForm::parse(f.form);
      } catch (const std::invalid_argument& e) {
        throw UserError(name() + ": checkpoint form of layer '" + f.path + "': " + e.what());
      }
      if (conv->options.form() != form) {
        conv->set_form(form);
        match_device_and_dtype(*conv, device, dtype);
      }
    } else {
      throw UserError(name() + ": checkpoint layer '" + f.path + "' is neither a Shrink Linear nor a Conv2d");
    }
  }
  report_.push_back(fmt::format("{}: rebuilt {} factorized layers from the checkpoint", name(), done_.size()));
}

void LowRankFactorization::on_train_begin(TrainContext& ctx) {
  if (logged_) return;
  for (const auto& line : report_) ctx.log(line);
  logged_ = true;
}

void LowRankFactorization::on_epoch_end(TrainContext& ctx) {
  int64_t params = 0, macs = 0;
  for (const auto& f : done_) {
    auto module = find_module(*ctx.model, f.path);
    if (!module) continue;
    params += count_params(*module);
    for (const auto& m : module->modules(/*include_self=*/true))
      if (auto* costed = dynamic_cast<const nn::CostedLayer*>(m.get())) macs += costed->macs_per_sample();
  }
  ctx.metrics["factorized_params"] = static_cast<double>(params);
  if (macs > 0) ctx.metrics["factorized_macs"] = static_cast<double>(macs);
}

void LowRankFactorization::save_state(torch::serialize::OutputArchive& archive) const {
  archive.write("layers", torch::tensor(static_cast<int64_t>(done_.size())));
  for (size_t i = 0; i < done_.size(); ++i) {
    const auto key = "layer" + std::to_string(i);
    archive.write(key + "_path", c10::IValue(done_[i].path));
    archive.write(key + "_form", c10::IValue(done_[i].form));
    archive.write(key + "_params", torch::tensor({done_[i].params_before, done_[i].params_after}));
    archive.write(key + "_error", torch::tensor(done_[i].relative_error, torch::kDouble));
  }
}

void LowRankFactorization::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  if (!archive.try_read("layers", t)) return;
  auto read_string = [&](const std::string& key) {
    c10::IValue v;
    if (!archive.try_read(key, v) || !v.isString()) throw UserError(name() + ": checkpoint state has no '" + key + "'");
    return v.toStringRef();
  };
  done_.clear();
  const int64_t n = t.item<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const auto key = "layer" + std::to_string(i);
    LayerFactorization f;
    f.path = read_string(key + "_path");
    f.form = read_string(key + "_form");
    torch::Tensor v;
    if (archive.try_read(key + "_params", v)) {
      f.params_before = v[0].item<int64_t>();
      f.params_after = v[1].item<int64_t>();
    }
    if (archive.try_read(key + "_error", v)) f.relative_error = v.item<double>();
    done_.push_back(std::move(f));
  }
  restored_ = true;
  applied_ = false;
  logged_ = false;
}

}  // namespace shrink::lowrank
