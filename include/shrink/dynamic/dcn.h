#pragma once
// Dynamic Capacity Networks (Almahairi et al. 2016): model "dcn" and method "dcn_hint".
//
// The image is cut into a grid of P x P patches (option `patch`; the input's height and width
// must be multiples of P). Every network below computes one D-vector (`features`) per patch,
// from that patch alone: its convolutions have kernel == stride and tile the patch exactly, so
// position (i, j) of a feature map is patch rows [i P, (i + 1) P), columns [j P, (j + 1) P).
//   coarse f_c  conv 4x4/4 (C -> coarse_width) ReLU, conv (P/4)x(P/4)/(P/4) (-> D) ReLU
//   fine f_f    conv 2x2/2 (C -> w/2) ReLU, 1x1 (-> w) ReLU, conv 2x2/2 (-> w) ReLU,
//               1x1 (-> 2w) ReLU, conv (P/4)x(P/4)/(P/4) (-> D) ReLU        (w = fine_width)
//   top g       conv 3x3 pad 1 (D -> D) ReLU, global max pool over positions (option `pool`: max
//               or avg), Linear (D -> classes)
// Convs start from He initialization (kaiming normal, fan in), biases 0.
// Modes (option `mode`):
//   dcn              f_c over the whole image; saliency(i, j) = || dH / d f_c(x)[:, :, i, j] ||_2
//                    with H the entropy of softmax(g(f_c(x))); the k most salient patches go
//                    through f_f; logits = g(f_c(x) with those k positions replaced by f_f).
//   fine_everywhere  logits = g(f_f(x)): the fine network on every patch (the paper's baseline).
//   coarse_only      logits = g(f_c(x)).
// The saliency is a gradient of the coarse prediction only: the training loss never flows
// through it (nor through the discrete top-k choice). It is computed with autograd enabled
// locally, so it also works under NoGradGuard (evaluation).
//
// Hint term (the paper's Eq. 4): mean over the selected patches of || f_c(patch) - f_f(patch) ||^2
// (squared L2 over the D channels), the fine features detached as fixed targets, so it trains
// only f_c: it keeps the coarse features close to the fine ones that g also reads. The model
// keeps the value of its last forward (`last_hint()`); the method `dcn_hint` adds
// weight * hint to the training loss:
//
//   model: {name: dcn, mode: dcn, k: 4, patch: 12}
//   compression:
//     - {method: dcn_hint, weight: 1}
//
// MACs per input: `shrink summary` runs one forward, so its total counts f_c, f_f on the k
// selected patches (the fine layers run on a 1 x k strip of patches and report k patches'
// MACs) and g once; it does not count the saliency pass. `DcnImpl::measure_macs` also counts
// the saliency pass as 2x the MACs of g (g's forward on the coarse features, then its backward
// to them: each conv and linear layer's input gradient costs what its forward costs).
// `dcn_hint` logs that breakdown and writes its total as the metric "avg_macs" (the count is
// the same for every input: k is fixed).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/config/node.h"
#include "shrink/config/options.h"
#include "shrink/models/model.h"
#include "shrink/nn/linear.h"

namespace shrink::dynamic {

enum class DcnMode { dcn, fine_everywhere, coarse_only };
const char* dcn_mode_name(DcnMode mode);
/// "dcn" | "fine_everywhere" | "coarse_only"; TORCH_CHECKs anything else.
DcnMode parse_dcn_mode(const std::string& name);

/// Multiply-accumulates per input of one forward, by part.
struct DcnMacs {
  int64_t coarse = 0;          ///< f_c over the whole input (0 in fine_everywhere)
  int64_t saliency = 0;        ///< 2x `top` in dcn mode (g forward + backward to the features), else 0
  int64_t fine = 0;            ///< f_f on the patches it ran on: k (dcn), all (fine_everywhere), 0 (coarse_only)
  int64_t top = 0;             ///< g on the final feature map
  int64_t fine_per_patch = 0;  ///< f_f on one patch
  int64_t positions = 0;       ///< patches of the input (h * w)
  int64_t patches = 0;         ///< patches f_f ran on
  int64_t total() const { return coarse + saliency + fine + top; }
  /// "coarse 172,800 + saliency ... = total ..." for logs.
  std::string str() const;
};

class DcnImpl : public ModelImpl {
 public:
  struct Options {
    int64_t num_classes = 0;      ///< 0: take it from the data
    std::string mode = "dcn";     ///< dcn | fine_everywhere | coarse_only
    int64_t k = 4;                ///< patches the fine network re-processes (dcn mode)
    int64_t patch = 12;           ///< P, side of a patch; a multiple of 4 dividing the input size
    int64_t features = 32;        ///< D, feature vector per patch
    int64_t coarse_width = 16;    ///< channels of f_c's first conv
    int64_t fine_width = 64;      ///< w of f_f
    std::string pool = "max";     ///< g's global pool over positions: max | avg
  };
  static OptionSchema<Options> schema();
  /// The registry's factory: parses `model` and places errors that involve the data shape at
  /// the recipe key (file:line).
  static ModelPtr from_config(const ConfigNode& model, const DataInfo& data);
  /// Checks the options against the data (UserError from C++, at the key of `where` when valid).
  static void validate(const Options& options, const DataInfo& data, const ConfigNode& where = {});

  DcnImpl(Options options, const DataInfo& data);

  /// Input [N, C, H, W] with H and W multiples of `patch` -> logits [N, classes].
  /// Taps: "coarse" (f_c(x), not in fine_everywhere), "merged" (the map g reads), "logits".
  torch::Tensor forward(const torch::Tensor& input) override;

  DcnMode mode() const { return mode_; }
  void set_mode(DcnMode mode);
  int64_t k() const { return options.k; }
  /// TORCH_CHECKs k >= 1 (an input with fewer positions fails in forward).
  void set_k(int64_t k);

  /// f_c: [N, C, H, W] -> [N, D, H/P, W/P].
  torch::Tensor coarse_features(const torch::Tensor& input);
  /// f_f: [N, C, H, W] -> [N, D, H/P, W/P] (each position from its own patch).
  torch::Tensor fine_features(const torch::Tensor& input);
  /// g: feature map [N, D, h, w] -> logits [N, classes].
  torch::Tensor top(const torch::Tensor& features);
  /// saliency [N, h, w] of coarse features [N, D, h, w]: L2 norm over channels of the gradient of
  /// sum_n H_n (H_n the entropy of softmax(g(features))_n) with respect to the features.
  /// Detached; works with or without grad mode.
  torch::Tensor saliency(const torch::Tensor& coarse);
  /// The input's patches at flat positions `positions` [N, k] (row-major over the grid), as a
  /// strip [N, C, P, k P]: patch j of row n at columns [j P, (j + 1) P).
  torch::Tensor patch_strip(const torch::Tensor& input, const torch::Tensor& positions) const;

  /// The hint term of the last forward (a scalar with a graph to f_c in training); 0 in the
  /// other modes and before any forward.
  const torch::Tensor& last_hint() const { return last_hint_; }
  /// Flat positions [N, k] the last dcn-mode forward selected, by decreasing saliency.
  const torch::Tensor& last_selected() const { return last_selected_; }
  /// Saliency map [N, h, w] of the last dcn-mode forward.
  const torch::Tensor& last_saliency() const { return last_saliency_; }

  /// MACs per input in the current mode at input `sample_shape` (C, H, W): runs f_f on one
  /// zero patch and the model on a zero input (eval mode, no grad, modes restored); replaces
  /// the last_* values.
  DcnMacs measure_macs(const std::vector<int64_t>& sample_shape);

  Options options;
  /// f_c, f_f and g's conv part (ModuleLists of Shrink convs and ReLUs), and g's Linear.
  torch::nn::ModuleList coarse{nullptr}, fine{nullptr}, top_layers{nullptr};
  nn::Linear classifier{nullptr};

 private:
  DcnMode mode_ = DcnMode::dcn;
  torch::Tensor last_hint_, last_selected_, last_saliency_;
};

/// The `dcn_hint` method: loss += weight * the dcn model's hint term of the step's forward, while
/// its schedule is active (in dcn mode; the other modes have no hint). Logs the model's MACs per
/// input before the first step, and writes the per-epoch metrics "dcn_hint" (mean hint over the
/// epoch's steps; after a resume, over the steps since) and "avg_macs" (DcnMacs::total()).
class DcnHint : public CompressionMethod {
 public:
  struct Options {
    double weight = 1.0;  ///< >= 0
  };
  static OptionSchema<Options> schema();
  DcnHint(MethodSpec spec, Options options);

  /// The model must be a dcn (error at `method`).
  void bind(const ModelPtr& model) override;
  void on_train_begin(TrainContext& ctx) override;
  void on_epoch_begin(TrainContext& ctx) override;
  /// Before the first step's forward: measures and logs the MACs per input at the batch's shape.
  void on_step_begin(TrainContext& ctx) override;
  torch::Tensor on_loss(TrainContext& ctx, torch::Tensor loss) override;
  void on_epoch_end(TrainContext& ctx) override;

  const Options& options() const { return options_; }
  /// MACs measured before the first step (zeros before).
  const DcnMacs& macs() const { return macs_; }

 private:
  Options options_;
  DcnImpl* model_ = nullptr;
  DcnMacs macs_;
  bool measured_ = false;
  double hint_sum_ = 0;
  int64_t hint_steps_ = 0;
};

}  // namespace shrink::dynamic
