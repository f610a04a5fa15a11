#include "shrink/data/loader.h"

#include <fmt/format.h>

#include <random>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace shrink {

DataSource::DataSource(DatasetPtr dataset, TransformPipeline transforms)
    : dataset_(std::move(dataset)), transforms_(std::move(transforms)) {
  TORCH_CHECK(dataset_, "DataSource: null dataset");
  normalization_ = dataset_->normalization();
}

DataInfo DataSource::info() const {
  DataInfo info;
  info.num_classes = dataset_->num_classes();
  auto shape = transforms_.output_shape(dataset_->sample_shape());
  if (shape.empty() && dataset_->size() > 0) {
    auto batch = load({0}, 0, 0, 0);
    auto sizes = batch.inputs.sizes();
    shape.assign(sizes.begin() + 1, sizes.end());
  }
  info.sample_shape = shape;
  return info;
}

Batch DataSource::load(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch,
                       int64_t first_position) const {
  Batch batch;
  if (transforms_.empty()) {
    batch = dataset_->get_batch(indices);
  } else {
    std::vector<torch::Tensor> images;
    images.reserve(indices.size());
    batch.targets = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
    auto* labels = batch.targets.data_ptr<int64_t>();
    for (size_t i = 0; i < indices.size(); ++i) {
      auto example = dataset_->get(indices[i]);
      Rng rng = Rng::for_item(seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(first_position + i));
      auto image = transforms_.apply(std::move(example.image), rng);
      if (i > 0 && image.sizes() != images.front().sizes())
        throw UserError(fmt::format(
            "transformed images differ in size ({} and {}); end data.transforms with a crop or resize to a fixed size",
            fmt::join(images.front().sizes(), "x"), fmt::join(image.sizes(), "x")));
      images.push_back(std::move(image));
      labels[i] = example.label;
    }
    batch.inputs = torch::stack(images);
  }
  if (normalization_) normalization_->apply_(batch.inputs);
  return batch;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 gen(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(gen() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

DataLoader::DataLoader(DataSourcePtr source, LoaderOptions options)
    : source_(std::move(source)), options_(options) {
  TORCH_CHECK(source_, "DataLoader: null source");
  TORCH_CHECK(options_.batch_size > 0, "DataLoader: batch_size must be positive");
  TORCH_CHECK(options_.world_size >= 1 && options_.rank >= 0 && options_.rank < options_.world_size,
              "DataLoader: rank ", options_.rank, " outside world size ", options_.world_size);
  TORCH_CHECK(options_.workers >= 0 && options_.prefetch >= 1, "DataLoader: bad workers/prefetch");
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::batches_per_epoch() const {
  const int64_t n = source_->size(), bs = options_.batch_size;
  return options_.drop_last ? n / bs : (n + bs - 1) / bs;
}

Batch DataLoader::load_batch(int64_t b) const {
  const int64_t n = static_cast<int64_t>(order_.size()), bs = options_.batch_size;
  const int64_t start = b * bs, len = std::min(n, start + bs) - start;
  // This rank's contiguous slice of the global batch (sizes differ by at most one).
  const int64_t lo = start + len * options_.rank / options_.world_size;
  const int64_t hi = start + len * (options_.rank + 1) / options_.world_size;
  std::vector<int64_t> indices(order_.begin() + lo, order_.begin() + hi);
  return source_->load(indices, options_.seed, epoch_, lo);
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_)
    if (w.thread.joinable()) w.thread.join();
  workers_.clear();
  stopping_ = false;
}

void DataLoader::worker_loop(int64_t w) {
#ifdef _OPENMP
  // Batch assembly must not start an OpenMP team of its own beside the training thread's.
  omp_set_num_threads(1);
#endif
  const int64_t stride = static_cast<int64_t>(workers_.size());
  for (int64_t b = first_batch_ + w; b < end_batch_; b += stride) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || static_cast<int64_t>(workers_[w].ready.size()) < options_.prefetch; });
      if (stopping_) return;
    }
    Slot slot;
    slot.batch = b;
    try {
      slot.value = load_batch(b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      workers_[w].ready.push_back(std::move(slot));
    }
    cv_.notify_all();
    if (slot.error) return;
  }
}

void DataLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  stop_workers();
  epoch_ = epoch;
  const int64_t n = source_->size();
  if (options_.shuffle) {
    order_ = epoch_order(n, options_.seed, epoch);
  } else {
    order_.resize(n);
    for (int64_t i = 0; i < n; ++i) order_[i] = i;
  }
  end_batch_ = batches_per_epoch();
  first_batch_ = next_batch_ = std::min(std::max<int64_t>(first_batch, 0), end_batch_);
  const int64_t count = std::min(options_.workers, end_batch_ - first_batch_);
  workers_ = std::vector<Worker>(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (int64_t w = 0; w < count; ++w) workers_[w].thread = std::thread([this, w] { worker_loop(w); });
}

std::optional<Batch> DataLoader::next() {
  if (next_batch_ >= end_batch_) return std::nullopt;
  const int64_t b = next_batch_++;
  if (workers_.empty()) return load_batch(b);
  auto& worker = workers_[(b - first_batch_) % static_cast<int64_t>(workers_.size())];
  Slot slot;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !worker.ready.empty(); });
    slot = std::move(worker.ready.front());
    worker.ready.pop_front();
  }
  cv_.notify_all();
  if (slot.error) std::rethrow_exception(slot.error);
  TORCH_CHECK(slot.batch == b, "DataLoader: batch ", slot.batch, " arrived for ", b);
  return std::move(slot.value);
}

}  // namespace shrink
