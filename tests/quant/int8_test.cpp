// Int8 kernels against the fake-quantized layers they replace (conv, conv with a folded
// BatchNorm, linear: within one output step), the int8 model file (export -> load gives the
// kernels' outputs; corrupt and truncated files are named errors) and layers int8 refuses.
#include <gtest/gtest.h>

#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/quant/int8_model.h"
#include "shrink/quant/quantizers.h"
#include "shrink/train/checkpoint.h"
#include "test_util.h"

using namespace shrink;
using namespace shrink::quant;
using shrink::test::TempDir;

namespace {

QuantizerOptions weights8() {
  QuantizerOptions o;
  o.bits = 8;
  o.symmetric = true;
  o.per_channel = true;
  return o;
}

QuantizerOptions inputs8(bool symmetric = false) {
  QuantizerOptions o;
  o.bits = 8;
  o.symmetric = symmetric;
  o.range = "moving_average";
  return o;
}

nn::LayerQuantizers layer_quant(int64_t channels, QuantizerOptions w = weights8(), QuantizerOptions in = inputs8()) {
  nn::LayerQuantizers q;
  q.weight = make_quantizer_factory(w, QuantizerRole::weight, channels);
  q.input = make_quantizer_factory(in, QuantizerRole::activation);
  return q;
}

/// Runs a few training-mode forwards so the observers have ranges, then switches to eval.
template <class Layer>
void observe(Layer& layer, const std::vector<torch::Tensor>& batches) {
  torch::NoGradGuard g;
  layer->train();
  for (const auto& x : batches) layer->forward(x);
  layer->eval();
}

OutputRange range_of(const torch::Tensor& y) { return {y.min().item<double>(), y.max().item<double>()}; }

/// max |a - b| in units of the output grid's step.
double steps_apart(const torch::Tensor& a, const torch::Tensor& b, const ActivationGrid& grid) {
  return (a - b).abs().max().item<double>() / grid.scale;
}

std::vector<torch::Tensor> conv_batches() {
  torch::manual_seed(11);
  std::vector<torch::Tensor> out;
  for (int i = 0; i < 4; ++i) out.push_back(torch::randn({4, 3, 9, 9}) * 1.5 + 0.2);
  return out;
}

}  // namespace

TEST(Int8Kernels, ConvMatchesFakeQuantWithinOneOutputStep) {
  for (bool symmetric_input : {false, true}) {
    torch::manual_seed(1);
    nn::Conv2d conv(nn::Conv2dOptions(3, 8, 3).padding(1).quant(layer_quant(8, weights8(), inputs8(symmetric_input))));
    const auto batches = conv_batches();
    observe(conv, batches);
    torch::NoGradGuard g;
    const auto x = batches.back();
    const auto ref = conv->forward(x);
    const auto layer = convert_layer("conv", *conv, range_of(ref));
    EXPECT_EQ(layer.weight.scalar_type(), torch::kChar);
    EXPECT_EQ(layer.weight_scale.numel(), 8);  // per channel
    EXPECT_EQ(layer.input.zero_point == 128, symmetric_input);
    const auto y = make_int8_kernel(layer, *conv)->forward(x);
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_LE(steps_apart(y, ref, layer.output), 1.0 + 1e-3) << "symmetric input " << symmetric_input;
    // Unbatched input: the same result.
    const auto y0 = make_int8_kernel(layer, *conv)->forward(x[0]);
    EXPECT_TRUE(torch::allclose(y0, y[0]));
  }
}

TEST(Int8Kernels, SevenBitWeightsRunOnOnednnWithoutSaturating) {
  // 2 * 255 * 64 fits int16: onednn is exact for these layers even without VNNI.
  QuantizerOptions w7 = weights8();
  w7.bits = 7;
  torch::manual_seed(4);
  nn::Conv2d conv(nn::Conv2dOptions(3, 8, 3).padding(1).quant(layer_quant(8, w7)));
  nn::Linear fc(nn::LinearOptions(40, 6).quant(layer_quant(6, w7)));
  const auto batches = conv_batches();
  observe(conv, batches);
  std::vector<torch::Tensor> fc_batches;
  for (int i = 0; i < 3; ++i) fc_batches.push_back(torch::randn({8, 40}) * 2);
  observe(fc, fc_batches);
  torch::NoGradGuard g;
  const auto ref = conv->forward(batches.back());
  const auto layer = convert_layer("conv", *conv, range_of(ref));
  EXPECT_EQ(int8_engine(layer), "onednn");
  EXPECT_LE(steps_apart(make_int8_kernel(layer, *conv)->forward(batches.back()), ref, layer.output), 1.0 + 1e-3);
  const auto fc_ref = fc->forward(fc_batches.back());
  const auto fc_layer = convert_layer("fc", *fc, range_of(fc_ref));
  EXPECT_EQ(int8_engine(fc_layer), "onednn");
  EXPECT_LE(steps_apart(make_int8_kernel(fc_layer, *fc)->forward(fc_batches.back()), fc_ref, fc_layer.output),
            1.0 + 1e-3);
}

TEST(Int8Kernels, ConvWithFoldedBatchNormMatchesConvThenBatchNorm) {
  torch::manual_seed(2);
  nn::Conv2d conv(nn::Conv2dOptions(3, 8, 3).padding(1).bias(false).quant(layer_quant(8)));
  torch::nn::BatchNorm2d bn(8);
  {
    torch::NoGradGuard g;
    bn->running_mean.copy_(torch::randn({8}) * 0.3);
    bn->running_var.copy_(torch::rand({8}) + 0.5);
    bn->weight.copy_(torch::randn({8}));
    bn->weight[3] = 0;  // a dead channel: the output is beta there
    bn->bias.copy_(torch::randn({8}) * 0.2);
  }
  bn->eval();
  conv->fold_batch_norm(bn);
  const auto batches = conv_batches();
  observe(conv, batches);
  torch::NoGradGuard g;
  const auto x = batches.back();
  const auto ref = bn->forward(conv->forward(x));
  const auto layer = convert_layer("features.0", *conv, range_of(ref));
  ASSERT_TRUE(layer.bias.defined());  // the BatchNorm's shift, folded
  const auto y = make_int8_kernel(layer, *conv)->forward(x);
  EXPECT_LE(steps_apart(y, ref, layer.output), 1.0 + 1e-3);
  EXPECT_LE((y.select(1, 3) - bn->bias[3]).abs().max().item<double>(), layer.output.scale);
}

TEST(Int8Kernels, LinearMatchesFakeQuantWithinOneOutputStep) {
  torch::manual_seed(3);
  nn::Linear fc(nn::LinearOptions(20, 5).quant(layer_quant(5)));
  std::vector<torch::Tensor> batches;
  for (int i = 0; i < 4; ++i) batches.push_back(torch::randn({6, 20}));
  observe(fc, batches);
  torch::NoGradGuard g;
  const auto x = batches.back();
  const auto ref = fc->forward(x);
  const auto layer = convert_layer("fc", *fc, range_of(ref));
  auto kernel = make_int8_kernel(layer, *fc);
  EXPECT_LE(steps_apart(kernel->forward(x), ref, layer.output), 1.0 + 1e-3);
  // [*, in] inputs keep their leading dimensions.
  const auto y3 = kernel->forward(x.view({2, 3, 20}));
  EXPECT_EQ(y3.sizes(), (std::vector<int64_t>{2, 3, 5}));
  // Installed as the layer's kernel, the layer's forward runs it.
  fc->set_kernel(kernel);
  EXPECT_TRUE(torch::allclose(fc->forward(x), kernel->forward(x)));
}

TEST(Int8Kernels, RefusesLayersThatCannotRunInInt8NamingThem) {
  torch::NoGradGuard g;
  auto message = [](auto& layer, const std::string& path) {
    try {
      convert_layer(path, *layer, OutputRange{-1, 1});
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  QuantizerOptions binary;
  binary.quantizer = "binary";
  binary.bits = 1;
  nn::Conv2d bin(nn::Conv2dOptions(3, 4, 3).quant(layer_quant(4, binary)));
  bin->forward(torch::randn({1, 3, 5, 5}));
  bin->eval();
  const auto m = message(bin, "layer2.0.conv1");
  EXPECT_NE(m.find("'layer2.0.conv1'"), std::string::npos) << m;
  EXPECT_NE(m.find("affine"), std::string::npos) << m;

  QuantizerOptions wide = weights8();
  wide.bits = 16;
  nn::Linear fc16(nn::LinearOptions(4, 3).quant(layer_quant(3, wide)));
  fc16->train();
  fc16->forward(torch::randn({2, 4}));
  fc16->eval();
  EXPECT_NE(message(fc16, "fc").find("does not fit int8"), std::string::npos);

  nn::LayerQuantizers weights_only;
  weights_only.weight = make_quantizer_factory(weights8(), QuantizerRole::weight, 3);
  nn::Linear no_input(nn::LinearOptions(4, 3).quant(weights_only));
  EXPECT_NE(message(no_input, "head").find("'head' has no input quantizer"), std::string::npos);
}

namespace {

const std::string kRecipe =
    "name: q8\nseed: 3\nthreads: 2\n"
    "data: {name: synthetic, channels: 1, height: 12, width: 12, num_classes: 4, train_size: 64, test_size: 32}\n"
    "model: {name: cnn, config: [8, 0, 16, 0]}\n"
    "train: {epochs: 1, batch_size: 16, progress: none}\n"
    "compression:\n"
    "  - method: quantization\n"
    "    targets: ['*']\n"
    "    weights: {quantizer: uniform, bits: 8, per_channel: true}\n"
    "    inputs: {quantizer: uniform, bits: 8, symmetric: false, range: moving_average}\n"
    "    fold_bn: true\n";

/// The recipe's QAT model with observed ranges and non-trivial BatchNorm statistics, as a
/// short training would leave it (without the cost of training).
Experiment qat_experiment() {
  auto e = build_experiment(ConfigNode(read_yaml_string(kRecipe, "q8.yaml"), ""), DataNeeds::TrainAndTest);
  apply_runtime_settings(e.recipe);
  prepare_experiment(e);
  torch::NoGradGuard g;
  e.model->train();
  for (int64_t b = 0; b < 4; ++b) {
    std::vector<int64_t> idx(16);
    for (int64_t i = 0; i < 16; ++i) idx[i] = b * 16 + i;
    e.model->forward(e.train_data->load(idx, 3, 0, b * 16).inputs);
  }
  e.model->eval();
  return e;
}

torch::Tensor test_inputs(const Experiment& e) {
  std::vector<int64_t> idx(32);
  for (int64_t i = 0; i < 32; ++i) idx[i] = i;
  return e.test_data->load(idx, 3, 0, 0).inputs;
}

}  // namespace

TEST(Int8Model, ExportLoadRoundTripGivesTheKernelsOutputs) {
  TempDir dir;
  auto e = qat_experiment();
  torch::NoGradGuard g;
  const auto x = test_inputs(e);
  const auto fake_quant = e.model->forward(x);
  const auto ckpt = dir.file("last.pt");
  save_checkpoint(ckpt, e, nullptr, TrainerState{});

  const auto written = write_int8_model(dir.file("direct.q8"), e, "");
  EXPECT_EQ(written.converted.size(), 3u);  // features.0, features.4 (convs), classifier
  EXPECT_TRUE(written.float_layers.empty());
  EXPECT_GT(written.calibration_examples, 0);
  EXPECT_LT(written.file_bytes, written.float_bytes);  // int8 weights (recipe and BatchNorm buffers aside)
  const auto kernels = e.model->forward(x);
  // The int8 model stays close to the fake-quantized one it replaces (a few output steps).
  EXPECT_LE((kernels - fake_quant).abs().max().item<double>(), 0.1 * fake_quant.abs().max().item<double>() + 1e-3);

  ASSERT_TRUE(is_int8_model(dir.file("direct.q8")));
  auto loaded = load_int8_experiment(dir.file("direct.q8"));
  EXPECT_TRUE(torch::equal(loaded.model->forward(x), kernels));

  // From the checkpoint (as `shrink export --format int8` does): the same file contents.
  const auto exported = export_int8_model(ckpt, dir.file("ckpt.q8"));
  EXPECT_EQ(exported.converted, written.converted);
  EXPECT_EQ(exported.method_state_bytes, 0u);
  auto from_ckpt = load_int8_experiment(dir.file("ckpt.q8"));
  EXPECT_TRUE(torch::equal(from_ckpt.model->forward(x), kernels));
  EXPECT_FALSE(is_int8_model(ckpt));
}

TEST(Int8Model, CorruptOrTruncatedFilesAreUserErrorsNamingTheFile) {
  TempDir dir;
  auto e = qat_experiment();
  const auto good = dir.file("m.q8");
  write_int8_model(good, e, "");
  const auto bytes = test::read_file(good);
  auto error_of = [](const std::string& path) {
    try {
      load_int8_experiment(path);
    } catch (const UserError& err) {
      return std::string(err.what());
    }
    return std::string("no error");
  };
  const auto truncated = dir.file("truncated.q8");
  test::write_file(truncated, bytes.substr(0, bytes.size() / 2));
  auto m = error_of(truncated);
  EXPECT_NE(m.find("'" + truncated + "'"), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;

  const auto trailing = dir.file("trailing.q8");
  test::write_file(trailing, bytes + "xx");
  EXPECT_NE(error_of(trailing).find("trailing bytes"), std::string::npos);

  auto bad_magic = bytes;
  bad_magic[7] = 'X';
  const auto not_int8 = dir.file("bad.q8");
  test::write_file(not_int8, bad_magic);
  EXPECT_FALSE(is_int8_model(not_int8));
  m = error_of(not_int8);
  EXPECT_NE(m.find("'" + not_int8 + "'"), std::string::npos) << m;
  EXPECT_NE(m.find("bad magic"), std::string::npos) << m;

  auto bad_version = bytes;
  bad_version[8] = 9;
  const auto v9 = dir.file("v9.q8");
  test::write_file(v9, bad_version);
  EXPECT_NE(error_of(v9).find("version 9"), std::string::npos);

  EXPECT_NE(error_of(dir.file("missing.q8")).find("missing.q8"), std::string::npos);
}
