#include "shrink/sharing/weight_sharing.h"

#include <fmt/format.h>

#include <algorithm>

#include "shrink/compression/method_errors.h"
#include "shrink/core/error.h"
#include "shrink/pruning/mask.h"

namespace shrink::sharing {

namespace {

const std::vector<std::string>& init_names() {
  static const std::vector<std::string> names = {"linear", "density", "random"};
  return names;
}

/// Nearest centroid of each value (ties to the lower index): binary search over the midpoints.
torch::Tensor nearest(const torch::Tensor& values, const torch::Tensor& centroids) {
  const int64_t k = centroids.numel();
  if (k == 1) return torch::zeros({values.numel()}, values.options().dtype(torch::kLong));
  auto mid = (centroids.slice(0, 0, k - 1) + centroids.slice(0, 1, k)) * 0.5;
  // right = false: a value equal to a midpoint goes to the lower centroid.
  return torch::bucketize(values, mid, /*out_int32=*/false, /*right=*/false);
}

std::string layer_path_of(const std::string& parameter) {
  static const std::string suffix = ".weight";
  if (parameter == "weight") return "";
  return parameter.substr(0, parameter.size() - suffix.size());
}

std::string parameter_of(const std::string& path) { return path.empty() ? "weight" : path + ".weight"; }

/// Member counts and the runtime index (2^bits where pruned) from assignments and kept.
void finish_layer(SharedLayer& layer, int64_t k) {
  layer.counts = torch::bincount(layer.assignments.masked_select(layer.kept).to(torch::kLong), {}, k);
  auto pruned = torch::full({}, static_cast<int>(k), layer.kept.options().dtype(torch::kInt));
  layer.index = torch::where(layer.kept, layer.assignments.to(torch::kInt), pruned).flatten().contiguous();
}

}  // namespace

CentroidInit parse_centroid_init(const std::string& name) {
  if (name == "linear") return CentroidInit::Linear;
  if (name == "density") return CentroidInit::Density;
  if (name == "random") return CentroidInit::Random;
  std::string msg = "unknown centroid init '" + name + "' (linear, density, random)";
  auto near = nearest_name(name, init_names());
  if (!near.empty()) msg += "; did you mean '" + near + "'?";
  throw UserError(msg);
}

torch::Tensor init_centroids(const torch::Tensor& values_in, int64_t k, CentroidInit init) {
  TORCH_CHECK(k >= 1, "init_centroids: k must be positive, got ", k);
  TORCH_CHECK(values_in.numel() > 0, "init_centroids: no values");
  auto values = values_in.detach().flatten().to(torch::kFloat64);
  const int64_t n = values.numel();
  switch (init) {
    case CentroidInit::Linear: {
      const double lo = values.min().item<double>(), hi = values.max().item<double>();
      if (k == 1) return torch::full({1}, 0.5 * (lo + hi), values.options());
      return torch::linspace(lo, hi, k, values.options());
    }
    case CentroidInit::Density: {
      // Quantile (j + 0.5) / k of the sorted values, linearly interpolated between neighbours.
      auto sorted = std::get<0>(values.sort());
      auto pos = (torch::arange(k, values.options()) + 0.5) / static_cast<double>(k) * static_cast<double>(n - 1);
      auto below = pos.floor().to(torch::kLong).clamp(0, n - 1);
      auto above = (below + 1).clamp(0, n - 1);
      auto frac = pos - below.to(torch::kFloat64);
      auto lo = sorted.index_select(0, below), hi = sorted.index_select(0, above);
      return lo + (hi - lo) * frac;
    }
    case CentroidInit::Random: {
      // Distinct positions when there are enough values; randperm is avoided on huge layers.
      torch::Tensor picks;
      if (n >= k && n <= (int64_t{1} << 22)) {
        picks = torch::randperm(n, torch::TensorOptions().dtype(torch::kLong)).slice(0, 0, k);
      } else {
        picks = torch::randint(n, {k}, torch::TensorOptions().dtype(torch::kLong));
      }
      return std::get<0>(values.index_select(0, picks.to(values.device())).sort());
    }
  }
  TORCH_CHECK(false, "init_centroids: unknown init");
}

KMeansResult kmeans_1d(const torch::Tensor& values_in, const torch::Tensor& centroids_in, int64_t max_iterations) {
  TORCH_CHECK(centroids_in.dim() == 1 && centroids_in.numel() >= 1, "kmeans_1d: centroids must be [k], k >= 1");
  torch::NoGradGuard no_grad;
  auto values = values_in.detach().flatten().to(torch::kFloat64);
  auto centroids = centroids_in.detach().to(values.options()).clone();
  const int64_t k = centroids.numel();
  KMeansResult r;
  auto assign = nearest(values, centroids);
  for (int64_t it = 0; it < max_iterations; ++it) {
    auto sums = torch::zeros({k}, values.options()).index_add_(0, assign, values);
    auto counts = torch::bincount(assign, {}, k).to(torch::kFloat64);
    // An empty cluster keeps its centroid; in 1-d the update keeps the centroids in order.
    centroids = torch::where(counts > 0, sums / counts.clamp_min(1), centroids);
    ++r.iterations;
    auto next = nearest(values, centroids);
    const bool same = torch::equal(next, assign);
    assign = std::move(next);
    if (same) {
      r.converged = true;
      break;
    }
  }
  if (max_iterations <= 0) r.converged = false;
  r.centroids = centroids;
  r.assignments = assign;
  return r;
}

OptionSchema<WeightSharing::Options> WeightSharing::schema() {
  OptionSchema<Options> s;
  s.add("bits", &Options::bits, "Bits per weight index: 2^bits shared values (centroids) per layer.").range(1, 8);
  s.add("init", &Options::init,
        "Centroid initialization: linear (evenly spaced between min and max; the paper's best), density "
        "(quantiles of the weights), random (weights picked with the run's seeded generator).")
      .choices(init_names());
  s.add("iterations", &Options::iterations, "Most Lloyd iterations of k-means (stops earlier when stable).").min(0);
  s.add("lr_scale", &Options::lr_scale,
        "Centroid learning rate as a multiple of the run's current learning rate (plain SGD on centroids).")
      .min(0);
  s.add("gradient", &Options::gradient,
        "Centroid gradient: sum of the gradients of its weights (Han et al. 2016) or their mean.")
      .choices({"sum", "mean"});
  return s;
}

WeightSharing::WeightSharing(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  if (options_.bits < 1 || options_.bits > 8)
    throw UserError(fmt::format("{}: bits must be in [1, 8] (got {})", spec_.method, options_.bits));
  init_ = parse_centroid_init(options_.init);
  if (options_.gradient != "sum" && options_.gradient != "mean")
    throw UserError(spec_.method + ": gradient must be sum or mean (got '" + options_.gradient + "')");
}

void WeightSharing::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  layer_paths_.clear();
  auto excluded = [&](const std::string& name) {
    for (const auto& pattern : spec_.exclude)
      if (glob_match(pattern, name)) return true;
    return false;
  };
  auto targeted_module = [&](const std::string& path) {
    for (const auto& [name, m] : target_modules_)
      if (name == path) return true;
    return false;
  };
  auto targeted_parameter = [&](const std::string& name) {
    for (const auto& [n, p] : target_parameters_)
      if (n == name) return true;
    return false;
  };
  for (const auto& item : model->named_modules("", /*include_self=*/true)) {
    if (!pruning::is_maskable_layer(*item.value())) continue;
    const auto& path = item.key();
    const auto param = parameter_of(path);
    if (!targeted_module(path) && !targeted_parameter(param)) continue;
    if (excluded(path) || excluded(param)) continue;
    layer_paths_.push_back(path);
  }
  if (layer_paths_.empty())
    fail_at_option(spec_, "targets", "the targets match no Shrink Conv2d or Linear layer to share weights in");
}

void WeightSharing::cluster(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  const int64_t k = int64_t{1} << options_.bits;
  auto modules = model.named_modules("", /*include_self=*/true);
  layers_.clear();
  for (const auto& path : layer_paths_) {
    auto* found = modules.find(path);
    TORCH_CHECK(found != nullptr && pruning::is_maskable_layer(**found), spec_.method, ": layer '", path,
                "' is not a Shrink Conv2d or Linear of the model");
    auto lw = pruning::layer_weight(**found, parameter_of(path));
    SharedLayer layer;
    layer.name = lw.name;
    layer.weight = lw.weight;
    layer.mask = lw.mask;
    layer.kept = lw.weight.ne(0);
    if (lw.mask.defined()) layer.kept.logical_and_(lw.mask.ne(0));
    auto values = lw.weight.masked_select(layer.kept);
    torch::Tensor centroids, member;
    if (values.numel() == 0) {
      centroids = torch::zeros({k}, lw.weight.options());
      member = torch::zeros({0}, lw.weight.options().dtype(torch::kLong));
    } else {
      auto r = kmeans_1d(values, init_centroids(values, k, init_), options_.iterations);
      centroids = r.centroids.to(lw.weight.dtype());
      member = r.assignments;
      layer.kmeans_iterations = r.iterations;
      layer.kmeans_converged = r.converged;
    }
    layer.centroids = centroids.detach().clone();
    layer.assignments = torch::zeros(lw.weight.sizes(), lw.weight.options().dtype(torch::kUInt8));
    layer.assignments.masked_scatter_(layer.kept, member.to(torch::kUInt8));
    layers_.push_back(std::move(layer));
  }
  clustered_ = true;
  attached_ = true;
  for (auto& layer : layers_) finish_layer(layer, k);
  write_weights();
}

void WeightSharing::attach(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  auto modules = model.named_modules("", /*include_self=*/true);
  const int64_t k = int64_t{1} << options_.bits;
  for (auto& layer : layers_) {
    const auto path = layer_path_of(layer.name);
    auto* found = modules.find(path);
    if (found == nullptr || !pruning::is_maskable_layer(**found))
      throw UserError(spec_.method + ": the saved codebook of '" + layer.name +
                      "' has no Shrink Conv2d or Linear layer in the model");
    auto lw = pruning::layer_weight(**found, layer.name);
    if (lw.weight.sizes() != layer.assignments.sizes())
      throw UserError(fmt::format("{}: the saved assignments of '{}' have shape [{}] but the weight is [{}]",
                                  spec_.method, layer.name, fmt::join(layer.assignments.sizes(), ", "),
                                  fmt::join(lw.weight.sizes(), ", ")));
    if (layer.centroids.numel() != k)
      throw UserError(fmt::format("{}: the saved codebook of '{}' has {} entries, but bits {} needs {}", spec_.method,
                                  layer.name, layer.centroids.numel(), options_.bits, k));
    const auto device = lw.weight.device();
    layer.weight = lw.weight;
    layer.mask = lw.mask;
    layer.centroids = layer.centroids.to(device, lw.weight.scalar_type());
    layer.assignments = layer.assignments.to(device);
    layer.kept = layer.kept.to(device, torch::kBool);
    finish_layer(layer, k);
  }
  attached_ = true;
}

void WeightSharing::write_weights() {
  torch::NoGradGuard no_grad;
  for (auto& layer : layers_) {
    // [centroids; 0]: pruned weights index the trailing zero.
    auto table = torch::cat({layer.centroids, torch::zeros({1}, layer.centroids.options())});
    auto values = table.index_select(0, layer.index).view(layer.weight.sizes());
    if (layer.mask.defined()) values.mul_(layer.mask);
    layer.weight.copy_(values);
  }
}

void WeightSharing::fine_tune_step(double lr) {
  TORCH_CHECK(clustered_ && attached_, spec_.method, ": fine_tune_step before the layers were clustered");
  torch::NoGradGuard no_grad;
  const int64_t k = int64_t{1} << options_.bits;
  for (auto& layer : layers_) {
    const auto& grad = layer.weight.grad();
    if (!grad.defined()) continue;
    auto g = grad.flatten();
    if (layer.mask.defined()) g = g * layer.mask.flatten();
    // dL/dc_k = sum of dL/dw over the weights of cluster k; pruned weights fall in bin k.
    auto cg = torch::bincount(layer.index, g, k + 1).slice(0, 0, k).to(layer.centroids.scalar_type());
    if (options_.gradient == "mean") cg = cg / layer.counts.clamp_min(1).to(cg.scalar_type());
    layer.centroids.sub_(cg * lr);
  }
  write_weights();
}

std::vector<int64_t> WeightSharing::distinct_values() const {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> out;
  for (const auto& layer : layers_) {
    auto unique = std::get<0>(torch::_unique(layer.weight.detach().flatten(), /*sorted=*/false));
    out.push_back(unique.ne(0).sum().item<int64_t>());
  }
  return out;
}

void WeightSharing::on_train_begin(TrainContext& ctx) {
  if (clustered_) {
    // Restored by load_state (resume): the codebooks point at this model's weights again.
    attach(*ctx.model);
    write_weights();
    return;
  }
  if (spec_.schedule.begin(ctx.steps_per_epoch) <= ctx.step) on_step_begin(ctx);
}

void WeightSharing::on_step_begin(TrainContext& ctx) {
  if (clustered_ || ctx.step < spec_.schedule.begin(ctx.steps_per_epoch)) return;
  cluster(*ctx.model);
  for (const auto& layer : layers_)
    ctx.log(fmt::format("{}: {} shares {} values ({} bits) among {} of {} weights after {} k-means iterations{}",
                        spec_.method, layer.name, int64_t{1} << options_.bits, options_.bits,
                        layer.kept.sum().item<int64_t>(), layer.weight.numel(), layer.kmeans_iterations,
                        layer.kmeans_converged ? "" : " (iteration limit)"));
}

void WeightSharing::on_after_optimizer_step(TrainContext& ctx) {
  if (!clustered_) return;
  if (!attached_) attach(*ctx.model);
  if (active(ctx)) {
    fine_tune_step(ctx.lr * options_.lr_scale);
  } else {
    write_weights();
  }
}

void WeightSharing::on_epoch_end(TrainContext& ctx) {
  if (!clustered_ || !attached_) return;
  auto counts = distinct_values();
  for (size_t i = 0; i < layers_.size(); ++i) ctx.metrics["distinct_values." + layers_[i].name] = counts[i];
}

void WeightSharing::save_state(torch::serialize::OutputArchive& archive) const {
  archive.write("clustered", torch::tensor(static_cast<int64_t>(clustered_)));
  archive.write("bits", torch::tensor(options_.bits));
  if (!clustered_) return;
  archive.write("layers", torch::tensor(static_cast<int64_t>(layers_.size())));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& layer = layers_[i];
    const auto key = std::to_string(i);
    archive.write("name_" + key, c10::IValue(layer.name));
    archive.write("centroids_" + key, layer.centroids.detach().cpu(), /*is_buffer=*/true);
    archive.write("assignments_" + key, layer.assignments.cpu(), /*is_buffer=*/true);
    archive.write("kept_" + key, layer.kept.cpu(), /*is_buffer=*/true);
  }
}

void WeightSharing::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  clustered_ = attached_ = false;
  layers_.clear();
  if (!archive.try_read("clustered", t) || t.item<int64_t>() == 0) return;
  torch::Tensor bits;
  archive.read("bits", bits);
  if (bits.item<int64_t>() != options_.bits)
    throw UserError(fmt::format("{}: the checkpoint was clustered with bits {} but the recipe says bits {}",
                                spec_.method, bits.item<int64_t>(), options_.bits));
  archive.read("layers", t);
  const int64_t n = t.item<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const auto key = std::to_string(i);
    SharedLayer layer;
    c10::IValue name;
    archive.read("name_" + key, name);
    layer.name = name.toStringRef();
    archive.read("centroids_" + key, layer.centroids, /*is_buffer=*/true);
    archive.read("assignments_" + key, layer.assignments, /*is_buffer=*/true);
    archive.read("kept_" + key, layer.kept, /*is_buffer=*/true);
    layers_.push_back(std::move(layer));
  }
  clustered_ = true;
}

}  // namespace shrink::sharing
