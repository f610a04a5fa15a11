#pragma once
// Turns a dataset split into batches: shuffling per epoch, per-example transforms, the
// dataset's normalization, worker threads that prepare batches ahead, and sharding by rank.
//
// Determinism: the epoch order comes from (seed, epoch) and example k of the epoch order is
// transformed with Rng::for_item(seed, epoch, k). The batches are therefore identical for any
// number of workers, and a rank sees exactly its slice of what one process would see.
#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "shrink/data/dataset.h"
#include "shrink/data/transforms.h"

namespace shrink {

/// A split with its transforms: what a loader reads.
class DataSource {
 public:
  DataSource(DatasetPtr dataset, TransformPipeline transforms);

  const DatasetPtr& dataset() const { return dataset_; }
  const TransformPipeline& transforms() const { return transforms_; }
  int64_t size() const { return dataset_->size(); }
  /// The shape of a loaded example (after the transforms; for datasets whose image sizes vary,
  /// found by loading example 0) and the class count: what the model is built for.
  DataInfo info() const;

  /// Loads the examples at `indices`, example i transformed with Rng::for_item(seed, epoch,
  /// first_position + i), stacked and normalized.
  Batch load(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch, int64_t first_position) const;

 private:
  DatasetPtr dataset_;
  TransformPipeline transforms_;
  std::optional<Normalization> normalization_;
};
using DataSourcePtr = std::shared_ptr<const DataSource>;

struct LoaderOptions {
  int64_t batch_size = 64;  ///< global batch (split across ranks)
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int64_t workers = 0;   ///< threads preparing batches (0: in the caller's thread)
  int64_t prefetch = 2;  ///< batches each worker prepares ahead
  int64_t rank = 0, world_size = 1;
};

/// Order of the examples in `epoch`: a Fisher-Yates shuffle from a generator seeded by
/// (seed, epoch), so a resumed run sees the same batches without saving the order.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

class DataLoader {
 public:
  DataLoader(DataSourcePtr source, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// Global batches per epoch (the same on every rank).
  int64_t batches_per_epoch() const;
  const LoaderOptions& options() const { return options_; }
  const DataSource& source() const { return *source_; }

  /// Starts `epoch` at global batch `first_batch` (a resumed run skips the batches it saw).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  /// This rank's part of the next global batch; nullopt after the epoch's last batch.
  std::optional<Batch> next();

 private:
  struct Slot {
    int64_t batch = -1;
    std::optional<Batch> value;
    std::exception_ptr error;
  };
  struct Worker {
    std::thread thread;
    std::deque<Slot> ready;
  };
  Batch load_batch(int64_t b) const;
  void stop_workers();
  void worker_loop(int64_t w);

  DataSourcePtr source_;
  LoaderOptions options_;
  int64_t epoch_ = 0, next_batch_ = 0, end_batch_ = 0, first_batch_ = 0;
  std::vector<int64_t> order_;

  std::vector<Worker> workers_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace shrink
