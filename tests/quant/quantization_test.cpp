// The `quantization` method: recipe errors at their keys, which layers it quantizes and which
// BatchNorms it folds, BinaryConnect clipping, stored bits in the summary, and tiny runs that
// learn, freeze observers and BatchNorms, resume exactly and reload from their checkpoint.
#include <gtest/gtest.h>

#include <map>

#include "dynamic/dynamic_test_util.h"
#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/quant/quantization.h"
#include "shrink/report/summary.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/experiment.h"

using namespace shrink;
using shrink::quant::Quantization;
using shrink::test::model_named;
using shrink::test::snapshot;

namespace {

ConfigNode entry(const std::string& yaml) {
  return ConfigNode(read_yaml_string("method: quantization\n" + yaml, "recipe.yaml"), "compression[0]");
}

std::unique_ptr<Quantization> prepared(const std::string& yaml, const ModelPtr& model) {
  return test::prepared_method<Quantization>("quantization", yaml, model);
}

std::string tiny_recipe(const std::string& dir, const std::string& quant) {
  return "name: qat\nseed: 4\nthreads: 2\noutput: " + dir +
         "\ndata: {name: synthetic, channels: 3, height: 8, width: 8, num_classes: 4, train_size: 256, "
         "test_size: 128, noise: 0.3}\nmodel: {name: resnet20}\n"
         "train:\n  epochs: 2\n  batch_size: 32\n  eval_batch_size: 64\n  progress: none\n"
         "  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"
         "compression:\n  - " + quant + "\n";
}

}  // namespace

TEST(QuantizationRecipe, ErrorsNameTheFileLineAndKey) {
  auto model = model_named("resnet20");
  auto expect = [&](const std::string& yaml, const std::string& key_path, const std::string& needle) {
    test::expect_recipe_error([&] { prepared(yaml, model); }, yaml, key_path, needle);
  };
  expect("weights: {bits: 9}\n", "compression[0].weights.bits", "uniform quantization takes 2 to 8 or 16 bits (got 9)");
  expect("weights: {quantizer: lsqq}\n", "compression[0].weights.quantizer", "did you mean");
  expect("weights: {quantizer: pact}\n", "compression[0].weights.quantizer", "'pact' quantizes activations");
  expect("inputs: {quantizer: bwn}\n", "compression[0].inputs.quantizer", "'bwn' quantizes weights");
  expect("inputs: {per_channel: true}\n", "compression[0].inputs.per_channel", "activations are quantized per tensor");
  expect("weights: {bitz: 4}\n", "compression[0].weights.bitz", "did you mean 'bits'");
  expect("weights: {range: avg}\n", "compression[0].weights.range", "must be one of minmax");
  expect("fold_bn: true\n", "compression[0]", "needs at least one of weights, inputs, outputs");
  expect("weights: {}\nfreeze_bn_epoch: -2\n", "compression[0].freeze_bn_epoch", "must be >= 0");
  expect("weights: {}\nfold_bm: true\n", "compression[0].fold_bm", "did you mean 'fold_bn'");
  expect("weights: {}\ntargets: ['layer1.0.bn1']\n", "compression[0].targets", "matches no Shrink Conv2d or Linear");
  expect("weights: {}\nend_epoch: 3\n", "compression[0].end_epoch", "takes start_epoch or start_step only");
  expect("weights: {}\nfreeze_observers_epoch: 0\n", "compression[0].freeze_observers_epoch",
         "must be after the quantizers start (epoch 0)");
  expect("weights: {}\nstart_epoch: 2\nfreeze_observers_epoch: 1\n", "compression[0].freeze_observers_epoch",
         "must be after the quantizers start (epoch 2)");
  // fixed_point alone gets Gupta et al.'s 16-bit word.
  EXPECT_EQ(Quantization::parse_options(entry("weights: {quantizer: fixed_point}\n")).weights->bits, 16);
}

TEST(QuantizationLayers, TargetsConvAndLinearAndFoldsTheBatchNormAfterEachConv) {
  auto model = model_named("resnet20");
  auto q = prepared("weights: {per_channel: true}\ninputs: {}\nfold_bn: true\n", model);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->layers().size(), 20u);  // 19 convs + fc
  std::map<std::string, std::string> folded;
  for (const auto& layer : q->layers()) {
    if (!layer.bn) continue;
    for (const auto& item : model->named_modules())
      if (item.value().get() == layer.bn.get()) folded[layer.path] = item.key();
  }
  EXPECT_EQ(folded.size(), 19u);
  EXPECT_EQ(folded["conv1"], "bn1");
  EXPECT_EQ(folded["layer1.0.conv2"], "layer1.0.bn2");
  EXPECT_EQ(folded["layer3.2.conv1"], "layer3.2.bn1");
  auto names = model->named_buffers();
  EXPECT_TRUE(names.contains("layer2.1.conv1.weight_quantizer.scale"));
  EXPECT_TRUE(names.contains("fc.input_quantizer.zero_point"));
  // Idempotent: preparing again attaches nothing new.
  TrainContext ctx;
  q->prepare_model(ctx);
  EXPECT_EQ(model->named_buffers().size(), names.size());

  // Pre-activation blocks normalize conv1's output with bn2; conv2 feeds the addition.
  auto preact = model_named("preact_resnet20");
  auto p = prepared("weights: {}\nfold_bn: true\ntargets: ['layer1.0.*']\n", preact);
  ASSERT_EQ(p->layers().size(), 2u);
  EXPECT_TRUE(p->layers()[0].bn);
  EXPECT_EQ(p->layers()[0].bn->options.num_features(), p->layers()[0].conv->options.out_channels());
  EXPECT_FALSE(p->layers()[1].bn);

  // Sequential VGG: features.i -> features.(i + 1).
  auto vgg = model_named("vgg11_bn_cifar", {3, 32, 32});
  auto v = prepared("weights: {}\nfold_bn: true\ntargets: ['features.0']\n", vgg);
  ASSERT_EQ(v->layers().size(), 1u);
  EXPECT_TRUE(v->layers()[0].bn);
}

TEST(QuantizationSchedule, EnablesFreezesObserversAndBatchNormsByStep) {
  auto model = model_named("resnet20");
  auto q = prepared("weights: {}\ninputs: {}\nstart_epoch: 1\nfreeze_observers_epoch: 2\nfreeze_bn_epoch: 2.5\n", model);
  model->train();
  TrainContext ctx;
  ctx.model = model;
  ctx.steps_per_epoch = 10;
  ctx.total_steps = 40;
  auto* first = quant::as_quantizer(q->layers()[0].conv->quantizers().input);
  auto* bn = model->named_modules()["layer1.0.bn1"].get();
  for (int64_t step : {0, 9, 10, 19, 20, 24, 25, 39}) {
    ctx.step = step;
    q->on_step_begin(ctx);
    EXPECT_EQ(first->enabled(), step >= 10) << step;
    EXPECT_EQ(first->observing(), step < 20) << step;
    EXPECT_EQ(bn->is_training(), step < 25) << step;
  }
}

TEST(QuantizationSummary, ReportsStoredBitsPerLayer) {
  auto model = model_named("lenet5", {1, 28, 28});
  prepared("weights: {quantizer: bwn, bits: 1}\ntargets: ['conv*']\n", model);
  prepared("weights: {bits: 4, per_channel: true}\ntargets: ['fc*']\n", model);
  auto s = summarize(model, {1, 28, 28});
  std::map<std::string, LayerSummary> by_name;
  for (const auto& l : s.layers) by_name[l.name] = l;
  const auto& conv1 = by_name.at("conv1");
  const double conv1_weights = double(conv1.parameters - 20);  // 20 biases
  EXPECT_NEAR(conv1.bits_per_weight, (conv1_weights + 32.0 * 20) / conv1_weights, 1e-9);
  const auto& fc1 = by_name.at("fc1");
  const double fc1_out = 500;
  const double fc1_weights = double(fc1.parameters) - fc1_out;
  EXPECT_NEAR(fc1.bits_per_weight, (4.0 * fc1_weights + 32.0 * fc1_out) / fc1_weights, 1e-9);
}

TEST(QuantizationRecipe, ALayerQuantizedTwiceIsAnError) {
  auto model = model_named("resnet20");
  prepared("weights: {}\ntargets: ['layer1.*']\n", model);
  test::expect_recipe_error([&] { prepared("weights: {bits: 4}\ntargets: ['layer1.0.conv1']\n", model); },
                            "second entry", "compression[0].targets",
                            "targets layer1.0.conv1, which an earlier quantization entry already quantizes");
}

namespace {

/// Trains `quant` on the tiny ResNet-20 fully, and interrupted at step 11 then resumed: the
/// same parameters and buffers. Returns the full run.
test::Run train_and_resume(test::TempDir& tmp, const std::string& quant) {
  const auto dir = tmp.file("full");
  auto full = test::train_run(tiny_recipe(dir, quant), dir);
  const auto split_dir = tmp.file("split");
  EXPECT_TRUE(test::train_run(tiny_recipe(split_dir, quant), split_dir, false, 11).result.interrupted);
  auto resumed = test::train_run(tiny_recipe(split_dir, quant), split_dir, true);
  const auto a = snapshot(*full.e.model), b = snapshot(*resumed.e.model);
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [key, value] : a) EXPECT_TRUE(b.count(key) && torch::equal(value, b.at(key))) << key;
  return full;
}

}  // namespace

TEST(QuantizationTraining, LsqAndPactLearnTheirStepsAndResumeExactly) {
  test::TempDir tmp;
  auto full = train_and_resume(tmp, "{method: quantization, weights: {quantizer: lsq, bits: 4, per_channel: true}, "
                                    "inputs: {quantizer: pact, bits: 4, init_alpha: 4}, targets: ['layer*']}");
  EXPECT_GT(full.result.final_eval.top1, 40.0) << "chance is 25%";
  auto named = full.e.model->named_parameters();
  ASSERT_TRUE(named.contains("layer1.0.conv1.weight_quantizer.step"));
  EXPECT_TRUE(named.contains("layer1.0.conv1.input_quantizer.alpha"));
  EXPECT_NE(named["layer1.0.conv1.input_quantizer.alpha"].item<double>(), 4.0) << "alpha was not trained";
  EXPECT_EQ(full.e.model->named_buffers()["layer1.0.conv1.weight_quantizer.initialized"].item<int64_t>(), 1);
}

TEST(QuantizationTraining, TinyResNet20W4A8LearnsFreezesAndResumesExactly) {
  test::TempDir tmp;
  const std::string quant =
      "{method: quantization, weights: {bits: 4, per_channel: true}, inputs: {bits: 8}, fold_bn: true, "
      "freeze_observers_epoch: 1}";
  // Interrupted mid-epoch 2 (after the observer freeze) and resumed: same weights and ranges.
  auto full = train_and_resume(tmp, quant);
  EXPECT_GT(full.result.final_eval.top1, 40.0) << "chance is 25%";
  std::printf("tiny QAT run: top1 %.1f%%\n", full.result.final_eval.top1);
  auto* q = dynamic_cast<Quantization*>(full.e.methods.at(0).get());
  ASSERT_TRUE(q);
  // Observers froze after epoch 1 (8 steps): ranges were observed 8 times.
  EXPECT_EQ(full.e.model->named_buffers()["layer1.0.conv1.input_quantizer.observed"].item<int64_t>(), 8);
  EXPECT_EQ(full.e.model->named_buffers()["layer1.0.conv1.weight_quantizer.observed"].item<int64_t>(), 8);
  // Weights take at most 16 values per output channel.
  {
    auto* wq = q->layers()[3].conv->quantizers().weight;
    torch::NoGradGuard no_grad;
    full.e.model->eval();
    auto wquant = wq->quantize(q->layers()[3].conv->folded_weight());
    for (int64_t c = 0; c < wquant.size(0); ++c) EXPECT_LE(std::get<0>(torch::_unique(wquant[c])).numel(), 16);
  }

  // Rebuilt from the checkpoint as `shrink eval` does: the same quantized model, and evaluating
  // changes nothing (ranges move only in training).
  const auto dir = tmp.file("full");
  auto e = build_experiment(test::recipe_node(read_checkpoint_recipe(dir + "/last.pt")), DataNeeds::TestOnly);
  load_checkpoint_methods(dir + "/last.pt", e);
  prepare_experiment(e);
  load_checkpoint_model(dir + "/last.pt", e);
  const auto eval = evaluate(e.model, e.test_data, 64, e.device);
  EXPECT_DOUBLE_EQ(eval.top1, full.result.final_eval.top1);
  const auto a = snapshot(*full.e.model), rebuilt = snapshot(*e.model);
  for (const auto& [key, value] : a) EXPECT_TRUE(torch::equal(value, rebuilt.at(key))) << key;
}

TEST(QuantizationTraining, BinaryConnectWeightsStayClippedAndBinary) {
  test::TempDir tmp;
  const auto dir = tmp.file("bc");
  auto run = test::train_run(
      tiny_recipe(dir, "{method: quantization, weights: {quantizer: binary, bits: 1}, targets: ['layer*'], "
                       "exclude: ['*downsample*']}"),
      dir);
  EXPECT_GT(run.result.final_eval.top1, 30.0) << "chance is 25%";
  auto* q = dynamic_cast<Quantization*>(run.e.methods.at(0).get());
  for (const auto& layer : q->layers()) {
    EXPECT_LE(layer.conv->weight.abs().max().item<double>(), 1.0) << layer.path;
    auto values = std::get<0>(torch::_unique(layer.conv->quantizers().weight->quantize(layer.conv->weight.detach())));
    EXPECT_EQ(values.numel(), 2) << layer.path;
  }
}
