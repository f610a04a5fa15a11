// `shrink sensitivity` end to end on a tiny synthetic-data run: table, CSV and PNG in the run's
// sensitivity/ folder, JSON rows, a recipe without weights, and errors naming the bad flag.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace shrink::test;
namespace fs = std::filesystem;

namespace {

std::string tiny_recipe(const std::string& output) {
  return "name: tiny\nseed: 3\nthreads: 2\noutput: " + output +
         "\ndata: {name: synthetic, channels: 1, height: 8, width: 8, num_classes: 4, train_size: 128, "
         "test_size: 64, noise: 0.3}\nmodel: {name: lenet300}\n"
         "train: {epochs: 1, batch_size: 32, eval_batch_size: 16, progress: none, "
         "optimizer: {name: sgd, lr: 0.05, momentum: 0.9}}\n";
}

size_t lines_of(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

}  // namespace

TEST(SensitivityCli, RunDirectoryTableCsvPlotAndJson) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"), tiny_recipe(tmp.file("run")));
  auto r = run_shrink("train " + tmp.file("r.yaml") + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;

  r = run_shrink("sensitivity " + tmp.file("run") + " --levels 0.5,0.9");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const auto* s : {"reference", "fc1", "fc2", "fc3", "50%", "90%", "sensitivity.csv"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  EXPECT_EQ(r.output.find("untrained"), std::string::npos) << r.output;
  const auto csv = read_file(tmp.file("run/sensitivity/sensitivity.csv"));
  EXPECT_EQ(csv.rfind("layer,parameters,level,top1,top5,loss\n", 0), 0u) << csv;
  EXPECT_EQ(lines_of(csv), 1u + 1u + 3u * 2u) << csv;
  EXPECT_GT(fs::file_size(tmp.file("run/sensitivity/sensitivity.png")), 1000u);

  r = run_shrink("sensitivity " + tmp.file("run/last.pt") +
                 " --levels 0,0.9 --targets fc2,fc3 --criterion l1_filter --batches 2 --json --output " +
                 tmp.file("out"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["criterion"], "l1_filter");
  ASSERT_EQ(j["rows"].size(), 1u + 2u * 2u);
  EXPECT_EQ(j["rows"][0]["examples"].get<int64_t>(), 32);  // 2 batches of 16
  EXPECT_EQ(j["rows"][1]["layer"], "fc2");
  EXPECT_EQ(j["rows"][1]["top1"], j["rows"][0]["top1"]);  // level 0 is the reference
  EXPECT_EQ(j["rows"][4]["layer"], "fc3");
  EXPECT_EQ(j["rows"][4]["pruned"].get<int64_t>(), 4 * 100);  // round(0.9 * 4) = 4 of 4 output rows
  EXPECT_TRUE(fs::exists(tmp.file("out/sensitivity.csv")));
  EXPECT_TRUE(fs::exists(tmp.file("out/sensitivity.png")));
}

TEST(SensitivityCli, RecipeWithoutWeightsWarnsAndWritesUnderRuns) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"), tiny_recipe("unused"));
  auto r = run_command("cd " + tmp.path().string() + " && " SHRINK_CLI " sensitivity r.yaml --levels 0.5 --targets fc3");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("untrained"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(tmp.file("runs/sensitivity/tiny/sensitivity.csv"))) << r.output;
  EXPECT_TRUE(fs::exists(tmp.file("runs/sensitivity/tiny/sensitivity.png"))) << r.output;
}

TEST(SensitivityCli, BadLevelsAndUnmatchedTargetsExit2NamingThem) {
  TempDir tmp;
  write_file(tmp.file("r.yaml"), tiny_recipe(tmp.file("run")));
  const std::string base = "sensitivity " + tmp.file("r.yaml") + " --output " + tmp.file("out");
  struct Case {
    std::string args, expected;
  };
  const std::vector<Case> cases = {
      {" --levels 0.5,1.5", "error: --levels: level 1.5 is outside [0, 1)\n"},
      {" --levels 0.9,0.5", "error: --levels: levels must be sorted and unique (got 0.5 after 0.9)\n"},
      {" --levels 0.5,abc", "error: --levels: 'abc' is not a number (in '0.5,abc')\n"},
      {" --targets fc1,conv9", "error: --targets: 'conv9' matches no Conv2d or Linear layer; layers: fc1, fc2, fc3\n"},
  };
  for (const auto& c : cases) {
    auto r = run_shrink(base + c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(fs::exists(tmp.file("out")));
}
