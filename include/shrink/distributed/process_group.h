#pragma once
// Data-parallel training on c10d: a small wrapper around ProcessGroupGloo (CPU) that the trainer
// uses when more than one process trains. A process joins a job from torchrun's variables (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) through a TCP store, or through a file store
// when SHRINK_DIST_FILE_STORE names a file every rank can reach.
//
// The c10d headers are not included here, so this header compiles without libgloo-dev; a build
// without the Gloo headers reports that when a group is created.
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shrink::distributed {

/// Where and how this process joins a job.
struct DistOptions {
  int64_t rank = 0;        ///< RANK
  int64_t world_size = 1;  ///< WORLD_SIZE
  int64_t local_rank = 0;  ///< LOCAL_RANK (informational on CPU)
  std::string master_addr = "127.0.0.1";  ///< MASTER_ADDR: rank 0 serves the TCP store there
  int64_t master_port = 29500;            ///< MASTER_PORT
  std::string file_store;                 ///< SHRINK_DIST_FILE_STORE: rendezvous through this file instead
  double timeout_seconds = 300;           ///< rendezvous and every collective; a dead or hung rank fails here
  int64_t bucket_bytes = 25 << 20;        ///< gradients are all-reduced in flattened buckets of this size
};

/// True when Shrink was built with the Gloo headers (libgloo-dev).
bool gloo_available();

/// The options from the environment; nullopt when WORLD_SIZE is unset. A malformed or
/// inconsistent variable is a UserError naming it. `timeout_seconds` is the default timeout.
std::optional<DistOptions> options_from_env(double timeout_seconds = 300);

/// What one step's gradient average agreed on across ranks.
struct StepReduction {
  double loss = 0;            ///< mean loss over the global batch (sum of local mean * count / total)
  int64_t examples = 0;       ///< examples in the global batch
  bool stop = false;          ///< some rank was asked to stop (SIGINT/SIGTERM): every rank stops here
  double allreduce_seconds = 0;  ///< time spent in this step's all-reduce
};

/// One rank of a job. Every call is a collective: all ranks call it in the same order.
class ProcessGroup {
 public:
  /// Joins the job (blocks until every rank arrived or the timeout passed: a UserError).
  explicit ProcessGroup(const DistOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const { return options_.rank; }
  int64_t world_size() const { return options_.world_size; }
  const DistOptions& options() const { return options_; }

  /// Overwrites `tensors` (in place) with rank `root`'s values.
  void broadcast(const std::vector<torch::Tensor>& tensors, int64_t root = 0);
  /// Broadcasts every parameter and buffer of `module` (and `extra` tensors) from rank 0.
  void broadcast_module(torch::nn::Module& module, const std::vector<torch::Tensor>& extra = {});
  /// Sums `tensor` over ranks in place.
  void all_reduce_sum(torch::Tensor& tensor);
  /// Element-wise sums of `values` over ranks.
  std::vector<double> all_reduce_sum(const std::vector<double>& values);
  /// The largest `value` over ranks.
  double all_reduce_max(double value);
  /// Replaces every floating-point buffer of `module` (BatchNorm statistics, quantizer ranges)
  /// by its mean over ranks; buffers that already agree (masks) keep their values.
  void average_buffers(torch::nn::Module& module);

  /// Makes the gradients of `params` those of the global batch: each rank's gradient of its
  /// local mean loss is weighted by its share of the examples (local_count / global count), in
  /// flattened buckets of options().bucket_bytes. The step's loss, example count and stop
  /// request travel in the same all-reduce. A gradient some rank did not produce counts as zero
  /// there; one no rank produced stays undefined.
  StepReduction average_gradients(const std::vector<torch::Tensor>& params, double local_loss, int64_t local_count,
                                  bool local_stop);

  /// Largest |x - x_rank0| over every parameter and buffer of `module`: 0 when the ranks agree.
  double max_difference_from_rank0(torch::nn::Module& module);

  /// Accumulated all-reduce time and count of average_gradients since construction.
  double allreduce_seconds() const { return allreduce_seconds_; }
  int64_t allreduce_steps() const { return allreduce_steps_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DistOptions options_;
  double allreduce_seconds_ = 0;
  int64_t allreduce_steps_ = 0;
};

/// The process-wide group the trainer uses; null when one process trains.
ProcessGroup* default_group();
/// Sets (or with nullptr clears) the process-wide group.
void set_default_group(std::shared_ptr<ProcessGroup> group);
/// The default group when more than one process trains, else nullptr.
inline ProcessGroup* active_group() {
  auto* g = default_group();
  return g && g->world_size() > 1 ? g : nullptr;
}
/// Joins the job described by the environment (options_from_env) and makes it the default
/// group; returns nullptr (and sets nothing) when WORLD_SIZE is unset or 1.
ProcessGroup* init_from_env(double timeout_seconds = 300);

/// This process's rank (0 without a group).
inline int64_t rank() {
  auto* g = default_group();
  return g ? g->rank() : 0;
}

}  // namespace shrink::distributed
