#pragma once
// The `low_rank` compression method: factorizes the targeted layers before training, either
// from their current weights (init: decompose, e.g. a trained model.weights, then fine-tune) or
// freshly initialized (init: random, trained from scratch). Schemes:
//   svd          nn::Linear: truncated SVD, in -> r -> out (Denton et al. 2014 / Xue et al. 2013)
//   jaderberg    nn::Conv2d: kh x 1 then 1 x kw through r channels (Jaderberg et al. 2014)
//   bn_low_rank  jaderberg with BatchNorm between the factors (Tai et al. 2016)
//   cp           nn::Conv2d: 1x1 -> kh x 1 -> 1 x kw depthwise -> 1x1, CP rank R (Lebedev et al. 2015)
//   tucker2      nn::Conv2d: 1x1 in -> r_in, k x k -> r_out, 1x1 -> out (Kim et al. 2016)
// Exactly one rank rule per entry: a fixed rank (ranks for tucker2's two modes), an energy
// fraction of the squared singular values, EVBMF ranks, or one global parameter or MAC target
// met by one energy level shared by all targeted layers (cp: one fraction of a maximal rank).
//
//   compression:
//     - {method: low_rank, targets: ['features.*'], scheme: tucker2, vbmf: true}
//     - {method: low_rank, targets: ['fc1'], scheme: svd, param_reduction: 4}
//
// The chosen forms are saved in checkpoints (per layer path) and rebuilt in prepare_model on a
// restored run before the weights load, so eval, summary, export and resume work.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/compression/rebuilds_layers.h"
#include "shrink/compression/sample_shape.h"

namespace shrink::lowrank {

/// What the method did to one layer.
struct LayerFactorization {
  std::string path;
  std::string form;                   ///< "svd(20)" for a Linear, ConvForm::str() for a Conv2d
  int64_t params_before = 0, params_after = 0;
  double relative_error = -1;         ///< init decompose: ||W - W_hat|| / ||W||; -1 for init random
};

/// "svd(20)": how the method names a Linear layer of rank 20.
std::string svd_form_str(int64_t rank);

class LowRankFactorization : public CompressionMethod, public SampleShapeConsumer, public RebuildsLayers {
 public:
  struct Options {
    std::string scheme = "svd";       ///< svd (Linear) | jaderberg | cp | tucker2 | bn_low_rank (Conv2d)
    int64_t rank = 0;                 ///< one rank for every target (tucker2: both modes); 0: unset
    std::vector<int64_t> ranks;       ///< tucker2 only: [rank_in, rank_out]
    double energy = 0;                ///< fraction of squared singular values kept (per mode); 0: unset
    bool vbmf = false;                ///< EVBMF ranks
    double param_reduction = 0;       ///< targets' parameters / N in total; 0: unset
    double mac_reduction = 0;         ///< targets' MACs / N; 0: unset
    std::string init = "decompose";   ///< decompose | random
    int64_t cp_iterations = 100;      ///< cp: ALS sweeps
    int64_t tucker_iterations = 0;    ///< tucker2: HOOI sweeps after the HOSVD
  };
  static OptionSchema<Options> schema();
  /// Checks the rank rule and the schedule (errors at the recipe key).
  LowRankFactorization(MethodSpec spec, Options options);

  /// Selects the targeted layers of the scheme's kind (Linear for svd, Conv2d with groups 1
  /// otherwise); none is an error at `targets`.
  void bind(const ModelPtr& model) override;
  /// Fresh run: chooses the ranks and factorizes. Restored run (load_state before): rebuilds
  /// the saved forms (fresh init; the checkpoint's weights load next). Idempotent.
  void prepare_model(TrainContext& ctx) override;
  /// Writes the per-layer lines to the run's log (prepare_model runs before the log exists).
  void on_train_begin(TrainContext& ctx) override;
  /// metrics: factorized_params, and factorized_macs once a forward has run.
  void on_epoch_end(TrainContext& ctx) override;
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  /// Input shape of one sample ([C, H, W]). When set, prepare_model runs one forward of zeros
  /// (each targeted conv briefly in the cp(1) form, whose factors run at the input, mixed and
  /// output resolutions; weights and the global generator are restored) and counts MACs
  /// exactly, so mac_reduction is one global target. Experiments set it from the data
  /// (SampleShapeConsumer). Otherwise (C++ use without it) MACs are estimated per output
  /// position, a 1x1 factor before the stride counting s_h * s_w times (exact for 'same' padding
  /// on inputs the stride divides), and every layer must meet mac_reduction on its own.
  void set_sample_shape(std::vector<int64_t> shape) override { sample_shape_ = std::move(shape); }

  /// The layers factorized (or rebuilt from a checkpoint), in model order.
  const std::vector<LayerFactorization>& layers() const { return done_; }
  /// param_reduction / mac_reduction: the shared level the search chose (energy, or cp's
  /// fraction of its maximal rank); -1 for the other rules.
  double search_level() const { return level_; }
  /// Lines the method logs (per layer, then totals).
  const std::vector<std::string>& report() const { return report_; }

 private:
  void factorize(TrainContext& ctx);
  void rebuild(TrainContext& ctx);

  Options options_;
  std::vector<std::string> paths_;        ///< bound layers, model order
  std::vector<LayerFactorization> done_;  ///< chosen or restored forms
  std::vector<int64_t> sample_shape_;
  double level_ = -1;
  bool restored_ = false;                 ///< forms came from a checkpoint
  bool applied_ = false;                  ///< the forms are in the model
  std::vector<std::string> report_;
  bool logged_ = false;
};

}  // namespace shrink::lowrank
