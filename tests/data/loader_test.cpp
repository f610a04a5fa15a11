#include <gtest/gtest.h>

#include <atomic>

#include "shrink/core/error.h"
#include "shrink/data/loader.h"

namespace {

using shrink::Batch;
using shrink::DataLoader;
using shrink::DataSource;
using shrink::LoaderOptions;

/// Adds one random number per example: the batch then shows which generator each example got.
class AddUniform : public shrink::Transform {
 public:
  torch::Tensor apply(const torch::Tensor& image, shrink::Rng& rng) const override {
    return image + static_cast<float>(rng.uniform());
  }
  std::string describe() const override { return "add_uniform"; }
};

/// Fails on one index, to check that worker errors reach the caller.
class FailingDataset : public shrink::TensorDataset {
 public:
  FailingDataset(torch::Tensor images, torch::Tensor labels, int64_t bad)
      : TensorDataset(std::move(images), std::move(labels), 5), bad_(bad) {}
  shrink::Example get(int64_t index) const override {
    if (index == bad_) throw shrink::UserError("example " + std::to_string(index) + " is unreadable");
    return TensorDataset::get(index);
  }

 private:
  int64_t bad_;
};

std::shared_ptr<shrink::TensorDataset> make_dataset(int64_t n) {
  auto images = torch::randint(0, 256, {n, 3, 4, 4}, torch::TensorOptions().dtype(torch::kUInt8));
  auto labels = torch::arange(n, torch::kInt64).remainder(5);
  return std::make_shared<shrink::TensorDataset>(images, labels, 5);
}

std::shared_ptr<const DataSource> with_random_transform(shrink::DatasetPtr ds) {
  return std::make_shared<DataSource>(std::move(ds),
                                      shrink::TransformPipeline({std::make_shared<AddUniform>()}));
}

std::vector<Batch> epoch_batches(const std::shared_ptr<const DataSource>& source, LoaderOptions options,
                                 int64_t epoch, int64_t first = 0) {
  DataLoader loader(source, options);
  loader.start_epoch(epoch, first);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].inputs, b[i].inputs)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].targets, b[i].targets)) << "batch " << i;
  }
}

TEST(Loader, BatchesAreTheSameForAnyWorkerCount) {
  auto source = with_random_transform(make_dataset(103));
  LoaderOptions options;
  options.batch_size = 10;
  options.seed = 7;
  for (int64_t epoch : {0, 1}) {
    auto reference = epoch_batches(source, options, epoch);
    ASSERT_EQ(reference.size(), 11u);
    EXPECT_EQ(reference.back().targets.size(0), 3);
    for (int64_t workers : {1, 2, 3}) {
      for (int64_t prefetch : {1, 4}) {
        auto o = options;
        o.workers = workers;
        o.prefetch = prefetch;
        SCOPED_TRACE("workers " + std::to_string(workers) + " prefetch " + std::to_string(prefetch));
        expect_same(reference, epoch_batches(source, o, epoch));
      }
    }
  }
}

TEST(Loader, EpochsShuffleDifferentlyAndCoverEveryExample) {
  auto ds = make_dataset(50);
  auto source = std::make_shared<DataSource>(ds, shrink::TransformPipeline());
  LoaderOptions options;
  options.batch_size = 8;
  options.seed = 1;
  auto e0 = epoch_batches(source, options, 0), e1 = epoch_batches(source, options, 1);
  auto all0 = torch::cat({e0[0].inputs, e0[1].inputs}), all1 = torch::cat({e1[0].inputs, e1[1].inputs});
  EXPECT_FALSE(torch::equal(all0, all1));
  // Every example exactly once: the sum of all images is the dataset's sum.
  torch::Tensor sum = torch::zeros({3, 4, 4});
  for (auto& b : e0) sum += b.inputs.sum(0);
  EXPECT_TRUE(torch::allclose(sum, ds->images().to(torch::kFloat32).div(255).sum(0), 1e-4, 1e-4));
  // Without shuffling, the order is the file order.
  options.shuffle = false;
  auto seq = epoch_batches(source, options, 3);
  EXPECT_TRUE(torch::equal(seq[0].targets, torch::tensor({0, 1, 2, 3, 4, 0, 1, 2}, torch::kInt64)));
  // drop_last drops the short batch.
  options.drop_last = true;
  EXPECT_EQ(epoch_batches(source, options, 0).size(), 6u);
}

TEST(Loader, AugmentationDependsOnSeedAndPositionOnly) {
  auto ds = make_dataset(20);
  auto source = with_random_transform(ds);
  LoaderOptions options;
  options.batch_size = 20;
  options.shuffle = false;
  auto a = epoch_batches(source, options, 0), b = epoch_batches(source, options, 0);
  expect_same(a, b);
  auto next_epoch = epoch_batches(source, options, 1);
  EXPECT_FALSE(torch::equal(a[0].inputs, next_epoch[0].inputs));
  options.seed = 99;
  EXPECT_FALSE(torch::equal(a[0].inputs, epoch_batches(source, options, 0)[0].inputs));
  // Example k of the epoch got Rng::for_item(seed, epoch, k).
  auto rng = shrink::Rng::for_item(0, 0, 5);
  auto expected = ds->get(5).image + static_cast<float>(rng.uniform());
  EXPECT_TRUE(torch::allclose(a[0].inputs[5], expected));
}

TEST(Loader, ResumingMidEpochGivesTheRemainingBatches) {
  auto source = with_random_transform(make_dataset(64));
  LoaderOptions options;
  options.batch_size = 8;
  options.workers = 2;
  auto full = epoch_batches(source, options, 2);
  auto rest = epoch_batches(source, options, 2, 5);
  ASSERT_EQ(rest.size(), 3u);
  expect_same(std::vector<Batch>(full.begin() + 5, full.end()), rest);
}

TEST(Loader, RanksSplitEachGlobalBatch) {
  auto source = with_random_transform(make_dataset(45));
  LoaderOptions options;
  options.batch_size = 12;
  options.seed = 5;
  auto single = epoch_batches(source, options, 1);
  const int64_t world = 3;
  std::vector<std::vector<Batch>> per_rank;
  for (int64_t r = 0; r < world; ++r) {
    auto o = options;
    o.rank = r;
    o.world_size = world;
    o.workers = r % 2;
    per_rank.push_back(epoch_batches(source, o, 1));
    ASSERT_EQ(per_rank.back().size(), single.size());
  }
  for (size_t b = 0; b < single.size(); ++b) {
    std::vector<torch::Tensor> inputs, targets;
    for (auto& rank : per_rank) {
      inputs.push_back(rank[b].inputs);
      targets.push_back(rank[b].targets);
    }
    EXPECT_TRUE(torch::equal(torch::cat(inputs), single[b].inputs)) << "batch " << b;
    EXPECT_TRUE(torch::equal(torch::cat(targets), single[b].targets)) << "batch " << b;
  }
}

TEST(Loader, WorkerErrorsReachTheCaller) {
  auto ok = make_dataset(40);
  auto ds = std::make_shared<FailingDataset>(ok->images(), ok->labels(), 33);
  auto source = with_random_transform(ds);
  LoaderOptions options;
  options.batch_size = 4;
  options.shuffle = false;
  options.workers = 2;
  DataLoader loader(source, options);
  loader.start_epoch(0);
  int batches = 0;
  try {
    while (loader.next()) ++batches;
    FAIL() << "no error";
  } catch (const shrink::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("example 33"), std::string::npos) << e.what();
  }
  EXPECT_EQ(batches, 8);  // batches 0..7 came through; batch 8 holds example 33
}

TEST(Loader, StoppingEarlyDoesNotHang) {
  auto source = with_random_transform(make_dataset(200));
  LoaderOptions options;
  options.batch_size = 2;
  options.workers = 3;
  options.prefetch = 2;
  {
    DataLoader loader(source, options);
    loader.start_epoch(0);
    loader.next();
    loader.start_epoch(1, 10);  // restarts the workers mid-way
    EXPECT_TRUE(loader.next().has_value());
  }  // destroyed with full prefetch queues
  SUCCEED();
}

}  // namespace
