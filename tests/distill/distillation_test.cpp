// The distillation method through recipes: errors naming file, line, key, taps and shapes; the
// teacher frozen in eval mode; hint regressors trained only in their stage; checkpoints and exact
// resume; TorchScript teachers; the KD step in `shrink bench`.
#include <gtest/gtest.h>

#include <torch/script.h>

#include "shrink/distill/distillation.h"
#include "shrink/distill/losses.h"
#include "shrink/distill/teacher.h"
#include "shrink/report/bench.h"
#include "shrink/train/checkpoint.h"
#include "train/train_test_util.h"

using namespace shrink;
using shrink::test::error_of;
using shrink::test::recipe_node;
using shrink::test::small_recipe;
using shrink::test::StopAt;
using shrink::test::TempDir;

namespace {

distill::Distillation& distillation_of(Experiment& e) {
  auto* d = dynamic_cast<distill::Distillation*>(e.methods.at(0).get());
  EXPECT_TRUE(d);
  return *d;
}

std::string kd_entry(const std::string& teacher, const std::string& terms) {
  return "compression:\n  - method: distillation\n    teacher: " + teacher + "\n    terms:\n" + terms;
}

const char* kLenetTeacher = "{model: {name: lenet5}}";

/// Records a copy of the hint regressors' parameters at the end of every epoch.
struct RegressorSnapshots : Callback {
  explicit RegressorSnapshots(distill::Distillation& d) : d(d) {}
  std::string name() const override { return "snapshots"; }
  void on_train_begin(TrainContext&) override { snapshots.push_back(copy()); }
  void on_epoch_end(TrainContext&) override { snapshots.push_back(copy()); }
  std::vector<torch::Tensor> copy() const {
    std::vector<torch::Tensor> out;
    for (const auto& [n, t] : d.trainable_tensors()) out.push_back(t.detach().clone());
    return out;
  }
  distill::Distillation& d;
  std::vector<std::vector<torch::Tensor>> snapshots;
};

bool same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

}  // namespace

TEST(Distillation, RecipeErrorsNameKeysTapsAndShapes) {
  TempDir dir;
  auto error = [&](const std::string& extra, const std::string& model = "lenet5") {
    return error_of([&] { build_experiment(recipe_node(small_recipe(dir.file("run"), extra, model, 256, 1))); });
  };
  auto e = error(kd_entry(kLenetTeacher, "      - {loss: kdd}\n"));
  EXPECT_NE(e.find("test.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("compression[0].terms[0].loss"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'kd'"), std::string::npos) << e;

  e = error(kd_entry("{model: {name: lenet5}, torchscript: t.pt}", "      - {loss: kd}\n"));
  EXPECT_NE(e.find("compression[0].teacher"), std::string::npos) << e;
  EXPECT_NE(e.find("exactly one"), std::string::npos) << e;

  e = error(kd_entry(kLenetTeacher, "      - {loss: kd, student: conv1}\n"));
  EXPECT_NE(e.find("terms[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("student"), std::string::npos) << e;

  e = error(kd_entry(kLenetTeacher, "      - {loss: attention, student: conv9, teacher: conv1}\n"));
  EXPECT_NE(e.find("terms[0].student"), std::string::npos) << e;
  EXPECT_NE(e.find("no tap 'conv9'"), std::string::npos) << e;
  EXPECT_NE(e.find("conv1, conv2, fc1, logits"), std::string::npos) << e;

  e = error(kd_entry(kLenetTeacher, "      - {loss: attention, student: conv1, teacher: conv7}\n"));
  EXPECT_NE(e.find("terms[0].teacher"), std::string::npos) << e;
  EXPECT_NE(e.find("no tap 'conv7'"), std::string::npos) << e;

  // lenet5's conv1 tap is 12x12 (after pooling), conv2 4x4: attention needs equal spatial sizes.
  e = error(kd_entry(kLenetTeacher, "      - {loss: attention, student: conv1, teacher: conv2}\n"));
  EXPECT_NE(e.find("student tap 'conv1' [2, 20, 12, 12] and teacher tap 'conv2' [2, 50, 4, 4]"), std::string::npos)
      << e;
  e = error(kd_entry(kLenetTeacher, "      - {loss: hint, student: conv1, teacher: fc1}\n"));
  EXPECT_NE(e.find("student tap 'conv1' [2, 20, 12, 12] and teacher tap 'fc1' [2, 500]"), std::string::npos) << e;

  e = error(kd_entry("{model: {name: lenet5, num_classes: 5}}", "      - {loss: kd}\n"));
  EXPECT_NE(e.find("student logits [2, 10] and teacher logits [2, 5] differ"), std::string::npos) << e;

  e = error(kd_entry(kLenetTeacher, "      - {loss: hint, student: [conv1, conv2], teacher: conv1}\n"));
  EXPECT_NE(e.find("terms[0].teacher"), std::string::npos) << e;
  e = error(kd_entry(kLenetTeacher, "      - {loss: kd, temperature: 0}\n"));
  EXPECT_NE(e.find("terms[0].temperature"), std::string::npos) << e;
  e = error(kd_entry(kLenetTeacher, "      - {loss: kd, start_epoch: 2, end_epoch: 1}\n"));
  EXPECT_NE(e.find("terms[0].end_epoch"), std::string::npos) << e;
  e = error(kd_entry("{torchscript: " + dir.file("missing.pt") + "}", "      - {loss: kd}\n"));
  EXPECT_NE(e.find("teacher.torchscript"), std::string::npos) << e;
  EXPECT_NE(e.find("no such file"), std::string::npos) << e;
}

TEST(Distillation, LossIsTheWeightedTermsPlusEarlierMethodsTerms) {
  TempDir dir;
  auto e = build_experiment(recipe_node(small_recipe(
      dir.file("run"),
      kd_entry("{model: {name: lenet300}}",
               "      - {loss: cross_entropy, weight: 0.25}\n      - {loss: kd, weight: 0.75, temperature: 3}\n"),
      "lenet300", 256, 1)));
  auto& d = distillation_of(e);
  TrainContext ctx;
  ctx.model = e.model;
  ctx.steps_per_epoch = 4;
  ctx.total_steps = 4;
  prepare_experiment(e);
  torch::manual_seed(3);
  Batch batch{torch::randn({8, 1, 28, 28}), torch::randint(0, 10, {8})};
  ctx.batch = &batch;
  ctx.outputs = e.model->forward(batch.inputs);
  ctx.task_loss = torch::nn::functional::cross_entropy(ctx.outputs, batch.targets);
  // An earlier method added 5 to the loss: that term stays; the cross-entropy is reweighted.
  auto loss = d.on_loss(ctx, ctx.task_loss + 5.0);
  torch::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    teacher_logits = d.teacher().model()->forward(batch.inputs);
  }
  const double kd = distill::kd_loss(ctx.outputs, teacher_logits, 3.0).item<double>();
  EXPECT_NEAR(loss.item<double>(), 5.0 + 0.25 * ctx.task_loss.item<double>() + 0.75 * kd, 1e-5);
  ASSERT_EQ(d.last_terms().size(), 2u);
  EXPECT_NEAR(d.last_terms()[1].second, kd, 1e-6);
}

TEST(Distillation, EvalOfTheStudentNeedsNoTeacher) {
  TempDir dir;
  // The teacher's checkpoint is gone: training fails at teacher.model.weights, eval builds fine.
  const auto recipe = small_recipe(
      dir.file("run"), kd_entry("{model: {name: lenet300, weights: " + dir.file("gone.pt") + "}}", "      - {loss: kd}\n"),
      "lenet300", 256, 1);
  auto error = error_of([&] { build_experiment(recipe_node(recipe)); });
  EXPECT_NE(error.find("weights"), std::string::npos) << error;
  EXPECT_NO_THROW(build_experiment(recipe_node(recipe), DataNeeds::TestOnly));
}

TEST(Distillation, TeacherStaysFrozenInEvalModeAndStudentLearns) {
  TempDir dir;
  // A teacher trained briefly, then a student distilled from its checkpoint.
  {
    auto e = build_experiment(recipe_node(small_recipe(dir.file("teacher"), "", "lenet300", 1024, 1)));
    TrainOptions o;
    o.run_dir = dir.file("teacher");
    o.quiet = true;
    train(e, o);
  }
  auto e = build_experiment(recipe_node(small_recipe(
      dir.file("student"),
      kd_entry("{model: {name: lenet300, weights: " + dir.file("teacher/last.pt") + "}}",
               "      - {loss: cross_entropy, weight: 0.5}\n      - {loss: kd, weight: 0.5, temperature: 4}\n"),
      "mlp", 1024, 2)));
  auto& d = distillation_of(e);
  auto teacher_before = d.teacher().model()->parameters()[0].clone();
  TrainOptions o;
  o.run_dir = dir.file("student");
  o.quiet = true;
  auto result = train(e, o);
  EXPECT_GT(result.final_eval.top1, 50.0);  // chance is 10%
  EXPECT_FALSE(d.teacher().is_training());
  for (const auto& p : d.teacher().model()->parameters()) {
    EXPECT_FALSE(p.requires_grad());
    EXPECT_FALSE(p.grad().defined());
  }
  EXPECT_TRUE(torch::equal(d.teacher().model()->parameters()[0], teacher_before));
  ASSERT_EQ(d.last_terms().size(), 2u);
  EXPECT_EQ(d.last_terms()[1].first, "kd");
  EXPECT_GT(d.last_terms()[1].second, 0.0);
  auto metrics = test::read_file(dir.file("student/metrics.jsonl"));
  EXPECT_NE(metrics.find("distill_kd"), std::string::npos);
}

TEST(Distillation, HintRegressorsTrainOnlyInTheHintStageAndResumeExactly) {
  TempDir dir;
  // FitNets: a hint stage (epoch 0) on lenet5 conv2 -> teacher conv2, then KD (epoch 1).
  const auto extra = kd_entry(kLenetTeacher,
                              "      - {loss: hint, student: conv2, teacher: conv2, end_epoch: 1}\n"
                              "      - {loss: cross_entropy, start_epoch: 1}\n"
                              "      - {loss: kd, temperature: 2, start_epoch: 1}\n");
  auto make = [&](const std::string& run) {
    return build_experiment(recipe_node(small_recipe(dir.file(run), extra, "lenet5", 256, 2)));
  };
  auto e = make("full");
  auto& d = distillation_of(e);
  ASSERT_EQ(d.regressors().size(), 1u);
  ASSERT_TRUE(d.regressors()[0].conv);
  EXPECT_EQ(d.regressors()[0].conv->weight.sizes(), (std::vector<int64_t>{50, 50, 1, 1}));
  auto snapshots = std::make_unique<RegressorSnapshots>(d);
  auto* snaps = snapshots.get();
  e.callbacks.push_back(std::move(snapshots));
  TrainOptions o;
  o.run_dir = dir.file("full");
  o.quiet = true;
  train(e, o);
  ASSERT_EQ(snaps->snapshots.size(), 3u);
  EXPECT_FALSE(same(snaps->snapshots[0], snaps->snapshots[1]));  // trained in the hint stage
  EXPECT_TRUE(same(snaps->snapshots[1], snaps->snapshots[2]));   // untouched afterwards (no decay, no momentum)

  // Interrupted mid-hint-stage and resumed: the same weights and regressors as without the stop.
  auto interrupted = make("resumed");
  interrupted.callbacks.push_back(std::make_unique<StopAt>(2));
  o.run_dir = dir.file("resumed");
  EXPECT_TRUE(train(interrupted, o).interrupted);
  clear_stop_request();
  auto resumed = make("resumed");
  o.resume = true;
  train(resumed, o);
  auto a = e.model->named_parameters(), b = resumed.model->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  auto ra = d.trainable_tensors(), rb = distillation_of(resumed).trainable_tensors();
  for (size_t i = 0; i < ra.size(); ++i) EXPECT_TRUE(torch::equal(ra[i].second, rb[i].second)) << ra[i].first;
}

TEST(Distillation, TorchScriptTeacherWithDictTaps) {
  TempDir dir;
  torch::manual_seed(5);
  torch::jit::Module script("Teacher");
  script.register_parameter("w", torch::randn({10, 784}) * 0.05, false);
  script.define(R"(
    def forward(self, x):
        f = x.flatten(1)
        return {"logits": f.mm(self.w.t()), "flat": f}
  )");
  script.save(dir.file("teacher.pt"));
  const std::string teacher = "{torchscript: " + dir.file("teacher.pt") + "}";
  auto e = build_experiment(recipe_node(small_recipe(
      dir.file("run"),
      kd_entry(teacher, "      - {loss: kd}\n      - {loss: similarity, student: fc1, teacher: flat, weight: 10}\n"),
      "lenet300", 256, 0.5)));
  TrainOptions o;
  o.run_dir = dir.file("run");
  o.quiet = true;
  train(e, o);
  auto& d = distillation_of(e);
  ASSERT_EQ(d.last_terms().size(), 2u);
  EXPECT_EQ(d.last_terms()[1].first, "similarity");
  EXPECT_GT(d.last_terms()[1].second, 0.0);
  EXPECT_EQ(d.teacher().tap_names(), (std::vector<std::string>{"logits", "flat"}));

  auto error = error_of([&] {
    build_experiment(recipe_node(small_recipe(
        dir.file("bad"), kd_entry(teacher, "      - {loss: hint, student: fc1, teacher: hidden}\n"), "lenet300", 256, 1)));
  });
  EXPECT_NE(error.find("no tap 'hidden'; its taps: logits, flat"), std::string::npos) << error;
  // A Shrink checkpoint is not a TorchScript model.
  error = error_of([&] {
    build_experiment(recipe_node(small_recipe(
        dir.file("bad2"), kd_entry("{torchscript: " + dir.file("run/last.pt") + "}", "      - {loss: kd}\n"),
        "lenet300", 256, 1)));
  });
  EXPECT_NE(error.find("no forward method"), std::string::npos) << error;
}

TEST(Distillation, BenchTimesTheTeacherForwardApart) {
  TempDir dir;
  auto e = build_experiment(recipe_node(
      small_recipe(dir.file("run"), kd_entry(kLenetTeacher, "      - {loss: kd}\n"), "lenet5", 256, 1)));
  auto r = run_bench(e, 2, 2);
  ASSERT_EQ(r.parts.size(), 1u);
  EXPECT_EQ(r.parts[0].first, "teacher forward");
  EXPECT_EQ(r.parts[0].second.repeats, 2);
  EXPECT_NE(bench_text(r).find("of which teacher forward"), std::string::npos);
}
