// Data-parallel training on c10d Gloo across real processes on loopback: the gradient average
// equals one process's gradient of the concatenated batch; `shrink train --nproc 2` learns,
// writes one run directory and ends with identical weights on both ranks; a killed rank stops
// the job with an error naming it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "shrink/distributed/process_group.h"
#include "test_util.h"

using namespace shrink;
using namespace shrink::test;
namespace fs = std::filesystem;

namespace {

// The test batch: 7 examples, split 4 + 3 so the ranks' shares differ (the average must weight
// each rank's mean by its example count to equal the mean over the whole batch).
struct GradProblem {
  torch::nn::Linear model{nullptr};
  torch::Tensor x, y;
  GradProblem() {
    torch::manual_seed(11);
    model = torch::nn::Linear(5, 3);
    x = torch::randn({7, 5});
    y = torch::randint(0, 3, {7});
  }
  /// Mean cross-entropy over rows [lo, hi) and its gradients.
  double backward(int64_t lo, int64_t hi) {
    model->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model(x.slice(0, lo, hi)), y.slice(0, lo, hi));
    loss.backward();
    return loss.item<double>();
  }
};

std::string self_exe() { return fs::read_symlink("/proc/self/exe").string(); }

std::string tiny_recipe(const std::string& output, int epochs, const std::string& extra = "") {
  return "name: ddp_tiny\nseed: 3\nthreads: 1\noutput: " + output +
         "\ndata: {name: synthetic, channels: 1, height: 8, width: 8, num_classes: 4, train_size: 256, "
         "test_size: 128, noise: 0.3}\nmodel: {name: mlp, hidden: [32]}\n"
         "train:\n  epochs: " + std::to_string(epochs) + "\n  batch_size: 32\n  progress: none\n"
         "  optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.0001}\n"
         "compression:\n  - {method: unstructured_pruning, sparsity: 0.5, schedule: agp, end_epoch: 2}\n" + extra;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

}  // namespace

// Runs only as a worker started by GradientAverageEqualsConcatenatedBatch (skipped otherwise).
TEST(DistributedWorker, AverageGradients) {
  const char* out = std::getenv("SHRINK_TEST_DIST_OUT");
  if (!out) GTEST_SKIP() << "worker of GradientAverageEqualsConcatenatedBatch";
  auto group = distributed::init_from_env(30);
  ASSERT_NE(group, nullptr);
  GradProblem p;
  // Rank 1 starts from other weights: the broadcast gives it rank 0's.
  if (group->rank() == 1) {
    torch::NoGradGuard no_grad;
    p.model->weight.add_(1.0);
  }
  GradProblem reference;
  group->broadcast_module(*p.model);
  const int64_t lo = group->rank() == 0 ? 0 : 4, hi = group->rank() == 0 ? 4 : 7;
  const double local = p.backward(lo, hi);
  // A tensor only rank 0 gives a gradient (a block one rank skipped) and one nobody does.
  auto only0 = torch::ones({3}, torch::requires_grad()), unused = torch::ones({2}, torch::requires_grad());
  if (group->rank() == 0) (only0 * 2).sum().backward();
  auto params = p.model->parameters();
  params.push_back(only0);
  params.push_back(unused);
  auto r = group->average_gradients(params, local, hi - lo, false);
  ASSERT_FALSE(unused.grad().defined());
  ASSERT_TRUE(only0.grad().defined());
  torch::save(std::vector<torch::Tensor>{p.model->weight.grad(), p.model->bias.grad(),
                                         torch::tensor({r.loss}, torch::kFloat64),
                                         torch::tensor({double(r.examples)}, torch::kFloat64),
                                         (p.model->weight - reference.model->weight).abs().max().reshape({1}),
                                         only0.grad()},
              out);
  distributed::set_default_group(nullptr);
}

TEST(Distributed, GradientAverageEqualsConcatenatedBatch) {
  ASSERT_TRUE(distributed::gloo_available()) << "built without libgloo-dev";
  TempDir tmp;
  const std::string exe = self_exe();
  auto worker = [&](int rank) {
    return "RANK=" + std::to_string(rank) + " WORLD_SIZE=2 SHRINK_DIST_FILE_STORE=" + tmp.file("store") +
           " SHRINK_TEST_DIST_OUT=" + tmp.file("rank" + std::to_string(rank) + ".pt") + " " + exe +
           " --gtest_filter=DistributedWorker.AverageGradients > " + tmp.file("log" + std::to_string(rank)) +
           " 2>&1";
  };
  auto r = run_command(worker(0) + " & p=$!; " + worker(1) + "; s1=$?; wait $p; s0=$?; echo status $s0 $s1");
  ASSERT_NE(r.output.find("status 0 0"), std::string::npos)
      << r.output << read_file(tmp.file("log0")) << read_file(tmp.file("log1"));

  GradProblem full;
  const double loss = full.backward(0, 7);
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<torch::Tensor> got;
    torch::load(got, tmp.file("rank" + std::to_string(rank) + ".pt"));
    ASSERT_EQ(got.size(), 6u);
    EXPECT_LT((got[0] - full.model->weight.grad()).abs().max().item<double>(), 1e-6) << "rank " << rank;
    EXPECT_LT((got[1] - full.model->bias.grad()).abs().max().item<double>(), 1e-6) << "rank " << rank;
    EXPECT_NEAR(got[2].item<double>(), loss, 1e-6) << "the global batch's mean loss";
    EXPECT_EQ(got[3].item<double>(), 7.0);
    EXPECT_EQ(got[4].item<double>(), 0.0) << "rank " << rank << " did not start from rank 0's weights";
    EXPECT_LT((got[5] - 2.0 * 4 / 7).abs().max().item<double>(), 1e-6) << "rank 0's share of the batch";
  }
}

TEST(Distributed, TwoProcessesTrainLikeOneAndAgree) {
  TempDir tmp;
  const auto runs = tmp.file("runs");
  write_file(tmp.file("r.yaml"), tiny_recipe(runs + "/ddp", 3));
  auto help = run_shrink("train --help");
  EXPECT_NE(help.output.find("--nproc"), std::string::npos) << help.output;
  EXPECT_NE(run_shrink("--help").output.find("--nproc N"), std::string::npos);

  auto r = run_shrink("train " + tmp.file("r.yaml") + " --nproc 2 --dist-timeout 60");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("ranks agree: max weight difference 0 over 2 processes"), std::string::npos) << r.output;
  // Rank 1 wrote nothing: one run directory, and each epoch logged once.
  std::vector<std::string> dirs;
  for (const auto& entry : fs::directory_iterator(runs)) dirs.push_back(entry.path().filename().string());
  ASSERT_EQ(dirs, std::vector<std::string>{"ddp"});
  const auto log = read_file(runs + "/ddp/log.txt");
  EXPECT_NE(log.find("2 processes on Gloo"), std::string::npos) << log;
  EXPECT_NE(log.find("ranks agree: max weight difference 0"), std::string::npos) << log;
  size_t epoch_lines = 0;
  for (size_t pos = 0; (pos = log.find("\nepoch ", pos)) != std::string::npos; ++pos) ++epoch_lines;
  EXPECT_EQ(epoch_lines, 3u) << log;
  const auto ddp = read_json(runs + "/ddp/summary.json");
  EXPECT_EQ(ddp["processes"], 2);
  EXPECT_GT(ddp["test"]["top1"].get<double>(), 60.0) << "chance is 25%";
  EXPECT_NEAR(ddp["sparsity"].get<double>(), 0.5, 0.02);

  // One process on the same global batch: the same training up to float summation order.
  auto one = run_shrink("train " + tmp.file("r.yaml") + " --quiet --set output=" + tmp.file("one"));
  ASSERT_EQ(one.status, 0) << one.output;
  const auto single = read_json(tmp.file("one") + "/summary.json");
  EXPECT_NEAR(ddp["test"]["loss"].get<double>(), single["test"]["loss"].get<double>(), 1e-4);
  EXPECT_EQ(ddp["test"]["top1"].get<double>(), single["test"]["top1"].get<double>());
  const auto ddp_rows = read_file(runs + "/ddp/metrics.jsonl"), one_rows = read_file(tmp.file("one") + "/metrics.jsonl");
  const auto last_loss = [](const std::string& rows) {
    auto line = rows.substr(rows.rfind('\n', rows.size() - 2) + 1);
    return nlohmann::json::parse(line)["train_loss"].get<double>();
  };
  EXPECT_NEAR(last_loss(ddp_rows), last_loss(one_rows), 1e-4);

  // Resume with another world size: the one-process run continues on two processes to epoch 5
  // and ends where five epochs on one process end.
  auto resumed = run_shrink("train " + tmp.file("one") + "/recipe.yaml --resume " + tmp.file("one") +
                            " --set train.epochs=5 --nproc 2 --quiet");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(read_file(tmp.file("one") + "/log.txt").find("ranks agree: max weight difference 0"), std::string::npos);
  auto five = run_shrink("train " + tmp.file("r.yaml") + " --quiet --set train.epochs=5 --set output=" + tmp.file("five"));
  ASSERT_EQ(five.status, 0) << five.output;
  EXPECT_NEAR(read_json(tmp.file("one") + "/summary.json")["test"]["loss"].get<double>(),
              read_json(tmp.file("five") + "/summary.json")["test"]["loss"].get<double>(), 1e-4);
  EXPECT_NEAR(last_loss(read_file(tmp.file("one") + "/metrics.jsonl")),
              last_loss(read_file(tmp.file("five") + "/metrics.jsonl")), 1e-4);
}

TEST(Distributed, KilledRankStopsTheJobNamingIt) {
  TempDir tmp;
  const auto run = tmp.file("run");
  write_file(tmp.file("r.yaml"), tiny_recipe(run, 100000));
  const auto start = std::chrono::steady_clock::now();
  // Once rank 0 has created log.txt both ranks have joined; then rank 1 gets SIGKILL.
  const std::string script =
      std::string(SHRINK_CLI) + " train " + tmp.file("r.yaml") + " --nproc 2 --dist-timeout 20 > " +
      tmp.file("out") + " 2>&1 & P=$!\n"
      "for i in $(seq 200); do [ -s " + run + "/log.txt ] && break; sleep 0.05; done\n"
      "sleep 0.3\n"
      "for c in $(pgrep -P $P); do tr '\\0' '\\n' < /proc/$c/environ | grep -qx RANK=1 && kill -9 $c; done\n"
      "wait $P; echo \"launcher status $?\"";
  auto r = run_command(script);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto out = read_file(tmp.file("out"));
  EXPECT_NE(r.output.find("launcher status 1"), std::string::npos) << r.output << out;
  EXPECT_NE(out.find("error: rank 1 of 2 was killed by signal 9"), std::string::npos) << out;
  EXPECT_LT(seconds, 15.0) << out;
  // The last checkpoint (end of an epoch, written atomically) still loads.
  if (fs::exists(run + "/last.pt")) {
    auto eval = run_shrink("eval " + run);
    EXPECT_EQ(eval.status, 0) << eval.output;
  }
}
