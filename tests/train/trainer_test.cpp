// The training loop on tiny Fashion-MNIST subsets: it learns, checkpoints round-trip, an
// interrupted-then-resumed run ends with exactly the weights of an uninterrupted one, signals
// stop cleanly, and a non-finite loss keeps the last good checkpoint.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "shrink/train/checkpoint.h"
#include "shrink/train/trainer.h"
#include "train_test_util.h"

using namespace shrink;
namespace fs = std::filesystem;

namespace {

/// Test callback: at a given optimizer step, requests a stop, raises a signal, or poisons the loss.
struct Trigger : Callback {
  enum class Action { Stop, Signal, NaN };
  Trigger(int64_t step, Action action) : step_(step), action_(action) {}
  std::string name() const override { return "trigger"; }
  void on_step_end(TrainContext& ctx) override {
    if (ctx.step + 1 != step_) return;
    if (action_ == Action::Stop) request_stop();
    if (action_ == Action::Signal) std::raise(SIGINT);
  }
  torch::Tensor on_loss(TrainContext& ctx, torch::Tensor loss) override {
    if (action_ == Action::NaN && ctx.step >= step_) return loss * std::numeric_limits<float>::quiet_NaN();
    return loss;
  }
  int64_t step_;
  Action action_;
};

TrainResult run(const std::string& yaml, const std::string& dir, bool resume = false,
                std::unique_ptr<Callback> extra = nullptr, Experiment* keep = nullptr) {
  auto e = build_experiment(test::recipe_node(yaml));
  apply_runtime_settings(e.recipe);
  if (extra) e.callbacks.push_back(std::move(extra));
  TrainOptions options;
  options.run_dir = dir;
  options.resume = resume;
  options.quiet = true;
  auto result = train(e, options);
  if (keep) *keep = std::move(e);
  return result;
}

std::vector<torch::Tensor> weights(const Experiment& e) {
  std::vector<torch::Tensor> out;
  for (const auto& p : e.model->parameters()) out.push_back(p.detach().clone());
  return out;
}

void expect_identical(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

}  // namespace

TEST(Trainer, LeNet5LearnsOnSmallSubset) {
  test::TempDir tmp;
  auto dir = tmp.file("run");
  auto result = run(test::small_recipe(dir, "", "lenet5", 2048, 2), dir);
  EXPECT_FALSE(result.interrupted);
  EXPECT_EQ(result.epochs_completed, 2);
  EXPECT_EQ(result.steps, 2 * (2048 / 64));
  EXPECT_GT(result.final_eval.top1, 65.0) << "LeNet-5 should learn Fashion-MNIST well above chance";
  EXPECT_GT(result.final_eval.top5, result.final_eval.top1);

  // Run directory contents.
  for (auto f : {"recipe.yaml", "metrics.jsonl", "metrics.csv", "log.txt", "summary.json", "last.pt", "best.pt"})
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;
  std::ifstream jsonl(dir + "/metrics.jsonl");
  std::string line;
  int rows = 0;
  while (std::getline(jsonl, line)) {
    auto row = nlohmann::json::parse(line);
    ++rows;
    EXPECT_EQ(row["epoch"].get<int>(), rows);
    for (auto key : {"lr", "train_loss", "train_acc", "eval_loss", "eval_top1", "eval_top5", "sparsity",
                     "images_per_sec", "seconds"})
      EXPECT_TRUE(row.contains(key)) << key;
  }
  EXPECT_EQ(rows, 2);
  auto csv = test::read_file(dir + "/metrics.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "epoch,step,lr,train_loss,train_acc,eval_loss,eval_top1,eval_top5,sparsity,images_per_sec,seconds");
  auto summary = nlohmann::json::parse(test::read_file(dir + "/summary.json"));
  EXPECT_DOUBLE_EQ(summary["final"]["eval_top1"].get<double>(), result.final_eval.top1);
}

TEST(Trainer, SavedRecipeReproducesTheRun) {
  test::TempDir tmp;
  auto dir = tmp.file("run");
  Experiment first;
  run(test::small_recipe(dir, "", "lenet300", 256, 1), dir, false, nullptr, &first);
  // The saved recipe is itself a valid recipe; training it again gives the same weights.
  auto again = load_recipe(dir + "/recipe.yaml", {"output=" + tmp.file("again")});
  auto e = build_experiment(again);
  apply_runtime_settings(e.recipe);
  TrainOptions options;
  options.run_dir = tmp.file("again");
  options.quiet = true;
  train(e, options);
  expect_identical(weights(first), weights(e));
}

TEST(Trainer, CheckpointRoundTrip) {
  test::TempDir tmp;
  auto dir = tmp.file("run");
  Experiment trained;
  auto result = run(test::small_recipe(dir, "", "lenet300", 256, 1), dir, false, nullptr, &trained);
  auto e = build_experiment(test::recipe_node(read_checkpoint_recipe(dir + "/last.pt")), DataNeeds::TestOnly);
  load_checkpoint_methods(dir + "/last.pt", e);
  prepare_experiment(e);
  load_checkpoint_model(dir + "/last.pt", e);
  expect_identical(weights(trained), weights(e));
  auto r = evaluate(e.model, e.test_data, 100, e.device);
  EXPECT_DOUBLE_EQ(r.top1, result.final_eval.top1);
}

TEST(Trainer, InterruptedThenResumedRunIsExact) {
  test::TempDir tmp;
  const std::string extra =
      "  lr_schedule: {name: cosine, warmup_epochs: 0.5}\n"
      "compression:\n  - method: l1_regularization\n    targets: ['fc1.weight']\n    strength: 0.0001\n";
  Experiment whole;
  auto full = run(test::small_recipe(tmp.file("a"), extra), tmp.file("a"), false, nullptr, &whole);
  ASSERT_FALSE(full.interrupted);

  // Stop mid-epoch 2 (16 steps per epoch), then resume in a fresh experiment.
  auto yaml = test::small_recipe(tmp.file("b"), extra);
  auto part = run(yaml, tmp.file("b"), false, std::make_unique<Trigger>(21, Trigger::Action::Stop));
  clear_stop_request();
  ASSERT_TRUE(part.interrupted);
  EXPECT_EQ(part.steps, 21);
  Experiment resumed;
  auto rest = run(yaml, tmp.file("b"), true, nullptr, &resumed);
  EXPECT_FALSE(rest.interrupted);
  EXPECT_EQ(rest.steps, full.steps);
  expect_identical(weights(whole), weights(resumed));
  EXPECT_DOUBLE_EQ(rest.final_eval.top1, full.final_eval.top1);
  // The metrics history is continuous: one row per epoch.
  EXPECT_EQ(test::read_file(tmp.file("a") + "/metrics.jsonl").size() > 0, true);
  int rows = 0;
  std::ifstream in(tmp.file("b") + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) ++rows;
  EXPECT_EQ(rows, 2);
}

TEST(Trainer, SigintFinishesTheStepAndWritesCheckpoint) {
  test::TempDir tmp;
  auto dir = tmp.file("run");
  install_stop_signal_handlers();
  auto result = run(test::small_recipe(dir), dir, false, std::make_unique<Trigger>(5, Trigger::Action::Signal));
  clear_stop_request();
  install_stop_signal_handlers();  // the handler resets itself to default after one signal
  EXPECT_TRUE(result.interrupted);
  EXPECT_EQ(result.steps, 5);
  EXPECT_TRUE(fs::exists(dir + "/last.pt"));
  auto log = test::read_file(dir + "/log.txt");
  EXPECT_NE(log.find("interrupted at epoch 1 step 5"), std::string::npos) << log;
  EXPECT_NE(log.find("--resume " + dir), std::string::npos) << log;
}

TEST(Trainer, NonFiniteLossStopsAndKeepsLastGoodCheckpoint) {
  test::TempDir tmp;
  auto dir = tmp.file("run");
  // 256 examples / 64 = 4 steps per epoch: the loss turns NaN in epoch 2.
  auto yaml = test::small_recipe(dir, "", "lenet300", 256, 3);
  EXPECT_THROW(run(yaml, dir, false, std::make_unique<Trigger>(6, Trigger::Action::NaN)), NonFiniteLossError);
  auto e = build_experiment(test::recipe_node(yaml), DataNeeds::TestOnly);
  TrainerState state;
  load_checkpoint_model(dir + "/last.pt", e, nullptr, &state);
  EXPECT_EQ(state.epoch, 1);
  EXPECT_EQ(state.step, 4);
  for (const auto& p : e.model->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

TEST(Trainer, FractionalEpochsEndMidEpoch) {
  test::TempDir tmp;
  auto dir = tmp.file("run");
  auto result = run(test::small_recipe(dir, "", "lenet300", 256, 1.5), dir);
  EXPECT_EQ(result.steps, 6);
  EXPECT_EQ(result.epochs_completed, 2);
}

TEST(Trainer, CorruptCheckpointIsANamedError) {
  test::TempDir tmp;
  auto path = tmp.file("bad.pt");
  test::write_file(path, "not a checkpoint");
  try {
    read_checkpoint_recipe(path);
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read checkpoint '" + path + "'"), std::string::npos) << e.what();
  }
}

TEST(Trainer, WeightSparsityCountsZeros) {
  auto e = build_experiment(test::recipe_node(test::small_recipe("unused")), DataNeeds::TestOnly);
  EXPECT_DOUBLE_EQ(weight_sparsity(e.model), 0.0);
  torch::NoGradGuard g;
  auto params = e.model->named_parameters();
  params["fc1.weight"].zero_();  // 235200 of 266200 weights
  EXPECT_NEAR(weight_sparsity(e.model), 235200.0 / (235200 + 30000 + 1000), 1e-12);
}

namespace {

// Augmented data loaded by worker threads, with a validation split: the run is the same for any
// worker count (also across an interruption), validation drives the per-epoch evaluation, the
// test split is reported at the end, and the class list is saved with the run.
std::string with_data_keys(std::string yaml, int workers) {
  const std::string anchor = "  test_subset: 500\n";
  auto at = yaml.find(anchor);
  EXPECT_NE(at, std::string::npos);
  yaml.insert(at + anchor.size(), "  validation_fraction: 0.25\n  workers: " + std::to_string(workers) +
                                      "\n  transforms:\n    train:\n      - random_crop: {size: 28, padding: 2}\n"
                                      "      - horizontal_flip\n");
  return yaml;
}

}  // namespace

TEST(Trainer, WorkersValidationAndClassList) {
  test::TempDir tmp;
  Experiment serial, threaded;
  auto a = run(with_data_keys(test::small_recipe(tmp.file("a"), "", "lenet5", 640, 2), 0), tmp.file("a"), false,
               nullptr, &serial);
  auto b = run(with_data_keys(test::small_recipe(tmp.file("b"), "", "lenet5", 640, 2), 2), tmp.file("b"), false,
               nullptr, &threaded);
  expect_identical(weights(serial), weights(threaded));
  EXPECT_TRUE(a.has_validation);
  EXPECT_EQ(a.final_eval.examples, 160);  // 25% of 640 held out
  EXPECT_EQ(a.test_eval.examples, 500);
  EXPECT_DOUBLE_EQ(a.test_eval.top1, b.test_eval.top1);
  EXPECT_GT(a.test_eval.top1, 40.0);  // learns despite the augmentation (chance: 10%)
  auto summary = nlohmann::json::parse(test::read_file(tmp.file("a") + "/summary.json"));
  EXPECT_EQ(summary["eval_split"], "val");
  EXPECT_EQ(summary["test"]["examples"], 500);
  auto classes = test::read_file(tmp.file("a") + "/classes.txt");
  EXPECT_EQ(classes.rfind("T-shirt/top\nTrouser\n", 0), 0u) << classes;

  // Interrupted mid-epoch with workers, resumed with none: the same weights.
  auto yaml = with_data_keys(test::small_recipe(tmp.file("c"), "", "lenet5", 640, 2), 2);
  auto part = run(yaml, tmp.file("c"), false, std::make_unique<Trigger>(11, Trigger::Action::Stop));
  clear_stop_request();
  ASSERT_TRUE(part.interrupted);
  Experiment resumed;
  run(with_data_keys(test::small_recipe(tmp.file("c"), "", "lenet5", 640, 2), 0), tmp.file("c"), true, nullptr,
      &resumed);
  expect_identical(weights(serial), weights(resumed));
}
