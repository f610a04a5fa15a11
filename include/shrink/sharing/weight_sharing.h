#pragma once
// k-means weight sharing with centroid fine-tuning (Deep Compression, Han et al. 2016, sec. 3).
//
// Each targeted Shrink layer (nn::Conv2d, nn::Linear) has its nonzero weights clustered by 1-d
// k-means into 2^bits centroids (its codebook); every weight then takes the value of its centroid.
// Pruned weights (zero when clustering, or 0 in the layer's `weight_mask`) are not clustered
// and stay exactly zero. Fine-tuning then trains the centroids, not the weights: the gradient
// of a centroid is the sum of the gradients of its weights (dL/dc_k = sum_{w in cluster k} dL/dw),
// applied by plain SGD with the run's current learning rate, and the weights are rewritten
// from the centroids after every optimizer step. The optimizer's own update of those weights
// (momentum, weight decay) is therefore overwritten; assignments never change.
//
// Recipe entry:
//   compression:
//     - method: weight_sharing
//       targets: ["conv*.weight"]
//       bits: 8              # 2^bits centroids per layer (1..8)
//       init: linear         # linear | density | random
//     - method: weight_sharing
//       targets: ["fc*.weight"]
//       bits: 5
//       start_epoch: 10      # cluster here (after pruning and retraining), then fine-tune
//
// Schedule: the layers are clustered once, at the schedule's first step (at train begin when
// it starts at 0). Centroids are fine-tuned while the schedule is active; after its end they
// are frozen but the weights still take only centroid values.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "shrink/compression/method.h"

namespace shrink::sharing {

/// How k-means centroids start (Han et al. 2016, sec. 3.2).
enum class CentroidInit {
  Linear,   ///< evenly spaced between the smallest and largest weight (the paper's best)
  Density,  ///< quantiles (k + 0.5) / K of the weights' distribution
  Random,   ///< K weights picked at random with torch's default (run-seeded) generator
};

/// "linear", "density", "random" -> CentroidInit; UserError otherwise.
CentroidInit parse_centroid_init(const std::string& name);

/// The k initial centroids (ascending, float64) of the 1-d `values` (k >= 1, values non-empty).
torch::Tensor init_centroids(const torch::Tensor& values, int64_t k, CentroidInit init);

/// Result of a 1-d k-means.
struct KMeansResult {
  torch::Tensor centroids;    ///< [k] float64, ascending; an empty cluster keeps its last value
  torch::Tensor assignments;  ///< [n] int64: index of the nearest centroid (ties to the lower one)
  int64_t iterations = 0;     ///< Lloyd updates run
  bool converged = false;     ///< assignments stopped changing within max_iterations
};

/// Lloyd's algorithm on 1-d `values` from `centroids` (ascending): assign each value to its
/// nearest centroid, move each centroid to the mean of its values, until the assignments stop
/// changing or after `max_iterations` updates (0: just assign to the initial centroids).
/// Computed in float64; nearest centroids are found by binary search over the midpoints.
KMeansResult kmeans_1d(const torch::Tensor& values, const torch::Tensor& centroids, int64_t max_iterations);

/// One shared layer: its codebook and the index of every weight into it.
struct SharedLayer {
  std::string name;           ///< parameter name, e.g. "fc1.weight"
  torch::Tensor weight;       ///< the layer's weight parameter
  torch::Tensor mask;         ///< the layer's weight_mask (undefined when the layer has none)
  torch::Tensor centroids;    ///< [2^bits] float32 codebook (weight's dtype and device)
  torch::Tensor assignments;  ///< uint8, weight's shape: centroid index (0 where pruned)
  torch::Tensor kept;         ///< bool, weight's shape: false where pruned (not clustered)
  torch::Tensor counts;       ///< [2^bits] int64: weights per centroid
  int64_t kmeans_iterations = 0;  ///< Lloyd updates run when clustered (0 when restored)
  bool kmeans_converged = false;   ///< k-means stopped because the assignments were stable
  /// int32 flat index into [centroids; 0]: the centroid, or 2^bits where pruned (runtime only).
  torch::Tensor index;
};

class WeightSharing : public CompressionMethod {
 public:
  struct Options {
    int64_t bits = 5;             ///< 2^bits centroids per layer, 1..8
    std::string init = "linear";  ///< linear | density | random
    int64_t iterations = 100;     ///< most Lloyd updates per layer
    double lr_scale = 1.0;        ///< centroid learning rate = lr_scale * the run's current lr
    std::string gradient = "sum"; ///< sum (Han et al.) | mean: centroid gradient over its weights
  };
  static OptionSchema<Options> schema();

  WeightSharing(MethodSpec spec, Options options);
  const Options& options() const { return options_; }

  /// Resolves the targeted Conv2d/Linear layers (an error when there is none).
  void bind(const ModelPtr& model) override;
  void on_train_begin(TrainContext& ctx) override;
  void on_step_begin(TrainContext& ctx) override;
  void on_after_optimizer_step(TrainContext& ctx) override;
  void on_epoch_end(TrainContext& ctx) override;
  /// Codebooks, assignments (uint8) and kept masks of every layer, once clustered.
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  /// Clusters every targeted layer of `model` now and writes the centroid values into the
  /// weights (what training does at the schedule's start).
  void cluster(torch::nn::Module& model);
  bool clustered() const { return clustered_; }
  /// One fine-tuning step from the weights' current gradients: c_k -= lr * sum of grads of
  /// cluster k (or their mean), then the weights are rewritten from the centroids.
  void fine_tune_step(double lr);
  /// weight = centroids[assignment] (0 where pruned or masked), for every layer.
  void write_weights();
  /// Distinct nonzero values of each layer's weight, in layer order.
  std::vector<int64_t> distinct_values() const;

  const std::vector<SharedLayer>& layers() const { return layers_; }
  /// Module paths of the targeted layers, in model order (after bind).
  const std::vector<std::string>& layer_paths() const { return layer_paths_; }

 private:
  /// Points layers_ (restored by load_state) at `model`'s weights; checks the shapes.
  void attach(torch::nn::Module& model);

  Options options_;
  CentroidInit init_;
  std::vector<std::string> layer_paths_;
  std::vector<SharedLayer> layers_;
  bool clustered_ = false;
  bool attached_ = false;
};

}  // namespace shrink::sharing
