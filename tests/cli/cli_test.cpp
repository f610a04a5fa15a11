// The `shrink` program end to end: validation errors (exact message and position, exit 2,
// nothing written), overrides, list, summary, eval, bench, interrupt and resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace shrink::test;
namespace fs = std::filesystem;

namespace {

const std::string kHead = "data: {name: fashion_mnist, root: " + fashion_mnist_dir() +
                          ", train_subset: 512, test_subset: 200}\nmodel: {name: lenet5}\n";

struct BadRecipe {
  std::string body;      ///< after kHead (which is 2 lines)
  std::string expected;  ///< the whole error line after "error: "
};

}  // namespace

TEST(CliValidation, EachErrorNamesFileLineKeyAndWritesNothing) {
  TempDir tmp;
  const std::vector<BadRecipe> cases = {
      {"train:\n  epocs: 3\n", "r.yaml:4:3: train.epocs: unknown key 'epocs' (did you mean 'epochs'?)"},
      {"train:\n  batch_size: many\n", "r.yaml:4:15: train.batch_size: expected an integer (got 'many')"},
      {"train:\n  label_smoothing: 1.5\n", "r.yaml:4:20: train.label_smoothing: must be in [0, 1] (got 1.5)"},
      {"train:\n  optimizer: {name: sgd, lr: -1}\n", "r.yaml:4:30: train.optimizer.lr: must be >= 0 (got -1)"},
      {"compression:\n  - method: l1_regularisation\n",
       "r.yaml:4:13: compression[0].method: unknown compression method 'l1_regularisation' (did you mean "
       "'l1_regularization'?); registered: block_gating, compact_filters, dcn_hint, distillation, filter_pruning, group_lasso, l1_regularization, low_rank, quantization, stochastic_depth, unstructured_pruning, weight_sharing"},
      {"compression:\n  - method: l1_regularization\n    targets: [fc1.weight, 'fc9*']\n",
       "r.yaml:5:27: compression[0].targets[1]: 'fc9*' matches no module or parameter of the model; parameters: "
       "conv1.weight, conv1.bias, conv2.weight, conv2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias"},
      {"compression:\n  - method: l1_regularization\n    start_epoch: 5\n    end_epoch: 3\n",
       "r.yaml:6:16: compression[0].end_epoch: must be greater than start_epoch (got 3 <= 5)"},
      {"compression:\n  - method: l1_regularization\n    strenght: 0.1\n",
       "r.yaml:5:5: compression[0].strenght: unknown key 'strenght' (did you mean 'strength'?)"},
      {"train:\n  param_groups:\n    - match: ['*.gamma']\n      weight_decay: 0\n",
       "r.yaml:5:14: train.param_groups[0].match: matches no trainable parameter of the model"},
      {"train:\n  lr_schedule: {name: step, step_size: 0}\n",
       "r.yaml:4:40: train.lr_schedule.step_size: must be >= 1 (got 0)"},
      {"train:\n  batch_size: 100000\n",
       "r.yaml:4:15: train.batch_size: 100000 is larger than the training set (512 examples) with drop_last"},
      {"train:\n  epochs: 0\n", "r.yaml:4:11: train.epochs: trains for no optimizer step (8 steps per epoch)"},
      {"train:\n  label_smoothing: .nan\n", "r.yaml:4:20: train.label_smoothing: must be in [0, 1] (got .nan)"},
      {"train:\n  optimizer: {name: adam, beta1: 1}\n", "r.yaml:4:34: train.optimizer.beta1: must be below 1 (got 1)"},
      {"compression:\n  - method: l1_regularization\n    start_epoch: 2\n    end_step: 10\n",
       "r.yaml:4:5: compression[0]: schedule is empty: it starts at step 16 and ends at step 10 (8 steps per epoch)"},
      {"compression:\n  - method: low_rank\n    targets: [conv2]\n    scheme: tucker2\n    rank: 4\n    energy: 0.5\n",
       "r.yaml:8:13: compression[0].energy: give one rank rule only; this entry also sets rank"},
      {"compression:\n  - method: low_rank\n    targets: [fc1]\n    scheme: tucker2\n    rank: 4\n",
       "r.yaml:5:14: compression[0].targets: select no Conv2d layer to factorize (scheme tucker2 factorizes "
       "nn::Conv2d layers with groups 1; svd factorizes Linear layers); matched layers of the other kind: fc1"},
      {"compression:\n  - {method: low_rank, targets: [conv2], scheme: tucker2, rank: 4}\n"
       "  - {method: l1_regularization, targets: ['conv*.weight']}\n",
       "r.yaml:5:42: compression[1].targets: targets conv2.weight, rebuilt before training by low_rank or "
       "compact_filters; a method cannot act on the layers they rebuild in the same recipe (exclude them)"},
      {"compression:\n  - {method: compact_filters, targets: [conv2], form: crelu}\n"
       "  - {method: low_rank, targets: [conv2], scheme: tucker2, rank: 4}\n",
       "r.yaml:5:33: compression[1].targets: layer conv2 is already in form crelu (set by an earlier entry); it "
       "cannot be factorized again"},
      {"devcie: cpu\n", "r.yaml:3:1: devcie: unknown key 'devcie' (did you mean 'device'?)"},
      {"device: gpu\n", "r.yaml:3:9: device: unknown device 'gpu'; expected cpu, cuda or cuda:N"},
  };
  for (const auto& c : cases) {
    write_file(tmp.file("r.yaml"), kHead + c.body);
    auto out = tmp.file("out");
    auto r = run_command("cd " + tmp.path().string() + " && " SHRINK_CLI " train r.yaml --set output=" + out);
    EXPECT_EQ(r.status, 2) << c.body << r.output;
    EXPECT_EQ(r.output, "error: " + c.expected + "\n") << c.body;
    EXPECT_FALSE(fs::exists(out)) << "nothing may be written on a validation error";
  }
}

TEST(CliValidation, YamlSyntaxOverrideAndMissingFiles) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"), kHead + "train: [1, 2\n");
  auto r = run_command("cd " + tmp.path().string() + " && " SHRINK_CLI " train r.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.output.rfind("error: r.yaml:", 0), 0u) << r.output;

  write_file(tmp.file("ok.yaml"), kHead);
  r = run_command("cd " + tmp.path().string() + " && " SHRINK_CLI " train ok.yaml --set train.epochs");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--set:1:"), std::string::npos) << r.output;

  r = run_shrink("train " + tmp.file("missing.yaml"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find(tmp.file("missing.yaml")), std::string::npos) << r.output;

  write_file(tmp.file("base.yaml"), "base: [nowhere.yaml]\n" + kHead);
  r = run_command("cd " + tmp.path().string() + " && " SHRINK_CLI " train base.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("base 'nowhere.yaml' not found"), std::string::npos) << r.output;

  r = run_shrink("train");
  EXPECT_EQ(r.status, 2) << r.output;
  r = run_shrink("list kinds");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("unknown kind 'kinds'"), std::string::npos) << r.output;
}

TEST(Cli, ListShowsEntriesAndMethodOptions) {
  auto r = run_shrink("list");
  EXPECT_EQ(r.status, 0);
  for (auto name : {"lenet5", "lenet300", "fashion_mnist", "sgd", "adamw", "cosine", "l1_regularization"})
    EXPECT_NE(r.output.find(name), std::string::npos) << name;
  r = run_shrink("list method l1_regularization");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("strength"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("targets"), std::string::npos) << r.output;
}

TEST(Cli, RecipeReferenceIsUpToDate) {
  auto r = run_shrink("list --markdown");
  ASSERT_EQ(r.status, 0);
  auto doc = read_file(std::string(SHRINK_SOURCE_DIR) + "/docs/recipes.md");
  EXPECT_NE(doc.find(r.output), std::string::npos)
      << "docs/recipes.md is stale: regenerate its reference part with `shrink list --markdown`";
}

TEST(Cli, SummaryOfRecipeMatchesLeNet5) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"), kHead);
  auto r = run_shrink("summary " + tmp.file("r.yaml") + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["total"]["parameters"].get<int64_t>(), 431080);
  EXPECT_EQ(j["total"]["macs"].get<int64_t>(), 2293000);
}

TEST(Cli, FactorizedAndCompactLayersThroughTrainEvalSummary) {
  TempDir tmp;
  // conv2 in the tucker2(4,6) form, fresh; conv1 as cyclic filters (20 -> 5 learned filters).
  write_file(tmp.file("r.yaml"), kHead +
                                     "train: {epochs: 1, progress: none}\n"
                                     "compression:\n"
                                     "  - {method: low_rank, targets: [conv2], scheme: tucker2, ranks: [4, 6], init: random}\n"
                                     "  - {method: compact_filters, targets: [conv1], form: cyclic}\n");
  auto planned = run_shrink("summary " + tmp.file("r.yaml") + " --json");
  ASSERT_EQ(planned.status, 0) << planned.output;
  const int64_t conv1 = 5 * 25 + 20, conv2 = 20 * 4 + 4 * 6 * 25 + 6 * 50 + 50;
  const int64_t expected = conv1 + conv2 + 800 * 500 + 500 + 500 * 10 + 10;
  EXPECT_EQ(nlohmann::json::parse(planned.output)["total"]["parameters"].get<int64_t>(), expected);
  // Before training: the model as the recipe builds it.
  auto before = run_shrink("eval " + tmp.file("r.yaml"));
  EXPECT_EQ(before.status, 0) << before.output;
  EXPECT_NE(before.output.find("(before training): 200 test examples"), std::string::npos) << before.output;
  const auto run = tmp.file("run");
  auto trained = run_shrink("train " + tmp.file("r.yaml") + " --set output=" + run);
  ASSERT_EQ(trained.status, 0) << trained.output;
  EXPECT_NE(trained.output.find("low_rank: conv2: tucker2(4,6)"), std::string::npos) << trained.output;
  // The run reloads into the same forms: same parameter count, and eval reproduces the final top-1.
  auto summary = run_shrink("summary " + run + " --json");
  ASSERT_EQ(summary.status, 0) << summary.output;
  EXPECT_EQ(nlohmann::json::parse(summary.output)["total"]["parameters"].get<int64_t>(), expected);
  auto eval = run_shrink("eval " + run + " --json");
  ASSERT_EQ(eval.status, 0) << eval.output;
  auto final_top1 = nlohmann::json::parse(read_file(run + "/summary.json"))["test"]["top1"].get<double>();
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(eval.output)["top1"].get<double>(), final_top1);
}

TEST(Cli, TrainOverrideEvalSummaryBenchInterruptResume) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"), kHead + "train:\n  epochs: 40\n  progress: plain\n");
  auto run_dir = tmp.file("run");

  // Interrupt with SIGINT: the step finishes, a checkpoint is written, the message says how to resume.
  // --foreground: otherwise timeout signals the child and then its process group, and a second
  // SIGINT arriving after the handler ran kills the run (exit 130, no message) once in a while.
  auto r = run_command("timeout --foreground --preserve-status -s INT 6 " SHRINK_CLI " train " + tmp.file("r.yaml") + " --set output=" + run_dir);
  ASSERT_EQ(r.status, 130) << r.output;
  EXPECT_NE(r.output.find("Resume with: shrink train " + run_dir + "/recipe.yaml --resume " + run_dir),
            std::string::npos)
      << r.output;
  ASSERT_TRUE(fs::exists(run_dir + "/last.pt"));

  // Resume with a shorter run (an override): it finishes.
  r = run_shrink("train " + tmp.file("r.yaml") + " --resume " + run_dir + " --set train.epochs=2 --quiet");
  // If the interrupt came after epoch 2 the resumed run has nothing left to do; both end with 0.
  ASSERT_EQ(r.status, 0) << r.output;

  // A second run with the same output gets a fresh directory.
  r = run_shrink("train " + tmp.file("r.yaml") + " --set output=" + run_dir + " --set train.epochs=0.25 --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(run_dir + "-2/last.pt"));
  EXPECT_NE(read_file(run_dir + "-2/recipe.yaml").find("epochs: 0.25"), std::string::npos);

  r = run_shrink("eval " + run_dir + "-2 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto ev = nlohmann::json::parse(r.output);
  EXPECT_EQ(ev["examples"].get<int64_t>(), 200);
  auto summary = nlohmann::json::parse(read_file(run_dir + "-2/summary.json"));
  EXPECT_DOUBLE_EQ(ev["top1"].get<double>(), summary["final"]["eval_top1"].get<double>());

  r = run_shrink("eval " + tmp.file("r.yaml") + " --checkpoint " + run_dir + "-2/best.pt");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("200 test examples"), std::string::npos) << r.output;

  r = run_shrink("summary " + run_dir + "-2/last.pt --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["total"]["parameters"].get<int64_t>(), 431080);

  r = run_shrink("eval " + tmp.file("r.yaml") + " --checkpoint " + tmp.file("r.yaml"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("cannot read checkpoint"), std::string::npos) << r.output;

  r = run_shrink("bench " + tmp.file("r.yaml") + " --steps 3 --repeats 3 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto b = nlohmann::json::parse(r.output);
  EXPECT_EQ(b["train_step"]["repeats"].get<int>(), 3);
  EXPECT_GT(b["train_step"]["median_ms"].get<double>(), 0);
  EXPECT_GT(b["inference_batch1"]["median_ms"].get<double>(), 0);
  EXPECT_EQ(b["batch_size"].get<int>(), 64);
}
