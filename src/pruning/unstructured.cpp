#include "shrink/pruning/unstructured.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "shrink/compression/method_errors.h"
#include "shrink/core/compat.h"
#include "shrink/core/error.h"
#include "shrink/core/rng.h"

namespace shrink::pruning {

OptionSchema<UnstructuredPruning::Options> UnstructuredPruning::schema() {
  OptionSchema<Options> s;
  s.add("sparsity", &Options::sparsity, "Final fraction of the targeted weights set to zero.").range(0, 1);
  s.add("criterion", &Options::criterion,
        "Which weights go first: smallest |w| (magnitude), uniformly random (random, a baseline) or smallest "
        "Optimal Brain Damage saliency 0.5 * F_ii * w^2 with a diagonal Fisher estimate (obd).")
      .choices({"magnitude", "random", "obd"});
  s.add("scope", &Options::scope,
        "layer: every targeted tensor pruned to the sparsity; global: one threshold over all targeted weights.")
      .choices({"layer", "global"});
  s.add("schedule", &Options::schedule,
        "one_shot: prune at the entry's start; iterative: `cycles` prune events spread evenly from start to end "
        "with retraining between them (Han et al. 2015); agp: cubic ramp from initial_sparsity to sparsity "
        "between start and end, updated every `frequency` steps (Zhu & Gupta 2017).")
      .choices({"one_shot", "iterative", "agp"});
  s.add("initial_sparsity", &Options::initial_sparsity, "agp: sparsity at the start step.").range(0, 1);
  s.add("cycles", &Options::cycles, "iterative: number of prune events; each keeps the same fraction of the "
                                     "remaining weights.")
      .min(1);
  s.add("obd_batches", &Options::obd_batches, "obd: training batches averaged in the Fisher estimate.").min(1);
  s.add("rewind", &Options::rewind,
        "Lottery-ticket rewinding: after each prune event the surviving weights return to their values at "
        "initialization (init) or at rewind_epoch (epoch), and their optimizer state is reset.")
      .choices({"none", "init", "epoch"});
  s.add("rewind_epoch", &Options::rewind_epoch, "rewind: epoch: the epoch (fractional allowed) to rewind to.").min(0);
  s.add("seed", &Options::seed, "random: seed of the draws (each prune event draws anew).").min(0);
  return s;
}

UnstructuredPruning::UnstructuredPruning(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  if (options_.schedule == "agp" && options_.initial_sparsity > options_.sparsity)
    fail_at_option(spec_, "initial_sparsity",
                   fmt::format("must not exceed sparsity (got {} > {})", options_.initial_sparsity, options_.sparsity));
  if (options_.rewind != "epoch" && spec_.where.valid() && spec_.where.has("rewind_epoch"))
    fail_at_option(spec_, "rewind_epoch", "is used only with rewind: epoch");
}

void UnstructuredPruning::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  layers_.clear();
  other_ = ParameterMasks();
  auto modules = model->named_modules("", /*include_self=*/false);
  auto add_layer = [&](const std::string& path, const std::shared_ptr<torch::nn::Module>& m) {
    for (const auto& l : layers_)
      if (l.first == path) return;
    layers_.emplace_back(path, m);
  };
  for (const auto& [path, module] : target_modules_)
    if (is_maskable_layer(*module)) add_layer(path, module);
  for (const auto& [name, param] : target_parameters_) {
    if (param.dim() < 2) continue;  // biases and norm scales are not pruned
    const auto dot = name.rfind('.');
    const std::string path = dot == std::string::npos ? "" : name.substr(0, dot);
    const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
    auto* module = modules.find(path);
    if (module && leaf == "weight" && is_maskable_layer(**module)) {
      add_layer(path, *module);
    } else {
      other_.add(name, param);
    }
  }
  // Keep model order for the Shrink layers.
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> ordered;
  for (const auto& item : modules)
    for (const auto& l : layers_)
      if (l.first == item.key()) ordered.push_back(l);
  layers_ = std::move(ordered);
  if (layers_.empty() && other_.weights().empty())
    fail_at_option(spec_, "targets",
                   "the targets select no weight to prune (biases and other 1-d parameters are not pruned)");
}

void UnstructuredPruning::prepare_model(TrainContext&) {
  for (auto& [path, module] : layers_) enable_layer_mask(*module);
}

std::vector<MaskedWeight> UnstructuredPruning::masked_weights() const {
  std::vector<MaskedWeight> out;
  for (const auto& [path, module] : layers_) out.push_back(layer_weight(*module, path + ".weight"));
  for (const auto& w : other_.weights()) out.push_back(w);
  return out;
}

int64_t UnstructuredPruning::total_weights() const {
  int64_t n = 0;
  for (const auto& w : masked_weights()) n += w.weight.numel();
  return n;
}

double UnstructuredPruning::current_sparsity() const {
  double zeros = 0, total = 0;
  for (const auto& w : masked_weights()) {
    if (!w.mask.defined()) continue;
    total += static_cast<double>(w.mask.numel());
    zeros += static_cast<double>(w.mask.numel()) - w.mask.sum().item<double>();
  }
  return total > 0 ? zeros / total : 0.0;
}

double UnstructuredPruning::target_sparsity(int64_t step, int64_t spe, int64_t total) const {
  const auto& s = spec_.schedule;
  const int64_t begin = s.begin(spe), end = std::max(s.end(spe, total), begin + 1);
  if (step < begin) return 0.0;
  if (options_.schedule == "one_shot") return options_.sparsity;
  if (options_.schedule == "iterative") {
    // Event k (0-based) at begin + k * (end - begin) / cycles; after it, k + 1 cycles are done.
    const int64_t done = std::min<int64_t>(options_.cycles, (step - begin) * options_.cycles / (end - begin) + 1);
    return iterative_sparsity(options_.sparsity, options_.cycles, done);
  }
  // agp: the ramp is sampled on the frequency grid; the final value holds from `end` on.
  if (step >= end) return options_.sparsity;
  const int64_t on_grid = begin + (step - begin) / s.frequency * s.frequency;
  return agp_sparsity(options_.initial_sparsity, options_.sparsity, begin, end, on_grid);
}

torch::Tensor UnstructuredPruning::scores_of(const MaskedWeight& w, const torch::Tensor& fisher, uint64_t draw) const {
  torch::NoGradGuard no_grad;
  torch::Tensor scores;
  if (options_.criterion == "magnitude") {
    scores = w.weight.detach().abs().to(torch::kFloat).cpu();
  } else if (options_.criterion == "random") {
    auto gen = compat::make_cpu_generator(draw);
    scores = torch::rand(w.weight.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat));
  } else {
    scores = (0.5 * fisher * w.weight.detach().to(torch::kFloat).pow(2)).cpu();
  }
  // Pruned weights stay pruned: they rank below every surviving weight.
  if (w.mask.defined()) scores.masked_fill_(w.mask.cpu() == 0, -1.0);
  return scores;
}

std::vector<torch::Tensor> UnstructuredPruning::fisher_diagonal(TrainContext& ctx,
                                                                const std::vector<MaskedWeight>& weights) const {
  TORCH_CHECK(ctx.calibration_batch, "obd needs training batches (ctx.calibration_batch is unset)");
  std::vector<torch::Tensor> params, fisher;
  for (const auto& w : weights) {
    params.push_back(w.weight);
    fisher.push_back(torch::zeros(w.weight.sizes(), w.weight.options().dtype(torch::kFloat).requires_grad(false)));
  }
  // Eval mode: the estimate must not move BatchNorm statistics or draw dropout masks.
  const bool was_training = ctx.model->is_training();
  ctx.model->eval();
  for (int64_t b = 0; b < options_.obd_batches; ++b) {
    Batch batch = ctx.calibration_batch(b);
    auto loss = torch::nn::functional::cross_entropy(ctx.model->forward(batch.inputs), batch.targets);
    auto grads = torch::autograd::grad({loss}, params, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < grads.size(); ++i)
      if (grads[i].defined()) fisher[i].add_(grads[i].to(torch::kFloat).pow(2));
  }
  ctx.model->train(was_training);
  for (auto& f : fisher) f.div_(static_cast<double>(options_.obd_batches));
  return fisher;
}

void UnstructuredPruning::prune_to(double sparsity, TrainContext& ctx) {
  auto weights = masked_weights();
  std::vector<torch::Tensor> fisher(weights.size());
  if (options_.criterion == "obd") fisher = fisher_diagonal(ctx, weights);
  std::vector<torch::Tensor> scores;
  for (size_t i = 0; i < weights.size(); ++i)
    scores.push_back(scores_of(weights[i], fisher[i], mix64(static_cast<uint64_t>(options_.seed) * 1000003ULL + i) ^
                                                          mix64(static_cast<uint64_t>(events_) + 17)));
  std::vector<torch::Tensor> masks;
  if (options_.scope == "global") {
    masks = keep_largest_global(scores, sparsity);
  } else {
    for (const auto& s : scores) masks.push_back(keep_largest(s, sparsity));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < weights.size(); ++i) {
    auto mask = masks[i].to(weights[i].weight.device()).to(weights[i].weight.scalar_type());
    weights[i].mask.copy_(mask);
    weights[i].weight.mul_(weights[i].mask);
  }
  ++events_;
  pruned_to_ = current_sparsity();
  ctx.log(fmt::format("{}: pruned {} tensors to sparsity {:.4f} ({}, {}) at step {}", spec_.method, weights.size(),
                      current_sparsity(), options_.criterion, options_.scope, ctx.step));
  if (options_.rewind != "none") rewind_survivors(ctx);
}

void UnstructuredPruning::take_snapshot() {
  torch::NoGradGuard no_grad;
  snapshot_.clear();
  for (const auto& w : masked_weights()) snapshot_.push_back(w.weight.detach().clone());
}

void UnstructuredPruning::rewind_survivors(TrainContext& ctx) {
  if (snapshot_.empty()) {
    ctx.log(spec_.method + ": no rewind point yet (the prune event comes before rewind_epoch); weights kept");
    return;
  }
  torch::NoGradGuard no_grad;
  auto weights = masked_weights();
  TORCH_CHECK(weights.size() == snapshot_.size(), "rewind snapshot does not match the targets");
  for (size_t i = 0; i < weights.size(); ++i) {
    weights[i].weight.copy_(snapshot_[i] * weights[i].mask);
    if (ctx.optimizer) compat::erase_optimizer_state(*ctx.optimizer, weights[i].weight);
  }
  ctx.log(fmt::format("{}: surviving weights rewound to {}", spec_.method,
                      options_.rewind == "init" ? std::string("initialization")
                                                : fmt::format("epoch {}", options_.rewind_epoch)));
}

void UnstructuredPruning::on_train_begin(TrainContext& ctx) {
  if (options_.rewind == "init" && snapshot_.empty() && ctx.step == 0) take_snapshot();
}

void UnstructuredPruning::on_step_begin(TrainContext& ctx) {
  if (options_.rewind == "epoch" && snapshot_.empty() &&
      ctx.step == static_cast<int64_t>(std::llround(options_.rewind_epoch * ctx.steps_per_epoch)))
    take_snapshot();
  const double want = target_sparsity(ctx.step, ctx.steps_per_epoch, ctx.total_steps);
  // Masks only grow; a resumed run finds its masks in the model and does not prune again.
  if (pruned_to_ < 0) pruned_to_ = current_sparsity();
  if (want <= pruned_to_) return;
  // Less than half a weight more: rounding, nothing to prune.
  if (want - pruned_to_ > 0.5 / static_cast<double>(std::max<int64_t>(1, total_weights()))) prune_to(want, ctx);
}

void UnstructuredPruning::on_before_optimizer_step(TrainContext&) { other_.mask_gradients(); }

void UnstructuredPruning::on_after_optimizer_step(TrainContext&) { other_.apply(); }

void UnstructuredPruning::on_epoch_end(TrainContext& ctx) {
  ctx.metrics[spec_.method + "_sparsity"] = current_sparsity();
}

void UnstructuredPruning::save_state(torch::serialize::OutputArchive& archive) const {
  archive.write("events", torch::tensor(events_));
  archive.write("snapshot_size", torch::tensor(static_cast<int64_t>(snapshot_.size())));
  for (size_t i = 0; i < snapshot_.size(); ++i) archive.write("snapshot." + std::to_string(i), snapshot_[i]);
  for (const auto& w : other_.weights()) archive.write("mask." + w.name, w.mask);
}

void UnstructuredPruning::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  if (archive.try_read("events", t)) events_ = t.item<int64_t>();
  snapshot_.clear();
  if (archive.try_read("snapshot_size", t)) {
    const int64_t n = t.item<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      torch::Tensor s;
      archive.read("snapshot." + std::to_string(i), s);
      snapshot_.push_back(s);
    }
  }
  for (auto& w : other_.weights()) {
    torch::Tensor m;
    if (archive.try_read("mask." + w.name, m)) {
      torch::NoGradGuard no_grad;
      w.mask.copy_(m);
      w.weight.mul_(w.mask);
    }
  }
}

}  // namespace shrink::pruning
