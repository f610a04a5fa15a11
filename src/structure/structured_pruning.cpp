#include "shrink/structure/structured_pruning.h"

#include "shrink/compression/method_errors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/layer.h"
#include "shrink/nn/linear.h"

namespace shrink::structure {

// ---------------------------------------------------------------------------------------------
// Scores and selection

torch::Tensor channel_scores(const ChannelGroup& group, const std::string& criterion) {
  torch::NoGradGuard no_grad;
  const int64_t c = group.channels();
  auto sum = torch::zeros({c}, torch::kDouble);
  if (criterion == "l1") {
    int64_t per_channel = 0;
    for (const auto* p : group.with_role(ChannelRole::producer)) {
      torch::Tensor w;
      if (auto* conv = p->module->as<nn::Conv2dImpl>()) w = conv->weight;
      if (auto* fc = p->module->as<nn::LinearImpl>()) w = fc->weight;
      TORCH_CHECK(w.defined(), "channel_scores: producer ", p->path, " has no weight");
      sum += w.detach().abs().reshape({c, -1}).sum(1).to(torch::kCPU, torch::kDouble);
      per_channel += w.numel() / c;
    }
    return per_channel > 0 ? sum / static_cast<double>(per_channel) : sum;
  }
  if (criterion == "bn_scale") {
    int64_t norms = 0;
    for (const auto* n : group.with_role(ChannelRole::norm)) {
      auto* bn = n->module->as<torch::nn::BatchNorm2dImpl>();
      if (!bn || !bn->weight.defined()) continue;
      sum += bn->weight.detach().abs().to(torch::kCPU, torch::kDouble);
      ++norms;
    }
    if (norms == 0)
      throw UserError("criterion bn_scale: channel group '" + group.name + "' has no BatchNorm with a scale");
    return sum / static_cast<double>(norms);
  }
  throw UserError("unknown channel criterion '" + criterion + "' (known: l1, bn_scale)");
}

std::vector<std::vector<int64_t>> select_channels(const std::vector<torch::Tensor>& scores, double ratio, bool global,
                                                  int64_t min_channels) {
  TORCH_CHECK(ratio >= 0 && ratio <= 1, "select_channels: ratio must be in [0, 1], got ", ratio);
  std::vector<std::vector<double>> s;
  for (const auto& t : scores) {
    auto d = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
    s.emplace_back(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
  }
  std::vector<std::vector<bool>> removed;
  for (const auto& v : s) removed.emplace_back(v.size(), false);
  if (!global) {
    for (size_t g = 0; g < s.size(); ++g) {
      const int64_t c = static_cast<int64_t>(s[g].size());
      std::vector<int64_t> order(static_cast<size_t>(c));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[g][a] < s[g][b]; });
      const int64_t n = std::min<int64_t>(std::llround(ratio * static_cast<double>(c)),
                                          std::max<int64_t>(0, c - min_channels));
      for (int64_t i = 0; i < n; ++i) removed[g][static_cast<size_t>(order[i])] = true;
    }
  } else {
    std::vector<std::tuple<double, size_t, size_t>> all;
    for (size_t g = 0; g < s.size(); ++g)
      for (size_t c = 0; c < s[g].size(); ++c) all.emplace_back(s[g][c], g, c);
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
    const int64_t target = std::llround(ratio * static_cast<double>(all.size()));
    std::vector<int64_t> remaining;
    for (const auto& v : s) remaining.push_back(static_cast<int64_t>(v.size()));
    int64_t done = 0;
    for (const auto& [score, g, c] : all) {
      if (done >= target) break;
      if (remaining[g] <= min_channels) continue;
      removed[g][c] = true;
      --remaining[g];
      ++done;
    }
  }
  std::vector<std::vector<int64_t>> keep(s.size());
  for (size_t g = 0; g < s.size(); ++g)
    for (size_t c = 0; c < s[g].size(); ++c)
      if (!removed[g][c]) keep[g].push_back(static_cast<int64_t>(c));
  return keep;
}

int64_t model_macs(torch::nn::Module& model) {
  int64_t total = 0;
  for (const auto& m : model.modules(/*include_self=*/false))
    if (auto* costed = dynamic_cast<const nn::CostedLayer*>(m.get())) total += costed->macs_per_sample();
  return total;
}

// ---------------------------------------------------------------------------------------------
// filter_pruning

OptionSchema<FilterPruning::Options> FilterPruning::schema() {
  OptionSchema<Options> s;
  s.add("criterion", &Options::criterion,
        "Channel importance: l1 = L1 norm of the group's filters (Li et al. 2017); bn_scale = |gamma| of the "
        "group's BatchNorms (network slimming: pair with l1_regularization on the BN weights).")
      .choices({"l1", "bn_scale"});
  s.add("ratio", &Options::ratio,
        "Fraction of channels removed: of each selected group (scope group) or of all of them (scope global).")
      .range(0, 1);
  s.add("scope", &Options::scope,
        "group = the same ratio in every group; global = one ranking of all selected channels (scores "
        "normalized: mean |w| per filter weight, mean |gamma| over a group's BatchNorms).")
      .choices({"group", "global"});
  s.add("groups", &Options::groups,
        "Globs over channel group names (e.g. 'layer1.*', 'stream.*'); empty = every internal group. "
        "Internal groups are named after their first conv (layer1.0.conv1); residual streams 'stream.layerK'.");
  s.add("min_channels", &Options::min_channels, "No group is left with fewer channels.").min(1);
  s.add("thin", &Options::thin,
        "true: remove the channels physically (smaller layers, fewer MACs); false: mask them (zero filters, "
        "biases and BatchNorm scales/shifts; same outputs, same shapes).");
  return s;
}

FilterPruning::FilterPruning(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)), thinned_(options_.thin) {}

namespace {

std::string joined_names(const std::vector<ChannelGroup>& groups) {
  std::string out;
  for (const auto& g : groups) out += (out.empty() ? "" : ", ") + g.name;
  return out;
}

}  // namespace

std::vector<ChannelGroup> FilterPruning::selected_groups(torch::nn::Module& model) const {
  auto all = channel_groups(model);
  std::vector<ChannelGroup> out;
  if (options_.groups.empty()) {
    for (auto& g : all)
      if (g.kind == GroupKind::internal) out.push_back(std::move(g));
    if (out.empty())
      fail_at_option(spec_, "groups",
                     "the model has no internal channel groups; name groups to prune (groups: " + joined_names(all) +
                         ")");
    return out;
  }
  std::vector<bool> used(options_.groups.size(), false);
  for (auto& g : all) {
    bool any = false;
    for (size_t i = 0; i < options_.groups.size(); ++i)
      if (glob_match(options_.groups[i], g.name)) used[i] = any = true;
    if (any) out.push_back(g);
  }
  for (size_t i = 0; i < used.size(); ++i)
    if (!used[i])
      fail_at_option(spec_, "groups",
                     "'" + options_.groups[i] + "' matches no channel group of the model; groups: " + joined_names(all),
                     static_cast<int64_t>(i));
  return out;
}

void FilterPruning::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  const auto groups = selected_groups(*model);
  if (options_.criterion == "bn_scale") {
    std::string without;
    for (const auto& g : groups) {
      bool scaled = false;
      for (const auto* n : g.with_role(ChannelRole::norm)) {
        auto* bn = n->module->as<torch::nn::BatchNorm2dImpl>();
        scaled = scaled || (bn && bn->weight.defined());
      }
      if (!scaled) without += (without.empty() ? "" : ", ") + g.name;
    }
    if (!without.empty())
      fail_at_option(spec_, "criterion",
                     "bn_scale needs a BatchNorm with a scale in every selected group; these have none: " + without);
  }
}

int64_t FilterPruning::channels_removed() const {
  int64_t n = 0;
  for (const auto& k : kept_) n += k.channels - static_cast<int64_t>(k.keep.size());
  return n;
}

void FilterPruning::prune(TrainContext& ctx) {
  if (pruned_) return;
  auto& model = *ctx.model;
  auto groups = selected_groups(model);
  std::vector<torch::Tensor> scores;
  for (const auto& g : groups) scores.push_back(channel_scores(g, options_.criterion));
  const auto keeps = select_channels(scores, options_.ratio, options_.scope == "global", options_.min_channels);
  const int64_t macs_before = model_macs(model);

  kept_.clear();
  zeroed_.clear();
  thinned_ = options_.thin;
  int64_t total = 0;
  std::vector<torch::Tensor> resized;
  for (size_t i = 0; i < groups.size(); ++i) {
    kept_.push_back({groups[i].name, groups[i].channels(), keeps[i]});
    total += groups[i].channels();
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    if (thinned_) {
      auto r = thin(groups[i], keeps[i]);
      resized.insert(resized.end(), r.begin(), r.end());
    } else {
      auto z = mask_channels(groups[i], keeps[i]);
      zeroed_.insert(zeroed_.end(), z.begin(), z.end());
    }
  }
  if (ctx.optimizer && !resized.empty()) forget_optimizer_state(*ctx.optimizer, resized);
  pruned_ = applied_ = true;

  std::string line = fmt::format("{} at step {}: {} {} of {} channels in {} groups ({}, ratio {} {})", name(),
                                 ctx.step, thinned_ ? "removed" : "masked", channels_removed(), total, groups.size(),
                                 options_.criterion, options_.ratio, options_.scope == "global" ? "global" : "per group");
  if (macs_before > 0 && thinned_) line += fmt::format("; MACs/sample {} -> {}", macs_before, model_macs(model));
  ctx.log(line);
  for (const auto& k : kept_)
    ctx.log(fmt::format("  {}: {} -> {} channels", k.group, k.channels, k.keep.size()));
}

void FilterPruning::apply_kept(torch::nn::Module& model) {
  const auto groups = channel_groups(model);
  zeroed_.clear();
  for (const auto& k : kept_) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.name == k.group; });
    if (it == groups.end())
      throw UserError(name() + ": the checkpoint pruned channel group '" + k.group +
                      "', which the model does not have (groups: " + joined_names(groups) + ")");
    const int64_t now = it->channels(), kept = static_cast<int64_t>(k.keep.size());
    if (thinned_ && now == kept && now != k.channels) continue;  // already thinned
    if (now != k.channels)
      throw UserError(fmt::format("{}: channel group '{}' has {} channels, the checkpoint pruned it from {}", name(),
                                  k.group, now, k.channels));
    if (thinned_) {
      thin(*it, k.keep);
    } else {
      auto z = mask_channels(*it, k.keep);
      zeroed_.insert(zeroed_.end(), z.begin(), z.end());
    }
  }
  applied_ = true;
}

void FilterPruning::prepare_model(TrainContext& ctx) {
  if (pruned_ && !applied_) apply_kept(*ctx.model);
}

void FilterPruning::on_train_begin(TrainContext& ctx) {
  if (!pruned_ && ctx.step >= spec_.schedule.begin(ctx.steps_per_epoch)) prune(ctx);
}

void FilterPruning::on_step_begin(TrainContext& ctx) {
  if (!pruned_ && ctx.step >= spec_.schedule.begin(ctx.steps_per_epoch)) prune(ctx);
}

void FilterPruning::on_before_optimizer_step(TrainContext&) {
  if (!zeroed_.empty()) zero_row_gradients(zeroed_);
}

void FilterPruning::on_after_optimizer_step(TrainContext&) {
  if (!zeroed_.empty()) zero_rows(zeroed_);
}

void FilterPruning::on_epoch_end(TrainContext& ctx) {
  ctx.metrics["channels_removed"] = static_cast<double>(channels_removed());
  if (const int64_t macs = model_macs(*ctx.model); macs > 0) ctx.metrics["macs"] = static_cast<double>(macs);
}

void FilterPruning::save_state(torch::serialize::OutputArchive& archive) const {
  archive.write("pruned", torch::tensor(static_cast<int64_t>(pruned_)));
  archive.write("thinned", torch::tensor(static_cast<int64_t>(thinned_)));
  archive.write("groups", torch::tensor(static_cast<int64_t>(kept_.size())));
  for (size_t i = 0; i < kept_.size(); ++i) {
    const auto key = "group" + std::to_string(i);
    archive.write(key + "_name", c10::IValue(kept_[i].group));
    archive.write(key + "_channels", torch::tensor(kept_[i].channels));
    archive.write(key + "_keep", torch::tensor(kept_[i].keep, torch::kLong));
  }
}

void FilterPruning::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  if (!archive.try_read("pruned", t)) return;
  pruned_ = t.item<int64_t>() != 0;
  auto read = [&](const std::string& key) {
    torch::Tensor v;
    if (!archive.try_read(key, v)) throw UserError(name() + ": checkpoint state has no '" + key + "'");
    return v;
  };
  thinned_ = read("thinned").item<int64_t>() != 0;
  const int64_t n = read("groups").item<int64_t>();
  kept_.clear();
  for (int64_t i = 0; i < n; ++i) {
    const auto key = "group" + std::to_string(i);
    c10::IValue name_value;
    if (!archive.try_read(key + "_name", name_value) || !name_value.isString())
      throw UserError(name() + ": checkpoint state has no '" + key + "_name'");
    Kept k;
    k.group = name_value.toStringRef();
    k.channels = read(key + "_channels").item<int64_t>();
    auto keep = read(key + "_keep").to(torch::kLong).contiguous();
    k.keep.assign(keep.data_ptr<int64_t>(), keep.data_ptr<int64_t>() + keep.numel());
    kept_.push_back(std::move(k));
  }
  applied_ = false;
}

// ---------------------------------------------------------------------------------------------
// group_lasso

namespace {
/// The weight viewed as [groups, elements per group].
torch::Tensor grouped(const torch::Tensor& w, bool filters) {
  auto x = filters ? w : w.transpose(0, 1);
  return x.reshape({x.size(0), -1});
}
}  // namespace

torch::Tensor group_lasso_gradient(const torch::Tensor& weight, bool filters) {
  TORCH_CHECK(weight.dim() >= 2, "group_lasso_gradient: needs a weight with 2 or more dimensions");
  torch::NoGradGuard no_grad;
  auto w = weight.detach();
  auto flat = grouped(w, filters);
  auto norms = flat.norm(2, {1}, /*keepdim=*/true);
  // Where a group is all zeros its rows are zero too: dividing by 1 there gives 0.
  auto g = flat / torch::where(norms > 0, norms, torch::ones_like(norms));
  if (filters) return g.reshape(w.sizes());
  auto t = w.transpose(0, 1);
  return g.reshape(t.sizes()).transpose(0, 1).contiguous();
}

double group_norm_sum(const torch::Tensor& weight, bool filters) {
  torch::NoGradGuard no_grad;
  return grouped(weight.detach(), filters).norm(2, {1}).sum().item<double>();
}

OptionSchema<GroupLasso::Options> GroupLasso::schema() {
  OptionSchema<Options> s;
  s.add("strength", &Options::strength, "Coefficient of the penalty sum over groups of ||w_g||_2.").min(0);
  s.add("groups", &Options::groups,
        "filters = one group per output channel (dim 0); channels = one group per input channel (dim 1).")
      .choices({"filters", "channels"});
  return s;
}

GroupLasso::GroupLasso(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {}

void GroupLasso::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  weights_.clear();
  for (const auto& [name, p] : target_parameters_)
    if (p.dim() >= 2) weights_.emplace_back(name, p);
  if (weights_.empty())
    fail_at_option(spec_, "targets", "matches no conv or linear weight (group_lasso needs parameters of 2+ dimensions)");
}

void GroupLasso::on_before_optimizer_step(TrainContext& ctx) {
  if (!due(ctx)) return;
  torch::NoGradGuard no_grad;
  const bool filters = options_.groups == "filters";
  for (auto& [name, p] : weights_) {
    if (!p.grad().defined()) continue;
    p.mutable_grad().add_(group_lasso_gradient(p, filters), options_.strength);
  }
}

void GroupLasso::on_epoch_end(TrainContext& ctx) {
  double total = 0;
  const bool filters = options_.groups == "filters";
  for (const auto& [name, p] : weights_) total += group_norm_sum(p, filters);
  ctx.metrics["group_norm_sum"] = total;
}

}  // namespace shrink::structure
