#include "shrink/models/weights.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config_test_util.h"
#include "test_util.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/models/model.h"

namespace {

using shrink::ConfigError;
using shrink::ConfigNode;
using shrink::UserError;
using shrink::WeightsFormat;
using shrink::WeightsSpec;
using shrink::test::TempDir;

const shrink::DataInfo kMnist{{1, 28, 28}, 10};

/// The `model:` section of a recipe written as YAML text.
ConfigNode model_section(const std::string& yaml) {
  return ConfigNode(shrink::read_yaml_string(yaml, "recipe.yaml"), "")["model"];
}

shrink::ModelPtr lenet5(uint64_t seed, const std::string& num_classes = "10") {
  torch::manual_seed(seed);
  return shrink::build_model(model_section("model: {name: lenet5, num_classes: " + num_classes + "}\n"), kMnist);
}

/// A file laid out like save_checkpoint writes it (src/train/checkpoint.cpp).
void save_checkpoint_like(torch::nn::Module& model, const std::string& path) {
  torch::serialize::OutputArchive archive, model_archive;
  archive.write("format", c10::IValue(static_cast<int64_t>(1)));
  archive.write("recipe", c10::IValue(std::string("model: {name: lenet5}\n")));
  model.save(model_archive);
  archive.write("model", model_archive);
  archive.save_to(path);
}

/// lenet5 under a "module." prefix, as DataParallel names it.
struct Wrapped : torch::nn::Module {
  explicit Wrapped(shrink::ModelPtr inner) { register_module("module", std::move(inner)); }
};

const torch::Tensor& input() {
  static const torch::Tensor x = [] {
    torch::manual_seed(99);
    return torch::randn({2, 1, 28, 28});
  }();
  return x;
}

torch::Tensor param(const shrink::ModelPtr& model, const std::string& name) {
  return model->named_parameters()[name].detach().clone();
}

std::string load_error(torch::nn::Module& model, const WeightsSpec& spec) {
  try {
    shrink::load_weights(model, spec);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Weights, CheckpointRoundTripFromYaml) {
  TempDir dir;
  auto source = lenet5(1);
  save_checkpoint_like(*source, dir.file("ckpt.pt"));
  auto fresh = lenet5(2);
  ASSERT_FALSE(torch::allclose(fresh->forward(input()), source->forward(input())));

  torch::manual_seed(2);
  auto loaded = shrink::build_model(model_section("model:\n  name: lenet5\n  weights: " + dir.file("ckpt.pt") + "\n"),
                                    kMnist);
  EXPECT_TRUE(torch::equal(loaded->forward(input()), source->forward(input())));

  WeightsSpec spec;
  spec.path = dir.file("ckpt.pt");
  auto report = shrink::load_weights(*fresh, spec);
  EXPECT_EQ(report.format, WeightsFormat::Checkpoint);
  EXPECT_EQ(report.loaded.size(), 8u);
  EXPECT_TRUE(report.excluded.empty() && report.missing.empty() && report.unused.empty());
  EXPECT_TRUE(torch::equal(fresh->forward(input()), source->forward(input())));
  EXPECT_TRUE(contains(report.summary(), "loaded 8 tensors")) << report.summary();

  // The same file read as TorchScript shows the archive's own names.
  auto tensors = shrink::read_weights_file(spec.path, WeightsFormat::TorchScript);
  ASSERT_FALSE(tensors.empty());
  EXPECT_EQ(tensors.front().first, "model.conv1.weight");
}

TEST(Weights, LibTorchSaveIsTorchScript) {
  TempDir dir;
  auto source = lenet5(3);
  torch::save(std::static_pointer_cast<torch::nn::Module>(source), dir.file("saved.pt"));
  auto fresh = lenet5(4);
  WeightsSpec spec;
  spec.path = dir.file("saved.pt");
  auto report = shrink::load_weights(*fresh, spec);
  EXPECT_EQ(report.format, WeightsFormat::TorchScript);
  EXPECT_TRUE(torch::equal(fresh->forward(input()), source->forward(input())));
  spec.format = WeightsFormat::Checkpoint;
  EXPECT_TRUE(contains(load_error(*fresh, spec), "without a Shrink checkpoint's")) << load_error(*fresh, spec);
}

TEST(Weights, RenameAndExclude) {
  TempDir dir;
  auto source = lenet5(5, "7");  // another classifier: fc2 is 7x500
  Wrapped wrapped(source);
  save_checkpoint_like(wrapped, dir.file("wrapped.pt"));

  auto target = lenet5(6);
  const auto fc2_before = param(target, "fc2.weight");
  auto spec = shrink::parse_weights_spec(model_section(
      "model:\n  weights:\n    path: " + dir.file("wrapped.pt") +
      "\n    format: checkpoint\n    exclude: [\"fc2.*\"]\n    rename: {\"module.\": \"\"}\n")["weights"]);
  auto report = shrink::load_weights(*target, spec);
  EXPECT_EQ(report.loaded, (std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                     "fc1.weight", "fc1.bias"}));
  EXPECT_EQ(report.excluded, (std::vector<std::string>{"fc2.weight", "fc2.bias"}));
  EXPECT_EQ(report.unused, (std::vector<std::string>{"fc2.weight", "fc2.bias"}));
  for (const auto& name : report.loaded) EXPECT_TRUE(torch::equal(param(target, name), param(source, name))) << name;
  EXPECT_TRUE(torch::equal(param(target, "fc2.weight"), fc2_before));

  // Without rename nothing matches; the message suggests the rename.
  spec.rename.clear();
  auto message = load_error(*target, spec);
  EXPECT_TRUE(contains(message, "model tensors not in the file (6): conv1.weight")) << message;
  EXPECT_TRUE(contains(message, "try rename: {\"module.\": \"\"}")) << message;
}

TEST(Weights, ShapeMismatchListsNameAndBothShapes) {
  TempDir dir;
  auto seven = lenet5(7, "7");
  save_checkpoint_like(*seven, dir.file("seven.pt"));
  auto target = lenet5(8);
  const auto before = param(target, "conv1.weight");
  WeightsSpec spec;
  spec.path = dir.file("seven.pt");
  auto message = load_error(*target, spec);
  EXPECT_TRUE(contains(message, "weights file '" + spec.path + "' (checkpoint) does not fit the model")) << message;
  EXPECT_TRUE(contains(message, "shapes differ (2): fc2.weight: model 10x500 vs file 7x500, fc2.bias: model 10 vs "
                                "file 7"))
      << message;
  EXPECT_TRUE(torch::equal(param(target, "conv1.weight"), before)) << "nothing is copied on error";

  // Through the recipe: a ConfigError at model.weights.
  try {
    shrink::build_model(model_section("model:\n  name: lenet5\n  weights: " + spec.path + "\n"), kMnist);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "model.weights");
    EXPECT_TRUE(contains(e.what(), "recipe.yaml:3:12: model.weights: weights file")) << e.what();
    EXPECT_TRUE(contains(e.what(), "fc2.weight: model 10x500 vs file 7x500")) << e.what();
  }
}

TEST(Weights, StrictMissingAndUnused) {
  TempDir dir;
  // A file with conv1 only, plus a tensor the model does not have.
  struct Partial : torch::nn::Module {
    Partial() {
      register_module("conv1", torch::nn::Conv2d(1, 20, 5));
      register_buffer("extra", torch::ones({3}));
    }
  } partial;
  save_checkpoint_like(partial, dir.file("partial.pt"));
  auto target = lenet5(9);
  WeightsSpec spec;
  spec.path = dir.file("partial.pt");
  auto message = load_error(*target, spec);
  EXPECT_TRUE(contains(message, "model tensors not in the file (6): conv2.weight, conv2.bias, fc1.weight, fc1.bias, "
                                "fc2.weight, fc2.bias"))
      << message;
  EXPECT_TRUE(contains(message, "file tensors not in the model (1): extra")) << message;

  spec.strict = false;
  auto report = shrink::load_weights(*target, spec);
  EXPECT_EQ(report.loaded, (std::vector<std::string>{"conv1.weight", "conv1.bias"}));
  EXPECT_EQ(report.missing.size(), 6u);
  EXPECT_EQ(report.unused, (std::vector<std::string>{"extra"}));
  EXPECT_TRUE(torch::equal(param(target, "conv1.weight"), partial.named_parameters()["conv1.weight"]));
}

TEST(Weights, LongListsAreCut) {
  TempDir dir;
  struct Many : torch::nn::Module {
    Many() {
      for (int i = 0; i < 25; ++i) register_parameter("p" + std::to_string(i), torch::zeros({1}));
    }
  } many;
  struct One : torch::nn::Module {
    One() { register_parameter("q", torch::zeros({1})); }
  } one;
  save_checkpoint_like(one, dir.file("one.pt"));
  WeightsSpec spec;
  spec.path = dir.file("one.pt");
  auto message = load_error(many, spec);
  EXPECT_TRUE(contains(message, "model tensors not in the file (25): p0, p1,")) << message;
  EXPECT_TRUE(contains(message, "p19, ... and 5 more")) << message;
  EXPECT_FALSE(contains(message, "p20")) << message;
}

TEST(Weights, FileErrors) {
  TempDir dir;
  auto model = lenet5(10);
  WeightsSpec spec;
  spec.path = dir.file("nope.pt");
  EXPECT_TRUE(contains(load_error(*model, spec), "weights file '" + spec.path + "' does not exist"));

  shrink::test::write_file(dir.file("junk.pt"), "not a model");
  spec.path = dir.file("junk.pt");
  auto message = load_error(*model, spec);
  EXPECT_TRUE(contains(message, "cannot read weights file '" + spec.path +
                                    "' as a Shrink checkpoint, TorchScript module or state_dict"))
      << message;
  EXPECT_TRUE(contains(message, "\n  checkpoint/torchscript: ")) << message;
  EXPECT_TRUE(contains(message, "\n  state_dict: ")) << message;
  spec.format = WeightsFormat::StateDict;
  message = load_error(*model, spec);
  EXPECT_TRUE(contains(message, "as format state_dict")) << message;
  EXPECT_FALSE(contains(message, "torchscript")) << message;

  // A TorchScript file is not a state_dict.
  save_checkpoint_like(*model, dir.file("ckpt.pt"));
  spec.path = dir.file("ckpt.pt");
  message = load_error(*model, spec);
  EXPECT_TRUE(contains(message, "state_dict: ")) << message;
}

TEST(Weights, RecipeErrors) {
  auto error = [](const std::string& weights_yaml) {
    return shrink::test::error_of(
        [&] { shrink::build_model(model_section("model:\n  name: lenet5\n  weights:" + weights_yaml), kMnist); });
  };
  EXPECT_TRUE(contains(error(" {path: a.pt, formt: auto}\n"), "formt")) << error(" {path: a.pt, formt: auto}\n");
  auto bad_format = error(" {path: a.pt, format: onnx}\n");
  EXPECT_TRUE(contains(bad_format, "model.weights.format: unknown format 'onnx'")) << bad_format;
  auto bad_rename = error(" {path: a.pt, rename: [a, b]}\n");
  EXPECT_TRUE(contains(bad_rename, "model.weights.rename: expected a map")) << bad_rename;
  auto no_path = error(" {format: auto}\n");
  EXPECT_TRUE(contains(no_path, "path")) << no_path;
  auto missing = error(" does/not/exist.pt\n");
  EXPECT_TRUE(contains(missing, "recipe.yaml:3:12: model.weights: weights file 'does/not/exist.pt' does not exist"))
      << missing;
  // null: no weights
  EXPECT_NO_THROW(shrink::build_model(model_section("model:\n  name: lenet5\n  weights:\n"), kMnist));

  auto spec = shrink::parse_weights_spec(model_section("model:\n  weights:\n    path: w.pt\n    rename: {\"\": "
                                                       "\"backbone.\", \"module.\": \"\"}\n    strict: false\n")["weights"]);
  EXPECT_EQ(spec.path, "w.pt");
  EXPECT_EQ(spec.format, WeightsFormat::Auto);
  EXPECT_FALSE(spec.strict);
  ASSERT_EQ(spec.rename.size(), 2u);
  EXPECT_EQ(spec.rename[0], (std::pair<std::string, std::string>{"", "backbone."}));
  EXPECT_EQ(spec.rename[1], (std::pair<std::string, std::string>{"module.", ""}));
}

// ---- files written by PyTorch (needs python3 with torch) -----------------------------------

const char* kPythonScript = R"PY(
import sys
try:
    import torch
except ImportError:
    sys.exit(77)
out = sys.argv[1]

class LeNet5(torch.nn.Module):  # same names and shapes as Shrink's lenet5 on 1x28x28
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 20, 5)
        self.conv2 = torch.nn.Conv2d(20, 50, 5)
        self.fc1 = torch.nn.Linear(800, 500)
        self.fc2 = torch.nn.Linear(500, 10)

    def forward(self, x):
        x = torch.max_pool2d(self.conv1(x), 2)
        x = torch.max_pool2d(self.conv2(x), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

class Tensors(torch.nn.Module):
    def __init__(self, x, y):
        super().__init__()
        self.register_buffer("input", x)
        self.register_buffer("output", y)

    def forward(self):
        return self.output

class Many(torch.nn.Module):  # enough tensors for 4-byte pickle memo indices
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(40)])
        self.bn = torch.nn.BatchNorm1d(2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.bn(x)

torch.manual_seed(123)
m = LeNet5().eval()
x = torch.randn(3, 1, 28, 28)
with torch.no_grad():
    y = m(x)
torch.jit.script(m).save(out + "/lenet5_script.pt")
torch.jit.script(Tensors(x, y)).save(out + "/io.pt")
torch.save(m.state_dict(), out + "/lenet5_state_dict.pt")
torch.save({"epoch": 3, "state_dict": dict(m.state_dict())}, out + "/nested.pt")
torch.save({"epoch": 3, "state_dict": m.state_dict()}, out + "/nested_ordered.pt")
torch.save(m.state_dict(), out + "/legacy.pt", _use_new_zipfile_serialization=False)
many = Many()
with torch.no_grad():
    many.bn.running_mean.fill_(0.5)
    many.bn.num_batches_tracked.fill_(7)
torch.jit.script(many).save(out + "/many_script.pt")
torch.save(many.state_dict(), out + "/many_state_dict.pt")
)PY";

constexpr int kNoTorch = 77;  // the script's exit status when `import torch` fails

class WeightsFromPyTorch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    shrink::test::write_file(dir_->file("make.py"), kPythonScript);
    // The first python3 that imports torch runs the script (python3 on PATH may be another one).
    for (const char* python : {"python3", "/usr/bin/python3"}) {
      auto r = shrink::test::run_command(std::string(python) + " " + dir_->file("make.py") + " " +
                                         dir_->path().string());
      if (r.status == kNoTorch || r.status == 127) continue;
      python_ = python;
      script_status_ = r.status;
      script_output_ = r.output;
      break;
    }
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override {
    if (python_.empty()) GTEST_SKIP() << "python3 with torch is not installed (apt-get install python3-torch)";
    ASSERT_EQ(script_status_, 0) << script_output_;
  }
  static std::string file(const std::string& name) { return dir_->file(name); }

  static std::string python_;
  static std::unique_ptr<TempDir> dir_;
  static int script_status_;
  static std::string script_output_;
};
std::string WeightsFromPyTorch::python_;
std::unique_ptr<TempDir> WeightsFromPyTorch::dir_;
int WeightsFromPyTorch::script_status_ = -1;
std::string WeightsFromPyTorch::script_output_;

TEST_F(WeightsFromPyTorch, TorchScriptLeNet5GivesPyTorchOutputs) {
  auto io = torch::jit::load(file("io.pt"));
  const auto x = io.attr("input").toTensor(), y = io.attr("output").toTensor();

  auto model = lenet5(11);
  WeightsSpec spec;
  spec.path = file("lenet5_script.pt");
  auto report = shrink::load_weights(*model, spec);
  EXPECT_EQ(report.format, WeightsFormat::TorchScript);
  EXPECT_EQ(report.loaded.size(), 8u);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(model->forward(x), y, 1e-4, 1e-5)) << (model->forward(x) - y).abs().max();
}

TEST_F(WeightsFromPyTorch, StateDictLeNet5GivesPyTorchOutputs) {
  auto io = torch::jit::load(file("io.pt"));
  const auto x = io.attr("input").toTensor(), y = io.attr("output").toTensor();
  auto model = lenet5(12);
  torch::manual_seed(12);
  auto from_yaml = shrink::build_model(
      model_section("model:\n  name: lenet5\n  weights: {path: " + file("lenet5_state_dict.pt") + "}\n"), kMnist);
  WeightsSpec spec;
  spec.path = file("lenet5_state_dict.pt");
  spec.format = WeightsFormat::StateDict;
  auto report = shrink::load_weights(*model, spec);
  EXPECT_EQ(report.format, WeightsFormat::StateDict);
  EXPECT_EQ(report.loaded.size(), 8u);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(model->forward(x), y, 1e-4, 1e-5));
  EXPECT_TRUE(torch::equal(from_yaml->forward(x), model->forward(x)));

  spec.path = file("nested.pt");
  auto message = load_error(*model, spec);
  EXPECT_TRUE(contains(message, "not tensors: epoch (int), state_dict (dict)")) << message;
  spec.path = file("nested_ordered.pt");
  message = load_error(*model, spec);
  EXPECT_TRUE(contains(message, "an OrderedDict saved in an unexpected layout")) << message;
  spec.path = file("legacy.pt");
  message = load_error(*model, spec);
  EXPECT_TRUE(contains(message, "the legacy torch.save format")) << message;
}

TEST_F(WeightsFromPyTorch, StateDictMatchesTorchScriptOnManyTensors) {
  auto from_script = shrink::read_weights_file(file("many_script.pt"), WeightsFormat::Auto);
  WeightsFormat format = WeightsFormat::Auto;
  auto from_state_dict = shrink::read_weights_file(file("many_state_dict.pt"), WeightsFormat::Auto, &format);
  EXPECT_EQ(format, WeightsFormat::StateDict);
  ASSERT_EQ(from_state_dict.size(), 85u);  // 40 x (weight, bias) + bn weight, bias, mean, var, count
  ASSERT_EQ(from_script.size(), from_state_dict.size());
  std::map<std::string, torch::Tensor> by_name(from_script.begin(), from_script.end());
  for (const auto& [name, tensor] : from_state_dict) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_TRUE(torch::equal(by_name[name], tensor)) << name;
  }
  EXPECT_EQ(from_state_dict[0].first, "layers.0.weight");
  EXPECT_EQ(from_state_dict.back().first, "bn.num_batches_tracked");
  EXPECT_EQ(from_state_dict.back().second.item<int64_t>(), 7);
}

}  // namespace
