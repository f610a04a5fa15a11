// User callbacks registered with the macro are built from the recipe and see every hook in order.
#include <gtest/gtest.h>

#include "shrink/train/trainer.h"
#include "train_test_util.h"

using namespace shrink;

namespace {

std::vector<std::string> g_events;

struct Recorder : Callback {
  explicit Recorder(std::string tag) : tag_(std::move(tag)) {}
  std::string name() const override { return "recorder"; }
  void prepare_model(TrainContext&) override { g_events.push_back(tag_ + ":prepare"); }
  void on_train_begin(TrainContext&) override { g_events.push_back(tag_ + ":train_begin"); }
  void on_epoch_begin(TrainContext& c) override { g_events.push_back(tag_ + ":epoch_begin" + std::to_string(c.epoch)); }
  void on_step_begin(TrainContext& c) override { g_events.push_back(tag_ + ":step_begin" + std::to_string(c.step)); }
  torch::Tensor on_loss(TrainContext&, torch::Tensor loss) override {
    g_events.push_back(tag_ + ":loss");
    return loss;
  }
  void on_before_optimizer_step(TrainContext&) override { g_events.push_back(tag_ + ":before_opt"); }
  void on_after_optimizer_step(TrainContext&) override { g_events.push_back(tag_ + ":after_opt"); }
  void on_step_end(TrainContext&) override { g_events.push_back(tag_ + ":step_end"); }
  void on_epoch_end(TrainContext& c) override {
    g_events.push_back(tag_ + ":epoch_end");
    c.metrics["recorded_" + tag_] = 1.0;
  }
  void on_train_end(TrainContext&) override { g_events.push_back(tag_ + ":train_end"); }
  std::string tag_;
};

}  // namespace

SHRINK_REGISTER_CALLBACK("recorder",
                         [](const ConfigNode& entry) -> CallbackPtr {
                           entry.check_keys({"name", "tag"});
                           return std::make_unique<Recorder>(entry["tag"].as<std::string>());
                         },
                         "records hook calls (test)");

TEST(CallbackRegistry, MacroRegisteredCallbackRunsEveryHookInRecipeOrder) {
  test::TempDir tmp;
  auto yaml = test::small_recipe(tmp.file("run"), "callbacks:\n  - {name: recorder, tag: a}\n  - {name: recorder, tag: b}\n",
                                 "lenet300", 128, 1);
  g_events.clear();
  auto e = build_experiment(test::recipe_node(yaml));
  TrainOptions options;
  options.run_dir = tmp.file("run");
  options.quiet = true;
  train(e, options);
  // 128 / 64 = 2 steps.
  std::vector<std::string> step0 = {"a:step_begin0", "b:step_begin0", "a:loss",      "b:loss",
                                    "a:before_opt",  "b:before_opt",  "a:after_opt", "b:after_opt",
                                    "a:step_end",    "b:step_end"};
  std::vector<std::string> expected = {"a:prepare", "b:prepare", "a:train_begin", "b:train_begin", "a:epoch_begin0",
                                       "b:epoch_begin0"};
  expected.insert(expected.end(), step0.begin(), step0.end());
  for (auto s : step0) expected.push_back(s == "a:step_begin0" ? "a:step_begin1" : s == "b:step_begin0" ? "b:step_begin1" : s);
  for (auto s : {"a:epoch_end", "b:epoch_end", "a:train_end", "b:train_end"}) expected.push_back(s);
  EXPECT_EQ(g_events, expected);
  auto csv = test::read_file(tmp.file("run") + "/metrics.csv");
  EXPECT_NE(csv.find("recorded_a,recorded_b"), std::string::npos) << csv;
}

TEST(CallbackRegistry, UnknownCallbackListsRegistered) {
  auto yaml = test::small_recipe("unused", "callbacks:\n  - {name: recordr}\n");
  try {
    build_experiment(test::recipe_node(yaml), DataNeeds::TestOnly);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown callback 'recordr' (did you mean 'recorder'?); registered: recorder"),
              std::string::npos)
        << e.what();
  }
}
