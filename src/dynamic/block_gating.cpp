#include "shrink/dynamic/block_gating.h"

#include <fmt/format.h>

#include <cmath>
#include <functional>
#include <unordered_set>

#include "shrink/compression/method_errors.h"
#include "shrink/dynamic/block_gate.h"
#include "shrink/dynamic/residual_targets.h"
#include "shrink/nn/layer.h"

namespace shrink::dynamic {

namespace {

/// Runs the scope's end action even when a forward throws.
struct ScopeExit {
  std::function<void()> action;
  ~ScopeExit() { action(); }
};

/// Puts every module in eval mode until destroyed, then restores each module's own mode
/// (parents first, since train() recurses into children).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& model) : modules_(model.modules(/*include_self=*/true)) {
    for (const auto& m : modules_) was_training_.push_back(m->is_training());
    model.eval();
  }
  ~EvalModeGuard() {
    for (size_t i = 0; i < modules_.size(); ++i) modules_[i]->train(was_training_[i]);
  }

 private:
  std::vector<std::shared_ptr<torch::nn::Module>> modules_;
  std::vector<bool> was_training_;
};

int64_t macs_of(const torch::nn::Module& m) {
  const auto* costed = dynamic_cast<const nn::CostedLayer*>(&m);
  return costed ? costed->macs_per_sample() : 0;
}

}  // namespace

OptionSchema<BlockGating::Options> BlockGating::schema() {
  OptionSchema<Options> s;
  s.add("target_rate", &Options::target_rate,
        "t in (0, 1]: the fraction of inputs for which each gated block should run its branch; the loss gets "
        "penalty * mean over blocks of (mean over the batch of g - t)^2 (ConvNet-AIG's target-rate loss).");
  s.add("penalty", &Options::penalty,
        "Weight of the target-rate loss, >= 0 (2 in the ConvNet-AIG authors' code).");
  s.add("hidden", &Options::hidden, "Width of each gate's hidden layer (16 in ConvNet-AIG).");
  s.add("temperature", &Options::temperature,
        "Gumbel-softmax temperature of the gates' straight-through gradient, > 0 (1 in ConvNet-AIG).");
  s.add("calibration_batches", &Options::calibration_batches,
        "Training batches run in eval mode at the end of each epoch to measure gate_eval_rate and avg_macs "
        "(0: not measured).");
  return s;
}

BlockGating::BlockGating(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  const double t = options_.target_rate;
  if (!(t > 0.0 && t <= 1.0))  // NaN fails too
    fail_at_option(spec_, "target_rate", fmt::format("must be in (0, 1] (got {})", t));
  if (!(options_.penalty >= 0.0 && std::isfinite(options_.penalty)))
    fail_at_option(spec_, "penalty", fmt::format("must be a finite number >= 0 (got {})", options_.penalty));
  if (options_.hidden < 1) fail_at_option(spec_, "hidden", fmt::format("must be at least 1 (got {})", options_.hidden));
  if (!(options_.temperature > 0.0 && std::isfinite(options_.temperature)))
    fail_at_option(spec_, "temperature", fmt::format("must be positive (got {})", options_.temperature));
  if (options_.calibration_batches < 0)
    fail_at_option(spec_, "calibration_batches", fmt::format("must be >= 0 (got {})", options_.calibration_batches));
  reject_schedule(spec_,
                  "block_gating takes no schedule: its gates belong to the trained network (they decide at test "
                  "time which branches run)");
}

void BlockGating::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  model_ = model;
  blocks_.clear();
  costs_ = GatingCosts();
  for (const auto& t : targeted_residual_blocks(model, *this)) {
    GatedBlock b;
    b.block = t.block;
    b.path = t.path;
    b.targeted = t.targeted;
    blocks_.push_back(std::move(b));
  }
  // The method acts on the blocks only: layers inside them that another method rebuilds
  // (low_rank, compact_filters) are not stale targets of this one.
  target_parameters_.clear();
  target_modules_.clear();
  for (const auto& b : blocks_)
    if (b.targeted) target_modules_.emplace_back(b.path, b.block);
}

void BlockGating::prepare_model(TrainContext& ctx) {
  if (blocks_.empty()) bind(ctx.model);
  for (auto& b : blocks_) {
    if (!b.targeted) continue;
    auto& block = *b.block;
    if (block.gate && block.gate->options.channels() == block.in_channels &&
        block.gate->options.hidden() == options_.hidden) {
      block.gate->options.temperature(options_.temperature);
    } else {
      auto gate = std::make_shared<BlockGateImpl>(
          BlockGateOptions(block.in_channels).hidden(options_.hidden).temperature(options_.temperature));
      // The model is already on its device (it moves again after all methods prepared it).
      const auto params = block.parameters();
      if (!params.empty()) gate->to(params.front().device(), params.front().scalar_type());
      block.set_gate(gate);
    }
    b.gate_macs = block.gate->linear_macs();
  }
  if (!sample_shape_.empty()) {
    // Every layer then reports its MACs (`shrink summary`), even in a branch its gate skips.
    std::vector<int64_t> shape{1};
    shape.insert(shape.end(), sample_shape_.begin(), sample_shape_.end());
    const auto params = ctx.model->parameters();
    auto options = torch::TensorOptions().dtype(torch::kFloat32);
    if (!params.empty()) options = options.device(params.front().device());
    costs_ = measure_costs(torch::zeros(shape, options));
  }
}

GatingCosts BlockGating::measure_costs(const torch::Tensor& input) {
  TORCH_CHECK(!blocks_.empty() && model_ != nullptr, "block_gating: measure_costs before bind");
  auto& net = *model_;
  {
    EvalModeGuard eval(net);
    std::vector<std::pair<ResidualBlockImpl*, std::shared_ptr<BlockGateImpl>>> bypassed;
    ScopeExit restore{[&] {
      for (auto& [block, gate] : bypassed) block->gate = gate;
    }};
    // With the member unset (the child stays registered) the block runs ungated.
    for (auto& b : blocks_)
      if (b.block->gate) {
        bypassed.emplace_back(b.block.get(), b.block->gate);
        b.block->gate = nullptr;
      }
    torch::NoGradGuard no_grad;
    net.forward(input.slice(0, 0, 1));
  }

  GatingCosts costs;
  std::unordered_set<const torch::nn::Module*> gate_modules;
  for (auto& b : blocks_) {
    if (b.block->gate)
      for (const auto& m : b.block->gate->modules(/*include_self=*/true)) gate_modules.insert(m.get());
    b.branch_macs = 0;
    for (const auto& item : b.block->named_modules("", /*include_self=*/false)) {
      const auto& key = item.key();
      if (key.rfind("downsample", 0) == 0 || key.rfind("gate", 0) == 0) continue;
      b.branch_macs += macs_of(*item.value());
    }
    if (b.targeted) {
      costs.gated_branch_macs += b.branch_macs;
      costs.gate_macs += b.gate_macs;
    }
  }
  for (const auto& m : net.modules(/*include_self=*/true))
    if (!gate_modules.count(m.get())) costs.dense_macs += macs_of(*m);
  costs_ = costs;
  return costs;
}

std::pair<double, double> BlockGating::measure_inference(const std::vector<torch::Tensor>& batches) {
  TORCH_CHECK(!blocks_.empty() && model_ != nullptr, "block_gating: measure_inference before bind");
  std::vector<std::pair<int64_t, int64_t>> before;
  for (const auto& b : blocks_) before.emplace_back(b.block->gate_eval_inputs, b.block->gate_eval_executed);
  {
    EvalModeGuard eval(*model_);
    torch::NoGradGuard no_grad;
    for (const auto& x : batches) model_->forward(x);
  }
  int64_t inputs = 0, executed = 0;
  double macs = static_cast<double>(costs_.dense_macs + costs_.gate_macs);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    auto& b = blocks_[i];
    if (!b.targeted) continue;
    const int64_t n = b.block->gate_eval_inputs - before[i].first;
    const int64_t k = b.block->gate_eval_executed - before[i].second;
    inputs += n;
    executed += k;
    b.eval_rate = n > 0 ? static_cast<double>(k) / static_cast<double>(n) : -1;
    if (n > 0) macs -= static_cast<double>(b.branch_macs) * (1.0 - b.eval_rate);
  }
  const double rate = inputs > 0 ? static_cast<double>(executed) / static_cast<double>(inputs) : 0.0;
  return {rate, macs};
}

std::vector<std::string> BlockGating::report() const {
  int64_t targeted = 0;
  std::string list;
  for (const auto& b : blocks_) {
    if (!b.targeted) continue;
    ++targeted;
    list += (list.empty() ? "" : ", ") + b.path;
  }
  std::vector<std::string> lines = {
      fmt::format("block_gating: {} of {} residual blocks gated (ConvNet-AIG gates, hidden {}, temperature {:.4g}); "
                  "target rate {:.4g}, penalty {:.4g}",
                  targeted, blocks_.size(), options_.hidden, options_.temperature, options_.target_rate,
                  options_.penalty),
      "block_gating: gated " + list};
  if (costs_.dense_macs > 0) {
    const double at_target = static_cast<double>(costs_.dense_macs + costs_.gate_macs) -
                             (1.0 - options_.target_rate) * static_cast<double>(costs_.gated_branch_macs);
    lines.push_back(fmt::format(
        "block_gating: dense model {} MACs per input, {} ({:.1f}%) of them in the gated branches; the gates add {}; "
        "at the target rate about {:.0f} MACs per input ({:.2f}x fewer)",
        costs_.dense_macs, costs_.gated_branch_macs,
        100.0 * static_cast<double>(costs_.gated_branch_macs) / static_cast<double>(costs_.dense_macs),
        costs_.gate_macs, at_target, static_cast<double>(costs_.dense_macs) / at_target));
  }
  return lines;
}

torch::Tensor BlockGating::first_input(TrainContext& ctx) const {
  if (ctx.calibration_batch) return ctx.calibration_batch(0).inputs;
  if (sample_shape_.empty()) return torch::Tensor();
  std::vector<int64_t> shape{1};
  shape.insert(shape.end(), sample_shape_.begin(), sample_shape_.end());
  return torch::zeros(shape, torch::TensorOptions().device(ctx.device));
}

void BlockGating::on_train_begin(TrainContext& ctx) {
  if (logged_) return;
  if (costs_.dense_macs == 0)
    if (const auto x = first_input(ctx); x.defined()) measure_costs(x);
  for (const auto& line : report()) ctx.log(line);
  logged_ = true;
}

void BlockGating::reset_counters() {
  for (const auto& b : blocks_) b.block->gate_train_inputs = b.block->gate_train_executed = 0;
}

std::pair<int64_t, int64_t> BlockGating::epoch_counts() const {
  int64_t inputs = restored_inputs_, executed = restored_executed_;
  for (const auto& b : blocks_) {
    if (!b.targeted) continue;
    inputs += b.block->gate_train_inputs;
    executed += b.block->gate_train_executed;
  }
  return {inputs, executed};
}

void BlockGating::on_epoch_begin(TrainContext&) {
  // restored_* (a run resumed mid-epoch) stay until the epoch ends.
  reset_counters();
}

torch::Tensor BlockGating::on_loss(TrainContext&, torch::Tensor loss) {
  std::vector<torch::Tensor> terms;
  for (const auto& b : blocks_) {
    if (!b.targeted) continue;
    auto& g = b.block->last_gate_decisions;
    if (g.defined()) terms.push_back((g.mean() - options_.target_rate).square());
    g = torch::Tensor();
  }
  if (terms.empty() || options_.penalty == 0.0) return loss;
  return loss + options_.penalty * torch::stack(terms).mean();
}

void BlockGating::on_epoch_end(TrainContext& ctx) {
  const auto [inputs, executed] = epoch_counts();
  if (inputs > 0) ctx.metrics["gate_rate"] = static_cast<double>(executed) / static_cast<double>(inputs);
  if (options_.calibration_batches > 0 && ctx.calibration_batch) {
    std::vector<torch::Tensor> batches;
    for (int64_t i = 0; i < options_.calibration_batches; ++i) batches.push_back(ctx.calibration_batch(i).inputs);
    measure_costs(batches.front());
    const auto [rate, macs] = measure_inference(batches);
    ctx.metrics["gate_eval_rate"] = rate;
    ctx.metrics["avg_macs"] = macs;
    std::string list;
    for (const auto& b : blocks_)
      if (b.targeted) list += fmt::format("{}{} {:.3f}", list.empty() ? "" : ", ", b.path, b.eval_rate);
    ctx.log(fmt::format("block_gating: epoch {} eval execution rate {:.4f} ({}); {:.0f} MACs per input, dense {} "
                        "({:.2f}x)",
                        ctx.epoch + 1, rate, list, macs, costs_.dense_macs,
                        macs > 0 ? static_cast<double>(costs_.dense_macs) / macs : 0.0));
  }
  // The end-of-epoch checkpoint follows: it must carry no counts into the next epoch.
  reset_counters();
  restored_inputs_ = restored_executed_ = 0;
}

void BlockGating::save_state(torch::serialize::OutputArchive& archive) const {
  const auto [inputs, executed] = epoch_counts();
  archive.write("epoch_counts", torch::tensor({inputs, executed}));
}

void BlockGating::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  restored_inputs_ = restored_executed_ = 0;
  if (archive.try_read("epoch_counts", t) && t.numel() == 2) {
    restored_inputs_ = t[0].item<int64_t>();
    restored_executed_ = t[1].item<int64_t>();
  }
}

}  // namespace shrink::dynamic
