#include "shrink/dynamic/dcn.h"

#include <fmt/format.h>

#include <cmath>
#include <utility>

#include "shrink/compression/method_errors.h"
#include "shrink/core/error.h"
#include "shrink/data/data_errors.h"
#include "shrink/models/model_input.h"
#include "shrink/models/zoo_blocks.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/layer.h"

namespace shrink::dynamic {
namespace {

/// MACs per sample of every Shrink layer in `module` in its last forward.
int64_t macs_of(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& m : module.modules(/*include_self=*/true))
    if (const auto* costed = dynamic_cast<const nn::CostedLayer*>(m.get())) total += costed->macs_per_sample();
  return total;
}

/// Conv with kernel == stride: each output position sees exactly one input tile.
nn::Conv2d tile_conv(int64_t in, int64_t out, int64_t side) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, side).stride(side));
}

}  // namespace

const char* dcn_mode_name(DcnMode mode) {
  switch (mode) {
    case DcnMode::dcn: return "dcn";
    case DcnMode::fine_everywhere: return "fine_everywhere";
    case DcnMode::coarse_only: return "coarse_only";
  }
  return "?";
}

DcnMode parse_dcn_mode(const std::string& name) {
  if (name == "dcn") return DcnMode::dcn;
  if (name == "fine_everywhere") return DcnMode::fine_everywhere;
  TORCH_CHECK(name == "coarse_only", "unknown DCN mode '", name, "' (dcn, fine_everywhere, coarse_only)");
  return DcnMode::coarse_only;
}

std::string DcnMacs::str() const {
  return fmt::format("coarse {} + saliency {} + fine {} ({} of {} patches x {}) + top {} = {} MACs per input", coarse,
                     saliency, fine, patches, positions, fine_per_patch, top, total());
}

// ---- model ----

OptionSchema<DcnImpl::Options> DcnImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("mode", &Options::mode,
        "dcn: coarse network everywhere, fine network on the k most salient patches; fine_everywhere: the fine "
        "network on every patch (the baseline); coarse_only: no fine pass.")
      .choices({"dcn", "fine_everywhere", "coarse_only"});
  s.add("k", &Options::k, "Patches the fine network re-processes per input (dcn mode); at most the patch count.")
      .min(1);
  s.add("patch", &Options::patch,
        "Side P of the square patches tiling the input: a multiple of 4 that divides its height and width.")
      .min(4);
  s.add("features", &Options::features, "D, the feature vector per patch (coarse and fine).").min(1);
  s.add("coarse_width", &Options::coarse_width, "Channels of the coarse network's first conv (4x4 stride 4).").min(1);
  s.add("fine_width", &Options::fine_width,
        "Width w of the fine network: 2x2/2 conv to w/2, 1x1 to w, 2x2/2 conv to w, 1x1 to 2w, then to D.")
      .min(2);
  s.add("pool", &Options::pool,
        "Global pool of the top layers over patch positions: max (a few re-processed patches can decide the "
        "prediction) or avg.")
      .choices({"max", "avg"});
  return s;
}

void DcnImpl::validate(const Options& o, const DataInfo& data, const ConfigNode& where) {
  image_channels("dcn", data);
  if (o.mode != "dcn" && o.mode != "fine_everywhere" && o.mode != "coarse_only")
    fail_at_key(where, "mode", "must be one of dcn, fine_everywhere, coarse_only (got '" + o.mode + "')");
  if (o.pool != "max" && o.pool != "avg") fail_at_key(where, "pool", "must be max or avg (got '" + o.pool + "')");
  if (o.patch < 4 || o.patch % 4 != 0)
    fail_at_key(where, "patch", fmt::format("must be a positive multiple of 4 (got {})", o.patch));
  const int64_t height = data.sample_shape[1], width = data.sample_shape[2];
  if (height % o.patch != 0 || width % o.patch != 0)
    fail_at_key(where, "patch",
                fmt::format("must divide the input's height and width so that patches tile it (input {}, patch {})",
                            shape_text(data.sample_shape), o.patch));
  const int64_t positions = (height / o.patch) * (width / o.patch);
  if (o.k < 1 || o.k > positions)
    fail_at_key(where, "k",
                fmt::format("must be in [1, {}], the patches of a {} input at patch {} (got {})", positions,
                            shape_text(data.sample_shape), o.patch, o.k));
  if (o.features < 1 || o.coarse_width < 1 || o.fine_width < 2)
    throw UserError("dcn: features and coarse_width must be at least 1 and fine_width at least 2");
}

ModelPtr DcnImpl::from_config(const ConfigNode& model, const DataInfo& data) {
  auto options = schema().parse(model, model_common_keys());
  validate(options, data, model);
  return std::make_shared<DcnImpl>(std::move(options), data);
}

DcnImpl::DcnImpl(Options options_, const DataInfo& data) : options(std::move(options_)) {
  validate(options, data);
  mode_ = parse_dcn_mode(options.mode);
  const int64_t classes = model_num_classes("dcn", options.num_classes, data);
  const int64_t c = data.sample_shape[0], d = options.features, tail = options.patch / 4;
  const int64_t cw = options.coarse_width, fw = options.fine_width;

  coarse = register_module("coarse", torch::nn::ModuleList());
  coarse->push_back(tile_conv(c, cw, 4));
  coarse->push_back(torch::nn::ReLU());
  coarse->push_back(tile_conv(cw, d, tail));
  coarse->push_back(torch::nn::ReLU());

  fine = register_module("fine", torch::nn::ModuleList());
  fine->push_back(tile_conv(c, fw / 2, 2));
  fine->push_back(torch::nn::ReLU());
  fine->push_back(tile_conv(fw / 2, fw, 1));
  fine->push_back(torch::nn::ReLU());
  fine->push_back(tile_conv(fw, fw, 2));
  fine->push_back(torch::nn::ReLU());
  fine->push_back(tile_conv(fw, 2 * fw, 1));
  fine->push_back(torch::nn::ReLU());
  fine->push_back(tile_conv(2 * fw, d, tail));
  fine->push_back(torch::nn::ReLU());

  top_layers = register_module("top_layers", torch::nn::ModuleList());
  top_layers->push_back(nn::Conv2d(nn::Conv2dOptions(d, d, 3).padding(1)));
  top_layers->push_back(torch::nn::ReLU());
  classifier = register_module("classifier", nn::Linear(d, classes));

  declare_taps({"coarse", "merged", "logits"});
  // He initialization keeps the fine network's five ReLU layers at the coarse features' scale
  // from the start (LibTorch's default shrinks activations layer by layer).
  torch::NoGradGuard no_grad;
  for (const auto& m : modules(/*include_self=*/false))  // in the constructor: not owned by a shared_ptr yet
    if (auto* conv = m->as<nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanIn, torch::kReLU);
      conv->bias.zero_();
    }
}

void DcnImpl::set_mode(DcnMode mode) {
  mode_ = mode;
  options.mode = dcn_mode_name(mode);
}

void DcnImpl::set_k(int64_t k) {
  TORCH_CHECK(k >= 1, "dcn: k must be at least 1, got ", k);
  options.k = k;
}

torch::Tensor DcnImpl::coarse_features(const torch::Tensor& input) { return forward_sequence(*coarse, input); }

torch::Tensor DcnImpl::fine_features(const torch::Tensor& input) { return forward_sequence(*fine, input); }

torch::Tensor DcnImpl::top(const torch::Tensor& features) {
  auto x = forward_sequence(*top_layers, features).flatten(2);
  return classifier(options.pool == "max" ? std::get<0>(x.max(2)) : x.mean(2));
}

torch::Tensor DcnImpl::saliency(const torch::Tensor& coarse_map) {
  // A gradient of the coarse prediction alone: fresh leaf features, grad mode on even in eval.
  torch::AutoGradMode enable_grad(true);
  auto features = coarse_map.detach().requires_grad_(true);
  auto log_p = torch::log_softmax(top(features), 1);
  auto entropy = -(log_p.exp() * log_p).sum();  // each H_n depends on its own input only
  auto grad = torch::autograd::grad({entropy}, {features})[0];
  return grad.pow(2).sum(1).sqrt().detach();
}

torch::Tensor DcnImpl::patch_strip(const torch::Tensor& input, const torch::Tensor& positions) const {
  const int64_t n = input.size(0), c = input.size(1), p = options.patch;
  const int64_t h = input.size(2) / p, w = input.size(3) / p, k = positions.size(1);
  TORCH_CHECK(positions.dim() == 2 && positions.size(0) == n, "dcn: positions must be [N, k], got ",
              positions.sizes());
  auto patches = input.reshape({n, c, h, p, w, p}).permute({0, 2, 4, 1, 3, 5}).reshape({n, h * w, c, p, p});
  auto rows = torch::arange(n, positions.options()).unsqueeze(1).expand({n, k});
  auto chosen = patches.index({rows, positions});  // [N, k, C, P, P]
  return chosen.permute({0, 2, 3, 1, 4}).reshape({n, c, p, k * p});
}

torch::Tensor DcnImpl::forward(const torch::Tensor& input) {
  const int64_t p = options.patch;
  TORCH_CHECK(input.dim() == 4 && input.size(2) % p == 0 && input.size(3) % p == 0,
              "dcn: input must be [N, C, H, W] with H and W multiples of patch ", p, ", got ", input.sizes());
  last_hint_ = torch::zeros({}, input.options());
  torch::Tensor merged;
  if (mode_ == DcnMode::fine_everywhere) {
    merged = fine_features(input);
  } else if (mode_ == DcnMode::coarse_only) {
    merged = tap_point("coarse", coarse_features(input));
  } else {
    auto coarse_map = tap_point("coarse", coarse_features(input));
    const int64_t n = coarse_map.size(0), d = coarse_map.size(1), k = options.k;
    const int64_t positions = coarse_map.size(2) * coarse_map.size(3);
    TORCH_CHECK(k <= positions, "dcn: k = ", k, " but the input has only ", positions, " patches");
    last_saliency_ = saliency(coarse_map);
    last_selected_ = std::get<1>(last_saliency_.flatten(1).topk(k, 1, /*largest=*/true, /*sorted=*/true));
    // Fine features of the chosen patches, run as one 1 x k strip per input: layers then report
    // k patches' MACs per input.
    auto fine_map = fine_features(patch_strip(input, last_selected_)).reshape({n, d, k});
    auto flat = coarse_map.flatten(2);
    auto index = last_selected_.unsqueeze(1).expand({n, d, k});
    merged = flat.scatter(2, index, fine_map).view_as(coarse_map);
    last_hint_ = (flat.gather(2, index) - fine_map.detach()).pow(2).sum(1).mean();
  }
  tap_point("merged", merged);
  return tap_point("logits", top(merged));
}

DcnMacs DcnImpl::measure_macs(const std::vector<int64_t>& sample_shape) {
  TORCH_CHECK(sample_shape.size() == 3, "dcn: sample shape must be C, H, W");
  auto modules = this->modules(/*include_self=*/true);
  std::vector<bool> was_training;
  for (const auto& m : modules) was_training.push_back(m->is_training());
  auto options_f = torch::TensorOptions().dtype(torch::kFloat32);
  if (auto params = parameters(); !params.empty()) options_f = options_f.device(params.front().device());
  DcnMacs macs;
  eval();
  try {
    torch::NoGradGuard no_grad;
    const int64_t p = options.patch;
    fine_features(torch::zeros({1, sample_shape[0], p, p}, options_f));
    macs.fine_per_patch = macs_of(*fine);
    forward(torch::zeros({1, sample_shape[0], sample_shape[1], sample_shape[2]}, options_f));
  } catch (...) {
    for (size_t i = 0; i < modules.size(); ++i) modules[i]->train(was_training[i]);
    throw;
  }
  for (size_t i = 0; i < modules.size(); ++i) modules[i]->train(was_training[i]);
  macs.positions = (sample_shape[1] / options.patch) * (sample_shape[2] / options.patch);
  macs.top = macs_of(*top_layers) + macs_of(*classifier);
  macs.coarse = mode_ == DcnMode::fine_everywhere ? 0 : macs_of(*coarse);
  macs.fine = mode_ == DcnMode::coarse_only ? 0 : macs_of(*fine);
  macs.patches = mode_ == DcnMode::dcn ? options.k : mode_ == DcnMode::fine_everywhere ? macs.positions : 0;
  macs.saliency = mode_ == DcnMode::dcn ? 2 * macs.top : 0;
  return macs;
}

// ---- dcn_hint ----

OptionSchema<DcnHint::Options> DcnHint::schema() {
  OptionSchema<Options> s;
  s.add("weight", &Options::weight,
        "Weight of the hint term: mean over the selected patches of ||f_c - f_f||^2, fine features as fixed "
        "targets.")
      .min(0);
  return s;
}

DcnHint::DcnHint(MethodSpec spec, Options options) : CompressionMethod(std::move(spec)), options_(options) {
  if (!(options_.weight >= 0) || !std::isfinite(options_.weight))
    fail_at_option(spec_, "weight", fmt::format("must be a finite number >= 0 (got {})", options_.weight));
}

void DcnHint::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  model_ = dynamic_cast<DcnImpl*>(model.get());
  if (!model_)
    fail_at_option(spec_, "method", "needs a dcn model (model.name: dcn); " + model->name() + " is not one");
}

void DcnHint::on_train_begin(TrainContext& ctx) {
  if (!model_) bind(ctx.model);
}

void DcnHint::on_epoch_begin(TrainContext&) {
  hint_sum_ = 0;
  hint_steps_ = 0;
}

void DcnHint::on_step_begin(TrainContext& ctx) {
  if (measured_ || !ctx.batch) return;
  // Before this step's forward, on the batch's shape: nothing of the step is overwritten.
  const auto sizes = ctx.batch->inputs.sizes();
  macs_ = model_->measure_macs({sizes[1], sizes[2], sizes[3]});
  measured_ = true;
  ctx.log(fmt::format("dcn: mode {}, k {}, patch {}: {}", dcn_mode_name(model_->mode()), model_->k(),
                      model_->options.patch, macs_.str()));
  const int64_t everywhere = macs_.fine_per_patch * macs_.positions + macs_.top;
  ctx.log(fmt::format("dcn: the fine network on every patch would take {} MACs per input ({:.2f}x)", everywhere,
                      macs_.total() > 0 ? static_cast<double>(everywhere) / static_cast<double>(macs_.total()) : 0.0));
  if (model_->mode() != DcnMode::dcn) ctx.log("dcn_hint: no hint term in this mode (it needs selected patches)");
}

torch::Tensor DcnHint::on_loss(TrainContext& ctx, torch::Tensor loss) {
  if (!active(ctx) || model_->mode() != DcnMode::dcn) return loss;
  const auto& hint = model_->last_hint();
  hint_sum_ += hint.item<double>();
  ++hint_steps_;
  return loss + options_.weight * hint;
}

void DcnHint::on_epoch_end(TrainContext& ctx) {
  if (hint_steps_ > 0) ctx.metrics["dcn_hint"] = hint_sum_ / static_cast<double>(hint_steps_);
  if (measured_) ctx.metrics["avg_macs"] = static_cast<double>(macs_.total());
}

}  // namespace shrink::dynamic
