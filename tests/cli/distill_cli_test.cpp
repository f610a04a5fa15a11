// Distillation end to end through the CLI: a teacher run, then a two-stage FitNets + KD student
// from the teacher's checkpoint (train, eval, bench), and a tap-shape error.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace shrink::test;
namespace fs = std::filesystem;

namespace {
const std::string kData = "data: {name: fashion_mnist, root: " + fashion_mnist_dir() +
                          ", train_subset: 512, test_subset: 200}\n";
}  // namespace

TEST(DistillCli, TeacherThenStagedHintAndKdStudentTrainEvalBench) {
  TempDir tmp;
  write_file(tmp.file("teacher.yaml"), kData + "model: {name: lenet5}\ntrain: {epochs: 1, progress: none}\n");
  auto r = run_shrink("train " + tmp.file("teacher.yaml") + " --set output=" + tmp.file("teacher") + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;

  // LeNet-300-100 learns from LeNet-5: a hint stage (fc1 300 -> regressor -> teacher fc1 500, Adam),
  // then cross-entropy + KD with SGD.
  const std::string student =
      kData + "model: {name: lenet300}\n"
              "train:\n  progress: none\n  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"
              "  stages:\n"
              "    - {name: hint, epochs: 1, optimizer: {name: adam, lr: 0.001}}\n"
              "    - {name: kd, epochs: 1}\n"
              "compression:\n"
              "  - method: distillation\n"
              "    teacher: {model: {name: lenet5, weights: " + tmp.file("teacher/last.pt") + "}}\n"
              "    terms:\n"
              "      - {loss: hint, student: fc1, teacher: fc1, end_epoch: 1}\n"
              "      - {loss: cross_entropy, weight: 0.5, start_epoch: 1}\n"
              "      - {loss: kd, weight: 0.5, temperature: 4, start_epoch: 1}\n";
  write_file(tmp.file("student.yaml"), student);
  const auto run = tmp.file("student");
  r = run_shrink("train " + tmp.file("student.yaml") + " --set output=" + run);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("distillation: teacher lenet5 (431080 parameters)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 hint regressor(s), 150500 parameters"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stage 'kd' from step 8 to 16"), std::string::npos) << r.output;
  auto metrics = read_file(run + "/metrics.jsonl");
  EXPECT_NE(metrics.find("distill_hint"), std::string::npos);
  EXPECT_NE(metrics.find("distill_kd"), std::string::npos);

  r = run_shrink("eval " + run + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(r.output)["top1"].get<double>(), summary["test"]["top1"].get<double>());
  EXPECT_GT(summary["test"]["top1"].get<double>(), 40.0);  // chance is 10%

  r = run_shrink("bench " + tmp.file("student.yaml") + " --steps 2 --repeats 2 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto b = nlohmann::json::parse(r.output);
  EXPECT_GT(b["parts"]["teacher forward"]["median_ms"].get<double>(), 0);

  // A tap pair that cannot match: exit 2, file:line:key, both taps and shapes, nothing written.
  write_file(tmp.file("bad.yaml"), kData + "model: {name: lenet300}\n"
                                           "compression:\n"
                                           "  - method: distillation\n"
                                           "    teacher: {model: {name: lenet5}}\n"
                                           "    terms: [{loss: attention, student: fc1, teacher: conv1}]\n");
  r = run_shrink("train " + tmp.file("bad.yaml") + " --set output=" + tmp.file("bad"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("bad.yaml:6:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("student tap 'fc1' [2, 300] and teacher tap 'conv1' [2, 20, 12, 12]"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(tmp.file("bad")));
}
