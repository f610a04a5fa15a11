#pragma once
// The `stochastic_depth` method (Huang et al. 2016, "Deep networks with stochastic depth"):
// during training each residual block's branch is dropped for a whole mini-batch with
// probability 1 - p_l (the block is then its shortcut, and computes nothing of its branch); at
// test time every branch runs, scaled by p_l. Survival probabilities over the L residual
// blocks of the model, l = 1..L in forward order:
//   linear   p_l = 1 - (l / L) (1 - p_L)    (the paper: 1 at the input, p_L at the last block)
//   uniform  p_l = p_L
// `targets` restricts which blocks are dropped (a block's module path, e.g. "layer2.3", must
// match); the others keep p = 1 but still count in l. There is no schedule: the probabilities
// belong to the trained network (they scale its branches at test time), so they are set again
// from the recipe whenever it is rebuilt (eval, summary, resume).
//
//   compression:
//     - {method: stochastic_depth, final_survival: 0.5}
//
// The per-block draws (ResidualBlockImpl::forward) come from the global CPU generator, which
// the recipe seed starts and checkpoints save, so runs replay and resume exactly.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/models/resnet.h"

namespace shrink::dynamic {

/// One residual block as the method sees it.
struct BlockSurvival {
  std::string path;        ///< module path, e.g. "layer2.3"
  int64_t index = 0;       ///< l, 1-based, over all residual blocks in forward order
  bool targeted = false;   ///< matched by targets (and not excluded)
  double survival = 1.0;   ///< p_l set on the block (1 when not targeted)
  ResidualBlockPtr block;
};

class StochasticDepth : public CompressionMethod {
 public:
  struct Options {
    double final_survival = 0.5;  ///< p_L, in (0, 1]
    std::string rule = "linear";  ///< linear | uniform
  };
  static OptionSchema<Options> schema();
  /// Checks final_survival and rejects schedule keys (errors at the recipe key).
  StochasticDepth(MethodSpec spec, Options options);

  /// The survival probability of block l of L under `rule` with final survival p_L.
  static double survival(const std::string& rule, int64_t l, int64_t L, double final_survival);

  /// Resolves targets, then plans the survival of every residual block. A model without
  /// residual blocks is an error at `method`; targets matching no block, at `targets`.
  void bind(const ModelPtr& model) override;
  /// Sets survival_probability on every residual block (binds first when bind was not called).
  /// Idempotent.
  void prepare_model(TrainContext& ctx) override;
  /// Logs the survival probabilities and the expected fraction of block computations.
  void on_train_begin(TrainContext& ctx) override;
  /// Resets the targeted blocks' run/drop counters.
  void on_epoch_begin(TrainContext& ctx) override;
  /// metrics: blocks_run_fraction = runs / (runs + drops) of the targeted blocks this epoch.
  void on_epoch_end(TrainContext& ctx) override;
  /// The epoch's counts so far, so that a run resumed mid-epoch reports the whole epoch.
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  const Options& options() const { return options_; }
  /// Every residual block of the bound model, in forward order.
  const std::vector<BlockSurvival>& blocks() const { return blocks_; }
  /// sum p_l / L over all residual blocks: the expected fraction of block computations in training.
  double expected_run_fraction() const;
  /// The lines on_train_begin logs.
  std::vector<std::string> report() const;

 private:
  /// Runs and drops of the targeted blocks since on_epoch_begin, plus those restored from a checkpoint.
  std::pair<int64_t, int64_t> epoch_counts() const;
  void reset_counters();

  Options options_;
  std::vector<BlockSurvival> blocks_;
  int64_t restored_runs_ = 0, restored_drops_ = 0;  ///< counts of the epoch before a resume
  bool logged_ = false;
};

}  // namespace shrink::dynamic
