#pragma once
// The `block_gating` method: per-input gating of residual blocks, ConvNet-AIG (Veit & Belongie
// 2018, "Convolutional networks with adaptive inference graphs"; SkipNet, Wang et al. 2018, is
// the same idea with an RL-trained gate). Every targeted residual block gets a BlockGate
// (shrink/dynamic/block_gate.h) that decides from the block's input, per input, whether its
// branch runs: out_n = merge(shortcut(x, pre)_n + g_n * branch(pre)_n), g_n in {0, 1}. Training
// runs every branch and multiplies it by g (Gumbel-softmax straight-through gradient); inference
// computes the branch only for the inputs whose gate opens (ResidualBlockImpl::forward).
// The loss gets ConvNet-AIG's target-rate term
//   penalty * mean_l (mean_n g_{l,n} - target_rate)^2
// over the gated blocks l that ran their gate in the step. The gates are part of the trained
// network: prepare_model attaches them whenever the recipe is rebuilt (eval, summary, resume)
// before the checkpoint's weights load. No schedule.
//
//   compression:
//     - {method: block_gating, target_rate: 0.6}
//
// Metrics each epoch: gate_rate (fraction of the training inputs whose gated branches ran),
// gate_eval_rate (the same in eval mode on `calibration_batches` training batches) and avg_macs
// (MACs per input actually computed on them: every ungated layer, each gated branch times its
// executed fraction, and the gates).
//
// Stochastic depth on the same blocks composes (ResidualBlockImpl::forward): a dropped training
// forward skips the gate too, and test-time scaling applies to the gated branch.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/compression/sample_shape.h"
#include "shrink/models/resnet.h"

namespace shrink::dynamic {

/// One residual block as the method sees it.
struct GatedBlock {
  std::string path;          ///< module path, e.g. "layer2.3"
  bool targeted = false;     ///< matched by targets (and not excluded): gated
  ResidualBlockPtr block;
  int64_t branch_macs = 0;   ///< MACs per input of the branch (measured; 0 before measure_costs)
  int64_t gate_macs = 0;     ///< MACs per input of the gate (0 when not targeted)
  double eval_rate = -1;     ///< executed fraction in the last calibration pass (-1: none yet)
};

/// What measure_costs finds: MACs per input of one forward with every branch running.
struct GatingCosts {
  int64_t dense_macs = 0;   ///< the model without gates, every branch running
  int64_t gated_branch_macs = 0;  ///< the part of dense_macs in the targeted blocks' branches
  int64_t gate_macs = 0;    ///< all gates together
};

class BlockGating : public CompressionMethod, public SampleShapeConsumer {
 public:
  struct Options {
    double target_rate = 0.6;         ///< t in (0, 1]
    double penalty = 2.0;             ///< weight of the target-rate loss (the authors' code: 2)
    int64_t hidden = 16;              ///< gate width
    double temperature = 1.0;         ///< Gumbel-softmax temperature
    int64_t calibration_batches = 4;  ///< training batches for gate_eval_rate / avg_macs (0: none)
  };
  static OptionSchema<Options> schema();
  /// Checks the options and rejects schedule keys (errors at the recipe key).
  BlockGating(MethodSpec spec, Options options);

  /// Resolves targets over the residual blocks; target_modules() then holds the targeted blocks
  /// only (and target_parameters() nothing). A model without residual blocks is an error at
  /// `method`; targets matching no block, at `targets`.
  void bind(const ModelPtr& model) override;
  /// Attaches a gate to every targeted block (binds first when bind was not called); keeps a
  /// gate already there when its shape matches (idempotent). With the sample shape known,
  /// measures the dense costs with one forward of zeros.
  void prepare_model(TrainContext& ctx) override;
  void set_sample_shape(std::vector<int64_t> shape) override { sample_shape_ = std::move(shape); }
  /// Logs the gated blocks, the gates' cost and the dense MACs.
  void on_train_begin(TrainContext& ctx) override;
  /// Resets the gated blocks' training counters.
  void on_epoch_begin(TrainContext& ctx) override;
  /// Adds penalty * mean_l (mean_n g_{l,n} - t)^2 over the gated blocks that ran their gate.
  torch::Tensor on_loss(TrainContext& ctx, torch::Tensor loss) override;
  /// metrics: gate_rate; with calibration batches, gate_eval_rate and avg_macs (and a log line
  /// with each block's eval rate).
  void on_epoch_end(TrainContext& ctx) override;
  /// The epoch's training counts so far, so that a run resumed mid-epoch reports the whole epoch.
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  /// One eval-mode forward of `input` with every gate bypassed, restoring modes and gates
  /// afterwards: fills blocks()' branch_macs and returns the totals.
  GatingCosts measure_costs(const torch::Tensor& input);
  /// Runs `batches` in eval mode (no gradient; modes restored) and sets each gated block's
  /// eval_rate. Returns {executed fraction over all gated blocks, MACs per input actually
  /// computed} (the costs from the last measure_costs).
  std::pair<double, double> measure_inference(const std::vector<torch::Tensor>& batches);

  const Options& options() const { return options_; }
  /// Every residual block of the bound model, in forward order.
  const std::vector<GatedBlock>& blocks() const { return blocks_; }
  const GatingCosts& costs() const { return costs_; }
  /// Training inputs seen / executed by the gated blocks this epoch (restored counts included).
  std::pair<int64_t, int64_t> epoch_counts() const;
  /// The lines on_train_begin logs.
  std::vector<std::string> report() const;

 private:
  void reset_counters();
  torch::Tensor first_input(TrainContext& ctx) const;

  Options options_;
  ModelPtr model_;
  std::vector<GatedBlock> blocks_;
  GatingCosts costs_;
  std::vector<int64_t> sample_shape_;
  int64_t restored_inputs_ = 0, restored_executed_ = 0;  ///< counts of the epoch before a resume
  bool logged_ = false;
};

}  // namespace shrink::dynamic
