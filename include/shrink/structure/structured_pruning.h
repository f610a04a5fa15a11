#pragma once
// Structured pruning methods:
//   filter_pruning  removes whole channels (filters) of channel groups, once, at the schedule's
//                   start: L1 norm of the filters (Li et al. 2017) or |gamma| of the BatchNorm
//                   scales (network slimming, Liu et al. 2017), per group or with one global
//                   ranking; then thins the model (physically smaller layers) or masks the
//                   channels (same function, same shapes).
//   group_lasso     the structured sparsity regularizer of SSL (Wen et al. 2016): strength *
//                   sum_g ||w_g||_2 over the filters (dim 0) or input channels (dim 1) of the
//                   targeted conv/linear weights, applied as its subgradient.
//
// Network slimming = the built-in l1_regularization on the BatchNorm scales while training,
// then filter_pruning with criterion bn_scale (the glob '*bn*.weight' misses the BatchNorms of
// ResNet projections, named downsample.1):
//   compression:
//     - {method: l1_regularization, targets: ['*bn*.weight', '*downsample.1.weight'], strength: 1.0e-4}
//     - {method: filter_pruning, criterion: bn_scale, scope: global, ratio: 0.4, start_epoch: 30}
// Li et al.'s L1 filter pruning of a CIFAR ResNet (shortcut A: block-internal groups only):
//     - {method: filter_pruning, criterion: l1, ratio: 0.5, groups: ['layer*'], start_epoch: 0}
//
// A thinned model's structure is saved in checkpoints (per group: the kept channel indices)
// and re-applied in prepare_model, before the weights load, so eval, summary and resume
// rebuild it.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/structure/channel_groups.h"
#include "shrink/structure/thinning.h"

namespace shrink::structure {

/// Importance of each channel of `group` (higher = more important), normalized so that groups
/// compare in a global ranking:
///   "l1"        sum over the producers of |filter|_1, divided by the weights per channel
///               (the mean |w| of the channel's filters)
///   "bn_scale"  mean over the group's BatchNorms of |gamma|
/// UserError for bn_scale on a group without a BatchNorm with a scale.
torch::Tensor channel_scores(const ChannelGroup& group, const std::string& criterion);

/// Channels to keep in each group (sorted indices). Per group: removes round(ratio * C) of the
/// lowest scores; global: removes round(ratio * total) lowest scores across all groups. Never
/// leaves a group with fewer than `min_channels` (nor removes from a group already there).
/// Ties are broken by position (lower index removed first).
std::vector<std::vector<int64_t>> select_channels(const std::vector<torch::Tensor>& scores, double ratio, bool global,
                                                  int64_t min_channels);

/// Multiply-accumulates per sample of the model's Shrink layers in their last forward.
int64_t model_macs(torch::nn::Module& model);

class FilterPruning : public CompressionMethod {
 public:
  struct Options {
    std::string criterion = "l1";     ///< l1 | bn_scale
    double ratio = 0.5;               ///< fraction of channels removed (per group, or of all with global)
    std::string scope = "group";      ///< group | global
    std::vector<std::string> groups;  ///< globs over group names; empty: every internal group
    int64_t min_channels = 1;         ///< no group is thinned below this
    bool thin = true;                 ///< remove the channels (true) or mask them (false)
  };
  static OptionSchema<Options> schema();
  FilterPruning(MethodSpec spec, Options options);

  /// Also resolves `groups` against the model's channel groups (errors at the recipe key).
  void bind(const ModelPtr& model) override;
  /// Re-applies a loaded structure (thinning or masks) before the weights load.
  void prepare_model(TrainContext& ctx) override;
  void on_train_begin(TrainContext& ctx) override;
  void on_step_begin(TrainContext& ctx) override;
  void on_before_optimizer_step(TrainContext& ctx) override;
  void on_after_optimizer_step(TrainContext& ctx) override;
  void on_epoch_end(TrainContext& ctx) override;
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  /// The groups `options.groups` selects in `model`, in model order.
  std::vector<ChannelGroup> selected_groups(torch::nn::Module& model) const;
  /// Prunes now (once): scores, selection, then thinning or masking. Forgets the optimizer
  /// state of resized parameters when ctx.optimizer is set; logs through ctx.log.
  void prune(TrainContext& ctx);

  bool pruned() const { return pruned_; }
  bool thinned() const { return thinned_; }
  /// Per pruned group: its name, its channels before pruning and the kept channel indices.
  struct Kept {
    std::string group;
    int64_t channels = 0;
    std::vector<int64_t> keep;
  };
  const std::vector<Kept>& kept() const { return kept_; }
  /// Channels removed over all groups.
  int64_t channels_removed() const;

 private:
  void apply_kept(torch::nn::Module& model);

  Options options_;
  std::vector<Kept> kept_;
  bool pruned_ = false;
  bool thinned_ = true;       ///< how the pruning was done (saved: a resumed run keeps it)
  bool applied_ = false;      ///< the kept structure is in the model
  std::vector<ZeroedRows> zeroed_;  ///< masked mode: biases and BN rows kept at zero
};

/// w_g / ||w_g||_2 for each group of `weight` (filters: slices along dim 0; channels: along
/// dim 1), 0 where ||w_g|| = 0: the subgradient of sum_g ||w_g||_2.
torch::Tensor group_lasso_gradient(const torch::Tensor& weight, bool filters);
/// sum_g ||w_g||_2.
double group_norm_sum(const torch::Tensor& weight, bool filters);

class GroupLasso : public CompressionMethod {
 public:
  struct Options {
    double strength = 1e-4;          ///< coefficient of sum_g ||w_g||_2
    std::string groups = "filters";  ///< filters (output channels) | channels (input channels)
  };
  static OptionSchema<Options> schema();
  GroupLasso(MethodSpec spec, Options options);

  /// Targeted parameters with at least 2 dimensions (conv and linear weights).
  void bind(const ModelPtr& model) override;
  void on_before_optimizer_step(TrainContext& ctx) override;
  /// metrics["group_norm_sum"]: sum_g ||w_g||_2 over the targets.
  void on_epoch_end(TrainContext& ctx) override;

  const std::vector<std::pair<std::string, torch::Tensor>>& weights() const { return weights_; }

 private:
  Options options_;
  std::vector<std::pair<std::string, torch::Tensor>> weights_;
};

}  // namespace shrink::structure
