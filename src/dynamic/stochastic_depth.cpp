#include "shrink/dynamic/stochastic_depth.h"

#include <fmt/format.h>

#include "shrink/compression/method_errors.h"
#include "shrink/dynamic/residual_targets.h"

namespace shrink::dynamic {

OptionSchema<StochasticDepth::Options> StochasticDepth::schema() {
  OptionSchema<Options> s;
  s.add("final_survival", &Options::final_survival,
        "p_L, the survival probability of the last residual block, in (0, 1]; 0.5 in Huang et al. 2016. "
        "1: no block is ever dropped.");
  s.add("rule", &Options::rule,
        "linear: p_l = 1 - (l / L) (1 - p_L) over the L residual blocks in forward order (the paper); uniform: "
        "every block p_L.")
      .choices({"linear", "uniform"});
  return s;
}

StochasticDepth::StochasticDepth(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  const double p = options_.final_survival;
  if (!(p > 0.0 && p <= 1.0))  // NaN fails too
    fail_at_option(spec_, "final_survival", fmt::format("must be in (0, 1] (got {})", p));
  if (options_.rule != "linear" && options_.rule != "uniform")
    fail_at_option(spec_, "rule", "must be linear or uniform (got '" + options_.rule + "')");
  reject_schedule(spec_,
                  "stochastic_depth takes no schedule: its survival probabilities belong to the trained network "
                  "(they also scale the residual branches at test time)");
}

double StochasticDepth::survival(const std::string& rule, int64_t l, int64_t L, double final_survival) {
  TORCH_CHECK(L >= 1 && l >= 1 && l <= L, "block ", l, " of ", L, " is out of range");
  if (rule == "uniform") return final_survival;
  TORCH_CHECK(rule == "linear", "unknown stochastic depth rule '", rule, "'");
  return 1.0 - static_cast<double>(l) / static_cast<double>(L) * (1.0 - final_survival);
}

void StochasticDepth::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  blocks_.clear();
  const auto residual = targeted_residual_blocks(model, *this);
  const auto L = static_cast<int64_t>(residual.size());
  for (int64_t l = 1; l <= L; ++l) {
    BlockSurvival b;
    b.block = residual[l - 1].block;
    b.index = l;
    b.path = residual[l - 1].path;
    b.targeted = residual[l - 1].targeted;
    b.survival = b.targeted ? survival(options_.rule, l, L, options_.final_survival) : 1.0;
    blocks_.push_back(std::move(b));
  }
}

void StochasticDepth::prepare_model(TrainContext& ctx) {
  if (blocks_.empty()) bind(ctx.model);
  for (const auto& b : blocks_) b.block->survival_probability = b.survival;
}

double StochasticDepth::expected_run_fraction() const {
  if (blocks_.empty()) return 1.0;
  double sum = 0;
  for (const auto& b : blocks_) sum += b.survival;
  return sum / static_cast<double>(blocks_.size());
}

std::vector<std::string> StochasticDepth::report() const {
  int64_t targeted = 0;
  std::string list;
  for (const auto& b : blocks_) {
    targeted += b.targeted ? 1 : 0;
    list += fmt::format("{}{} {:.4g}", list.empty() ? "" : ", ", b.path, b.survival);
  }
  return {fmt::format("stochastic_depth: {} rule, final survival {:.4g}, {} of {} residual blocks targeted; "
                      "expected fraction of block computations {:.4f} (sum p_l / L)",
                      options_.rule, options_.final_survival, targeted, blocks_.size(), expected_run_fraction()),
          "stochastic_depth: survival " + list};
}

void StochasticDepth::on_train_begin(TrainContext& ctx) {
  if (logged_) return;
  for (const auto& line : report()) ctx.log(line);
  logged_ = true;
}

void StochasticDepth::reset_counters() {
  for (const auto& b : blocks_) b.block->branch_runs = b.block->branch_drops = 0;
}

std::pair<int64_t, int64_t> StochasticDepth::epoch_counts() const {
  int64_t runs = restored_runs_, drops = restored_drops_;
  for (const auto& b : blocks_) {
    if (!b.targeted) continue;
    runs += b.block->branch_runs;
    drops += b.block->branch_drops;
  }
  return {runs, drops};
}

void StochasticDepth::on_epoch_begin(TrainContext&) {
  // restored_* (a run resumed mid-epoch) stay until the epoch ends.
  reset_counters();
}

void StochasticDepth::on_epoch_end(TrainContext& ctx) {
  const auto [runs, drops] = epoch_counts();
  if (runs + drops > 0)
    ctx.metrics["blocks_run_fraction"] = static_cast<double>(runs) / static_cast<double>(runs + drops);
  // The end-of-epoch checkpoint follows: it must carry no counts into the next epoch.
  reset_counters();
  restored_runs_ = restored_drops_ = 0;
}

void StochasticDepth::save_state(torch::serialize::OutputArchive& archive) const {
  const auto [runs, drops] = epoch_counts();
  archive.write("epoch_counts", torch::tensor({runs, drops}));
}

void StochasticDepth::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  restored_runs_ = restored_drops_ = 0;
  if (archive.try_read("epoch_counts", t) && t.numel() == 2) {
    restored_runs_ = t[0].item<int64_t>();
    restored_drops_ = t[1].item<int64_t>();
  }
}

}  // namespace shrink::dynamic
