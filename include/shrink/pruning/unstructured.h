#pragma once
// Unstructured pruning of individual weights: magnitude (Han et al. 2015), random (a baseline)
// or Optimal Brain Damage saliency (LeCun et al. 1990, diagonal Fisher estimate); per layer or
// with one global threshold; one-shot, iterative prune-and-retrain cycles, or automated
// gradual pruning (Zhu & Gupta 2017); optional lottery-ticket rewinding (Frankle & Carbin 2019).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/pruning/mask.h"

namespace shrink::pruning {

class UnstructuredPruning : public CompressionMethod {
 public:
  struct Options {
    double sparsity = 0.5;          ///< final fraction of targeted weights set to zero
    std::string criterion = "magnitude";  ///< magnitude | random | obd
    std::string scope = "layer";    ///< layer (each tensor to `sparsity`) | global (one threshold)
    std::string schedule = "one_shot";    ///< one_shot | iterative | agp
    double initial_sparsity = 0.0;  ///< agp: sparsity at the schedule's start
    int64_t cycles = 3;             ///< iterative: prune events, evenly spread over the schedule
    int64_t obd_batches = 8;        ///< obd: training batches for the Fisher estimate
    std::string rewind = "none";    ///< none | init | epoch: reset survivors after each prune
    double rewind_epoch = 0;        ///< rewind: epoch: the epoch whose weights survivors return to
    int64_t seed = 1;               ///< random: generator seed (each prune event draws anew)
  };
  static OptionSchema<Options> schema();
  UnstructuredPruning(MethodSpec spec, Options options);

  void bind(const ModelPtr& model) override;
  void prepare_model(TrainContext& ctx) override;
  void on_train_begin(TrainContext& ctx) override;
  void on_step_begin(TrainContext& ctx) override;
  void on_before_optimizer_step(TrainContext& ctx) override;
  void on_after_optimizer_step(TrainContext& ctx) override;
  void on_epoch_end(TrainContext& ctx) override;
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  /// Sparsity the schedule asks for at `step` (before that step runs).
  double target_sparsity(int64_t step, int64_t steps_per_epoch, int64_t total_steps) const;
  /// Current fraction of zeros in the targeted masks.
  double current_sparsity() const;
  /// Prunes the targets to `sparsity` now (masks only grow). Uses ctx.calibration_batch for obd.
  void prune_to(double sparsity, TrainContext& ctx);
  /// The targeted weights and their masks (Shrink layers' buffers, then other parameters').
  std::vector<MaskedWeight> masked_weights() const;

 private:
  torch::Tensor scores_of(const MaskedWeight& w, const torch::Tensor& fisher, uint64_t draw) const;
  std::vector<torch::Tensor> fisher_diagonal(TrainContext& ctx, const std::vector<MaskedWeight>& weights) const;
  int64_t total_weights() const;
  void take_snapshot();
  void rewind_survivors(TrainContext& ctx);

  Options options_;
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> layers_;  ///< targeted Shrink layers
  ParameterMasks other_;          ///< targeted parameters of other modules
  std::vector<torch::Tensor> snapshot_;  ///< rewind: weights to return to (masked_weights() order)
  int64_t events_ = 0;            ///< prune events so far (random draws differ per event)
  /// Sparsity of the masks after the last prune (read from the masks once per run, so the
  /// per-step check does not sum every mask); -1 until then.
  double pruned_to_ = -1;
};

}  // namespace shrink::pruning
