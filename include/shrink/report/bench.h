#pragma once
// `shrink bench`: training-step time with the recipe's compression active, and inference
// latency at batch 1 and at the recipe's batch size; median and spread over repeats.
#include <string>
#include <vector>

#include "shrink/train/experiment.h"

namespace shrink {

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0, p25_ms = 0, p75_ms = 0;
  int64_t repeats = 0;
  static Timing from(std::vector<double> samples_ms);
};

struct BenchResult {
  int64_t batch_size = 0;
  int threads = 0;
  std::string device;
  Timing train_step;       ///< one optimizer step, every callback hook included
  Timing infer_batch1;     ///< eval-mode forward of one sample
  Timing infer_batch;      ///< eval-mode forward of batch_size samples
  /// Parts of the step its methods time apart (HasBenchParts, e.g. "teacher forward"), on
  /// training batches.
  std::vector<std::pair<std::string, Timing>> parts;
  /// With a dense comparison: the same recipe without its compression entries, timed in the
  /// same run, alternating step by step with the compressed model (so load drifts hit both).
  bool has_dense = false;
  Timing dense_train_step, dense_infer_batch1, dense_infer_batch;
  double train_step_ratio() const { return has_dense && dense_train_step.median_ms > 0 ? train_step.median_ms / dense_train_step.median_ms : 0; }
  double train_images_per_sec() const { return train_step.median_ms > 0 ? batch_size * 1000.0 / train_step.median_ms : 0; }
};

/// Runs prepare_experiment, builds the optimizer, then times `steps` training steps (after 3
/// warm-up steps) and `repeats` forwards at each inference batch size.
/// With `dense` (an experiment of the same recipe without compression), times both, alternating.
/// With `checkpoint`, the experiment's model weights come from it after prepare_experiment (call
/// load_checkpoint_methods first): the trained model is timed, e.g. gates that learned to skip.
BenchResult run_bench(Experiment& experiment, int64_t steps, int64_t repeats, Experiment* dense = nullptr,
                      const std::string& checkpoint = "");

/// Data loading alone: images/s of the training split's loader (shuffle, transforms,
/// normalization, stacking) with each worker count, over `batches` batches.
struct LoaderBenchResult {
  int64_t workers = 0, batch_size = 0, batches = 0;
  double seconds = 0, images_per_sec = 0;
};
std::vector<LoaderBenchResult> run_loader_bench(const Experiment& experiment, int64_t batches,
                                                const std::vector<int64_t>& worker_counts);
std::string loader_bench_text(const std::vector<LoaderBenchResult>& results, const std::string& transforms);
std::string loader_bench_json(const std::vector<LoaderBenchResult>& results);

std::string bench_text(const BenchResult& result);
std::string bench_json(const BenchResult& result);

}  // namespace shrink
