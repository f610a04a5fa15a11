// The model zoo: VGG, AlexNet, SqueezeNet 1.1, MobileNet V1/V2. Published parameter and MAC
// counts at 224x224 (one forward each), CIFAR shapes, taps, torchvision names, blocks, and a
// few SGD steps that reduce the loss.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/models/alexnet.h"
#include "shrink/models/mobilenet.h"
#include "shrink/models/model.h"
#include "shrink/models/squeezenet.h"
#include "shrink/models/vgg.h"
#include "shrink/models/zoo_blocks.h"
#include "shrink/report/summary.h"

namespace {

using shrink::ConfigNode;
using shrink::ConfigValue;
using Shape = std::vector<int64_t>;

const shrink::DataInfo kImageNet{{3, 224, 224}, 1000};
const shrink::DataInfo kCifar{{3, 32, 32}, 10};

ConfigNode model_node(const std::string& name, const std::map<std::string, std::string>& options = {}) {
  auto map = ConfigValue::make_map();
  map->set("name", ConfigValue::make_scalar(name));
  for (const auto& [k, v] : options) map->set(k, ConfigValue::make_scalar(v));
  return ConfigNode(map, "model");
}

int64_t count_parameters(const torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

std::vector<std::string> parameter_names(const torch::nn::Module& model) {
  std::vector<std::string> names;
  for (const auto& p : model.named_parameters()) names.push_back(p.key());
  return names;
}

bool has_parameter(const torch::nn::Module& model, const std::string& name, const Shape& shape) {
  auto params = model.named_parameters();
  const auto* p = params.find(name);
  return p && p->sizes().vec() == shape;
}

// ---- independent counts (slow and obvious) ----

int64_t conv_params(int64_t in, int64_t out, int64_t k, bool bias, int64_t groups = 1) {
  return out * (in / groups) * k * k + (bias ? out : 0);
}

/// VGG: 3x3 convs with bias (+ BN weight and bias), 0 = pool.
int64_t vgg_features_params(const std::vector<int64_t>& config, bool bn) {
  int64_t n = 0, c = 3;
  for (int64_t v : config) {
    if (v == 0) continue;
    n += conv_params(c, v, 3, true) + (bn ? 2 * v : 0);
    c = v;
  }
  return n;
}

/// VGG conv MACs at a square input `size` (3x3 "same" convs, 2x2 pools).
int64_t vgg_features_macs(const std::vector<int64_t>& config, int64_t size) {
  int64_t n = 0, c = 3;
  for (int64_t v : config) {
    if (v == 0) {
      size /= 2;
      continue;
    }
    n += size * size * v * c * 9;
    c = v;
  }
  return n;
}

const std::vector<int64_t> kConfigA = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
const std::vector<int64_t> kConfigD = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};

int64_t fire_params(int64_t in, int64_t s, int64_t e1, int64_t e3) {
  return conv_params(in, s, 1, true) + conv_params(s, e1, 1, true) + conv_params(s, e3, 3, true);
}

int64_t squeezenet_params(int64_t in_channels, int64_t classes) {
  return conv_params(in_channels, 64, 3, true) + fire_params(64, 16, 64, 64) + fire_params(128, 16, 64, 64) +
         fire_params(128, 32, 128, 128) + fire_params(256, 32, 128, 128) + fire_params(256, 48, 192, 192) +
         fire_params(384, 48, 192, 192) + fire_params(384, 64, 256, 256) + fire_params(512, 64, 256, 256) +
         conv_params(512, classes, 1, true);
}

/// MobileNet V1 at width 1: convs without bias, BN weight + bias, Linear with bias.
int64_t mobilenet_v1_params(int64_t classes) {
  const int64_t outs[] = {64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024};
  int64_t n = conv_params(3, 32, 3, false) + 2 * 32, c = 32;
  for (int64_t out : outs) {
    n += conv_params(c, c, 3, false, c) + 2 * c + conv_params(c, out, 1, false) + 2 * out;
    c = out;
  }
  return n + c * classes + classes;
}

struct Measured {
  int64_t parameters = 0;
  int64_t macs = 0;
};

/// Parameters and MACs (one forward of one sample, summed over shrink::nn layers).
Measured measure(const shrink::ModelPtr& model, const Shape& sample) {
  Measured m;
  m.parameters = count_parameters(*model);
  {
    torch::NoGradGuard no_grad;
    model->eval();
    Shape batch{1};
    batch.insert(batch.end(), sample.begin(), sample.end());
    model->forward(torch::zeros(batch));
  }
  for (const auto& module : model->modules(/*include_self=*/false))
    if (const auto* layer = dynamic_cast<const shrink::nn::CostedLayer*>(module.get()))
      m.macs += layer->macs_per_sample();
  return m;
}

void expect_within(double value, double expected, double tolerance, const std::string& what) {
  EXPECT_NEAR(value / expected, 1.0, tolerance) << what << ": " << value << " vs " << expected;
}

TEST(ZooModels, RegistryHasAll) {
  for (const char* name :
       {"vgg11_bn_cifar", "vgg16_bn_cifar", "vgg16", "alexnet", "squeezenet1_1", "squeezenet1_1_cifar", "mobilenet_v1",
        "mobilenet_v1_cifar", "mobilenet_v2", "mobilenet_v2_cifar"})
    EXPECT_TRUE(shrink::model_registry().contains(name)) << name;
}

// ---- ImageNet models: published counts, one 224x224 forward each ----

TEST(ZooModels, Vgg16PublishedCounts) {
  auto model = shrink::build_model(model_node("vgg16"), kImageNet);
  const auto m = measure(model, kImageNet.sample_shape);
  std::printf("vgg16: %lld parameters, %lld MACs\n", (long long)m.parameters, (long long)m.macs);
  EXPECT_EQ(m.parameters, 138357544);
  EXPECT_EQ(m.parameters,
            vgg_features_params(kConfigD, false) + 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000);
  EXPECT_EQ(m.macs, vgg_features_macs(kConfigD, 224) + 25088 * 4096 + 4096 * 4096 + 4096 * 1000);
  expect_within(double(m.macs), 15.5e9, 0.01, "vgg16 MACs");
  // torchvision's state_dict names
  std::vector<std::string> expected;
  for (int i : {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28})
    for (const char* p : {"weight", "bias"}) expected.push_back("features." + std::to_string(i) + "." + p);
  for (int i : {0, 3, 6})
    for (const char* p : {"weight", "bias"}) expected.push_back("classifier." + std::to_string(i) + "." + p);
  EXPECT_EQ(parameter_names(*model), expected);
  EXPECT_TRUE(has_parameter(*model, "classifier.0.weight", {4096, 25088}));
  // torchvision init: N(0, 0.01) linears, zero biases
  auto* vgg = dynamic_cast<shrink::VggImpl*>(model.get());
  ASSERT_NE(vgg, nullptr);
  auto fc = vgg->classifier[6]->as<shrink::nn::LinearImpl>();
  ASSERT_NE(fc, nullptr);
  EXPECT_NEAR(fc->weight.std().item<double>(), 0.01, 1e-3);
  EXPECT_EQ(fc->bias.abs().sum().item<double>(), 0.0);
}

TEST(ZooModels, AlexNetPublishedCounts) {
  auto model = shrink::build_model(model_node("alexnet"), kImageNet);
  model->record_taps({"features", "pooled", "logits"});
  const auto m = measure(model, kImageNet.sample_shape);
  std::printf("alexnet: %lld parameters, %lld MACs\n", (long long)m.parameters, (long long)m.macs);
  EXPECT_EQ(m.parameters, 61100840);
  const int64_t conv_macs = 55 * 55 * 64 * 3 * 121 + 27 * 27 * 192 * 64 * 25 + 13 * 13 * 384 * 192 * 9 +
                            13 * 13 * 256 * 384 * 9 + 13 * 13 * 256 * 256 * 9;
  EXPECT_EQ(m.macs, conv_macs + 9216 * 4096 + 4096 * 4096 + 4096 * 1000);
  EXPECT_EQ(model->tap("features").sizes().vec(), (Shape{1, 256, 6, 6}));
  EXPECT_EQ(model->tap("pooled").sizes().vec(), (Shape{1, 9216}));
  EXPECT_EQ(model->tap("logits").sizes().vec(), (Shape{1, 1000}));
  std::vector<std::string> expected;
  for (int i : {0, 3, 6, 8, 10})
    for (const char* p : {"weight", "bias"}) expected.push_back("features." + std::to_string(i) + "." + p);
  for (int i : {1, 4, 6})
    for (const char* p : {"weight", "bias"}) expected.push_back("classifier." + std::to_string(i) + "." + p);
  EXPECT_EQ(parameter_names(*model), expected);
}

TEST(ZooModels, SqueezeNetPublishedCounts) {
  auto model = shrink::build_model(model_node("squeezenet1_1"), kImageNet);
  model->record_taps({"features", "logits"});
  const auto m = measure(model, kImageNet.sample_shape);
  std::printf("squeezenet1_1: %lld parameters, %lld MACs\n", (long long)m.parameters, (long long)m.macs);
  EXPECT_EQ(m.parameters, 1235496);
  EXPECT_EQ(m.parameters, squeezenet_params(3, 1000));
  expect_within(double(m.macs), 349e6, 0.01, "squeezenet1_1 MACs");
  EXPECT_EQ(model->tap("features").sizes().vec(), (Shape{1, 512, 13, 13}));
  EXPECT_EQ(model->tap("logits").sizes().vec(), (Shape{1, 1000}));
  std::vector<std::string> expected = {"features.0.weight", "features.0.bias"};
  for (int i : {3, 4, 6, 7, 9, 10, 11, 12})
    for (const char* conv : {"squeeze", "expand1x1", "expand3x3"})
      for (const char* p : {"weight", "bias"})
        expected.push_back("features." + std::to_string(i) + "." + conv + "." + p);
  expected.push_back("classifier.1.weight");
  expected.push_back("classifier.1.bias");
  EXPECT_EQ(parameter_names(*model), expected);
}

TEST(ZooModels, MobileNetV1PublishedCounts) {
  auto model = shrink::build_model(model_node("mobilenet_v1"), kImageNet);
  model->record_taps({"stage1", "stage2", "stage3", "stage4", "features", "pooled", "logits"});
  const auto m = measure(model, kImageNet.sample_shape);
  std::printf("mobilenet_v1: %lld parameters, %lld MACs\n", (long long)m.parameters, (long long)m.macs);
  expect_within(double(m.parameters), 4.23e6, 0.01, "mobilenet_v1 parameters");
  expect_within(double(m.macs), 569e6, 0.01, "mobilenet_v1 MACs");
  EXPECT_EQ(m.parameters, mobilenet_v1_params(1000));
  EXPECT_EQ(model->tap("stage1").sizes().vec(), (Shape{1, 64, 112, 112}));
  EXPECT_EQ(model->tap("stage2").sizes().vec(), (Shape{1, 128, 56, 56}));
  EXPECT_EQ(model->tap("stage3").sizes().vec(), (Shape{1, 256, 28, 28}));
  EXPECT_EQ(model->tap("stage4").sizes().vec(), (Shape{1, 512, 14, 14}));
  EXPECT_EQ(model->tap("features").sizes().vec(), (Shape{1, 1024, 7, 7}));
  EXPECT_EQ(model->tap("pooled").sizes().vec(), (Shape{1, 1024}));
  EXPECT_TRUE(has_parameter(*model, "features.0.0.weight", {32, 3, 3, 3}));
  EXPECT_TRUE(has_parameter(*model, "features.2.depthwise.weight", {64, 1, 3, 3}));
  EXPECT_TRUE(has_parameter(*model, "features.2.pointwise_bn.weight", {128}));
  EXPECT_TRUE(has_parameter(*model, "classifier.weight", {1000, 1024}));

  // Width multiplier 0.5 (Table 6 of the paper: 150M MACs, 1.3M parameters).
  auto half = shrink::build_model(model_node("mobilenet_v1", {{"width_multiplier", "0.5"}}),
                                  shrink::DataInfo{{3, 32, 32}, 1000});
  auto* v1 = dynamic_cast<shrink::MobileNetV1Impl*>(half.get());
  ASSERT_NE(v1, nullptr);
  EXPECT_EQ(v1->classifier->options.in_features(), 512);
  expect_within(double(count_parameters(*half)), 1.33e6, 0.01, "mobilenet_v1 0.5 parameters");
}

TEST(ZooModels, MobileNetV2PublishedCounts) {
  auto model = shrink::build_model(model_node("mobilenet_v2"), kImageNet);
  model->record_taps({"stage1", "stage2", "stage3", "stage4", "stage5", "features", "pooled", "logits"});
  const auto m = measure(model, kImageNet.sample_shape);
  std::printf("mobilenet_v2: %lld parameters, %lld MACs\n", (long long)m.parameters, (long long)m.macs);
  EXPECT_EQ(m.parameters, 3504872);
  expect_within(double(m.macs), 300e6, 0.01, "mobilenet_v2 MACs");
  EXPECT_EQ(model->tap("stage1").sizes().vec(), (Shape{1, 16, 112, 112}));
  EXPECT_EQ(model->tap("stage2").sizes().vec(), (Shape{1, 24, 56, 56}));
  EXPECT_EQ(model->tap("stage3").sizes().vec(), (Shape{1, 32, 28, 28}));
  EXPECT_EQ(model->tap("stage4").sizes().vec(), (Shape{1, 96, 14, 14}));
  EXPECT_EQ(model->tap("stage5").sizes().vec(), (Shape{1, 320, 7, 7}));
  EXPECT_EQ(model->tap("features").sizes().vec(), (Shape{1, 1280, 7, 7}));
  EXPECT_EQ(model->tap("pooled").sizes().vec(), (Shape{1, 1280}));
  // torchvision's names: 158 parameter tensors, 52 BNs with 3 buffers each
  EXPECT_EQ(model->named_parameters().size(), 158u);
  EXPECT_EQ(model->named_buffers().size(), 156u);
  EXPECT_TRUE(has_parameter(*model, "features.0.0.weight", {32, 3, 3, 3}));
  EXPECT_TRUE(has_parameter(*model, "features.0.1.weight", {32}));
  EXPECT_TRUE(has_parameter(*model, "features.1.conv.0.0.weight", {32, 1, 3, 3}));
  EXPECT_TRUE(has_parameter(*model, "features.1.conv.1.weight", {16, 32, 1, 1}));
  EXPECT_TRUE(has_parameter(*model, "features.1.conv.2.bias", {16}));
  EXPECT_TRUE(has_parameter(*model, "features.2.conv.0.0.weight", {96, 16, 1, 1}));
  EXPECT_TRUE(has_parameter(*model, "features.2.conv.1.0.weight", {96, 1, 3, 3}));
  EXPECT_TRUE(has_parameter(*model, "features.2.conv.2.weight", {24, 96, 1, 1}));
  EXPECT_TRUE(has_parameter(*model, "features.2.conv.3.weight", {24}));
  EXPECT_TRUE(has_parameter(*model, "features.17.conv.2.weight", {320, 960, 1, 1}));
  EXPECT_TRUE(has_parameter(*model, "features.18.0.weight", {1280, 320, 1, 1}));
  EXPECT_TRUE(has_parameter(*model, "classifier.1.weight", {1000, 1280}));
  EXPECT_NE(model->named_buffers().find("features.18.1.running_var"), nullptr);
  EXPECT_NE(model->named_buffers().find("features.3.conv.1.1.num_batches_tracked"), nullptr);
}

TEST(ZooModels, MakeDivisibleIsTorchvisions) {
  EXPECT_EQ(shrink::detail::make_divisible(32 * 1.0), 32);
  EXPECT_EQ(shrink::detail::make_divisible(32 * 0.35), 16);  // 11.2 -> 8 is below 90%, so 16
  EXPECT_EQ(shrink::detail::make_divisible(16 * 0.5), 8);
  EXPECT_EQ(shrink::detail::make_divisible(96 * 0.75), 72);
  EXPECT_EQ(shrink::detail::make_divisible(3.0), 8);
}

// ---- CIFAR models ----

struct CifarCase {
  std::string name;
  int64_t parameters_rgb;             ///< 3 input channels, 10 classes, computed independently
  int64_t parameters_gray;            ///< 1 input channel
  int64_t known;                      ///< the figure quoted in the header
  std::map<std::string, Shape> taps;  ///< every tap, for a batch of 2
};

TEST(ZooModels, CifarShapesCountsAndTaps) {
  const int64_t v2 = 3504872 - (1280 * 1000 + 1000) + (1280 * 10 + 10);  // strides hold no parameters
  const std::map<std::string, Shape> vgg_taps = {
      {"stage1", {2, 64, 16, 16}},  {"stage2", {2, 128, 8, 8}}, {"stage3", {2, 256, 4, 4}}, {"stage4", {2, 512, 2, 2}},
      {"features", {2, 512, 1, 1}}, {"pooled", {2, 512}},       {"logits", {2, 10}}};
  const std::vector<CifarCase> cases = {
      {"vgg11_bn_cifar", vgg_features_params(kConfigA, true) + 512 * 10 + 10,
       vgg_features_params(kConfigA, true) + 512 * 10 + 10 - 2 * 64 * 9, 9231114, vgg_taps},
      {"vgg16_bn_cifar", vgg_features_params(kConfigD, true) + 512 * 10 + 10,
       vgg_features_params(kConfigD, true) + 512 * 10 + 10 - 2 * 64 * 9, 14728266, vgg_taps},
      {"squeezenet1_1_cifar",
       squeezenet_params(3, 10),
       squeezenet_params(1, 10),
       727626,
       {{"features", {2, 512, 4, 4}}, {"logits", {2, 10}}}},
      {"mobilenet_v1_cifar",
       mobilenet_v1_params(10),
       mobilenet_v1_params(10) - 2 * 32 * 9,
       3217226,
       {{"stage1", {2, 64, 32, 32}},
        {"stage2", {2, 128, 16, 16}},
        {"stage3", {2, 256, 8, 8}},
        {"stage4", {2, 512, 4, 4}},
        {"features", {2, 1024, 2, 2}},
        {"pooled", {2, 1024}},
        {"logits", {2, 10}}}},
      {"mobilenet_v2_cifar",
       v2,
       v2 - 2 * 32 * 9,
       2236682,
       {{"stage1", {2, 16, 32, 32}},
        {"stage2", {2, 24, 32, 32}},
        {"stage3", {2, 32, 16, 16}},
        {"stage4", {2, 96, 8, 8}},
        {"stage5", {2, 320, 4, 4}},
        {"features", {2, 1280, 4, 4}},
        {"pooled", {2, 1280}},
        {"logits", {2, 10}}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto model = shrink::build_model(model_node(c.name), kCifar);
    const auto m = measure(model, kCifar.sample_shape);
    std::printf("%s: %lld parameters, %lld MACs at 3x32x32\n", c.name.c_str(), (long long)m.parameters,
                (long long)m.macs);
    EXPECT_EQ(m.parameters, c.parameters_rgb);
    EXPECT_EQ(m.parameters, c.known);

    std::vector<std::string> names;
    for (const auto& [tap, shape] : c.taps) names.push_back(tap);
    EXPECT_EQ(model->tap_names().size(), c.taps.size());
    model->record_taps(names);
    model->eval();
    torch::NoGradGuard no_grad;
    auto y = model->forward(torch::randn({2, 3, 32, 32}));
    EXPECT_EQ(y.sizes().vec(), (Shape{2, 10}));
    for (const auto& [tap, shape] : c.taps) EXPECT_EQ(model->tap(tap).sizes().vec(), shape) << tap;
    EXPECT_TRUE(model->tap("logits").equal(y));

    // one input channel, classes from the options
    auto gray = shrink::build_model(model_node(c.name, {{"num_classes", "10"}}), shrink::DataInfo{{1, 32, 32}, 0});
    gray->eval();
    EXPECT_EQ(gray->forward(torch::randn({2, 1, 32, 32})).sizes().vec(), (Shape{2, 10}));
    EXPECT_EQ(count_parameters(*gray), c.parameters_gray);
    EXPECT_THROW(model->record_taps({"stage6"}), shrink::UserError);
  }
}

TEST(ZooModels, CifarNamesFollowTorchvision) {
  auto vgg = shrink::build_model(model_node("vgg11_bn_cifar"), kCifar);
  // conv, BN, ReLU, pool: the second conv is features.4, as in torchvision's vgg11_bn
  EXPECT_TRUE(has_parameter(*vgg, "features.0.weight", {64, 3, 3, 3}));
  EXPECT_TRUE(has_parameter(*vgg, "features.1.weight", {64}));
  EXPECT_TRUE(has_parameter(*vgg, "features.4.weight", {128, 64, 3, 3}));
  EXPECT_TRUE(has_parameter(*vgg, "features.25.bias", {512}));
  EXPECT_TRUE(has_parameter(*vgg, "classifier.weight", {10, 512}));
  EXPECT_NE(vgg->named_buffers().find("features.1.running_mean"), nullptr);
  auto* v = dynamic_cast<shrink::VggCifarImpl*>(vgg.get());
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->features->size(), 29u);  // torchvision's vgg11_bn has 29 feature layers

  auto sq = shrink::build_model(model_node("squeezenet1_1_cifar"), kCifar);
  EXPECT_TRUE(has_parameter(*sq, "features.0.weight", {64, 3, 3, 3}));
  EXPECT_TRUE(has_parameter(*sq, "features.12.expand3x3.weight", {256, 64, 3, 3}));
  EXPECT_TRUE(has_parameter(*sq, "classifier.1.weight", {10, 512, 1, 1}));
}

TEST(ZooModels, SmallModelLearns) {
  // 32 random images whose class shifts the mean of each color channel: learnable through the
  // global average pool in a few steps (pure noise with random labels is not, at this size).
  torch::manual_seed(0);
  auto model = shrink::build_model(model_node("mobilenet_v1_cifar", {{"width_multiplier", "0.25"}}), kCifar);
  auto y = torch::randint(0, 10, {32}, torch::kLong);
  auto x = torch::randn({32, 3, 32, 32}) + torch::randn({10, 3, 1, 1}).index_select(0, y);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  model->train();
  std::vector<double> losses;
  for (int step = 0; step < 10; ++step) {
    sgd.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    sgd.step();
    losses.push_back(loss.item<double>());
  }
  std::printf("mobilenet_v1_cifar (width 0.25): loss %.4f -> %.4f in 10 SGD steps\n", losses.front(), losses.back());
  EXPECT_NEAR(losses.front(), std::log(10.0), 0.2);  // N(0, 0.01) classifier: near-uniform outputs
  EXPECT_LT(losses.back(), 0.9 * losses.front());
}

// ---- blocks and containers ----

TEST(ZooBlocks, FireAndInvertedResidual) {
  shrink::Fire fire(shrink::FireOptions(8, 4, 6, 10));
  auto x = torch::randn({2, 8, 5, 5});
  EXPECT_EQ(fire(x).sizes().vec(), (Shape{2, 16, 5, 5}));
  // reference: relu(squeeze), then both expands concatenated
  auto s = torch::relu(torch::conv2d(x, fire->squeeze->weight, fire->squeeze->bias));
  auto e1 = torch::relu(torch::conv2d(s, fire->expand1x1->weight, fire->expand1x1->bias));
  auto e3 = torch::relu(torch::conv2d(s, fire->expand3x3->weight, fire->expand3x3->bias, 1, 1));
  EXPECT_TRUE(torch::allclose(fire(x), torch::cat({e1, e3}, 1), 1e-5, 1e-6));
  auto copy = std::dynamic_pointer_cast<shrink::FireImpl>(fire->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_TRUE(torch::allclose(copy->forward(x), fire(x)));
  EXPECT_NE(copy->squeeze->weight.data_ptr(), fire->squeeze->weight.data_ptr());

  shrink::InvertedResidual block(shrink::InvertedResidualOptions(16, 16, 1, 6));
  EXPECT_TRUE(block->use_residual);
  EXPECT_EQ(block->hidden_channels, 96);
  ASSERT_FALSE(block->expand().is_empty());
  EXPECT_EQ(block->depthwise()->conv->options.groups(), 96);
  EXPECT_EQ(block->project()->weight.sizes().vec(), (Shape{16, 96, 1, 1}));
  block->eval();
  auto z = torch::randn({1, 16, 6, 6});
  auto h = block->expand()->forward(z);
  h = block->depthwise()->forward(h);
  auto ref = z + block->project_bn()(block->project()(h));
  EXPECT_TRUE(torch::allclose(block->forward(z), ref, 1e-5, 1e-6));
  auto clone = std::dynamic_pointer_cast<shrink::InvertedResidualImpl>(block->clone());
  ASSERT_NE(clone, nullptr);
  clone->eval();
  EXPECT_TRUE(torch::allclose(clone->forward(z), block->forward(z)));

  shrink::InvertedResidual down(shrink::InvertedResidualOptions(16, 24, 2, 1));
  EXPECT_FALSE(down->use_residual);
  EXPECT_TRUE(down->expand().is_empty());
  EXPECT_EQ(down->forward(z).sizes().vec(), (Shape{1, 24, 3, 3}));

  shrink::DepthwiseSeparable ds(shrink::DepthwiseSeparableOptions(16, 32).stride(2));
  EXPECT_EQ(ds->forward(z).sizes().vec(), (Shape{1, 32, 3, 3}));
  EXPECT_EQ(ds->depthwise->weight.sizes().vec(), (Shape{16, 1, 3, 3}));
}

TEST(ZooBlocks, ReplacedLayersRunInForward) {
  // replace_module on a ModuleList entry takes effect (unlike torch::nn::Sequential).
  auto model = shrink::build_model(model_node("squeezenet1_1_cifar"), kCifar);
  auto* sq = dynamic_cast<shrink::SqueezeNetImpl*>(model.get());
  ASSERT_NE(sq, nullptr);
  model->eval();
  torch::NoGradGuard no_grad;
  auto a = torch::randn({1, 3, 32, 32}), b = torch::randn({1, 3, 32, 32});
  EXPECT_FALSE(torch::allclose(model->forward(a), model->forward(b)));
  shrink::nn::Conv2d zero(shrink::nn::Conv2dOptions(3, 64, 3).padding(1));
  zero->weight.zero_();
  zero->bias.zero_();
  sq->features->replace_module("0", zero);
  EXPECT_TRUE(torch::allclose(model->forward(a), model->forward(b)));
  EXPECT_GT(zero->macs_per_sample(), 0);

  // a module type the zoo cannot run is an error naming it
  sq->features->replace_module("1", torch::nn::Tanh());
  try {
    model->forward(a);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Tanh"), std::string::npos) << e.what();
  }
}

TEST(ZooModels, Errors) {
  EXPECT_THROW(shrink::build_model(model_node("vgg16"), shrink::DataInfo{{3, 16, 16}, 10}), shrink::UserError);
  EXPECT_THROW(shrink::build_model(model_node("vgg11_bn_cifar"), shrink::DataInfo{{3, 32, 32}, 0}), shrink::UserError);
  EXPECT_THROW(shrink::build_model(model_node("alexnet"), shrink::DataInfo{{3, 62, 62}, 10}), shrink::UserError);
  EXPECT_THROW(shrink::build_model(model_node("squeezenet1_1"), shrink::DataInfo{{3, 24, 24}, 10}), shrink::UserError);
  EXPECT_NO_THROW(shrink::build_model(model_node("squeezenet1_1"), shrink::DataInfo{{3, 25, 25}, 10}));
  EXPECT_THROW(shrink::build_model(model_node("mobilenet_v2"), shrink::DataInfo{{784}, 10}), shrink::UserError);
  EXPECT_THROW(shrink::build_model(model_node("mobilenet_v1", {{"width_multiplier", "0"}}), kCifar),
               shrink::ConfigError);
  EXPECT_THROW(shrink::build_model(model_node("mobilenet_v2", {{"dropout", "1.5"}}), kCifar), shrink::ConfigError);
  EXPECT_THROW(shrink::build_model(model_node("vgg16_bn_cifar", {{"dropout", "0.5"}}), kCifar), shrink::ConfigError);
  try {
    shrink::build_model(model_node("squeezenet1_1", {{"dropout", "0.1"}}), shrink::DataInfo{{3, 8, 8}, 10});
    FAIL() << "expected UserError";
  } catch (const shrink::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("25x25"), std::string::npos) << e.what();
  }
}

TEST(ZooModels, PlainCnnCountsMacsAndErrors) {
  const shrink::DataInfo mnist{{1, 28, 28}, 10};
  auto model = shrink::build_model(model_node("cnn"), mnist);
  const auto m = measure(model, mnist.sample_shape);
  // conv 1->32, 32->64, 64->128 (3x3, bias, BN) at 28, 14, 7; Linear 128*3*3 -> 10.
  EXPECT_EQ(m.parameters, (32 * 9 + 32 + 64) + (64 * 32 * 9 + 64 + 128) + (128 * 64 * 9 + 128 + 256) + 1152 * 10 + 10);
  EXPECT_EQ(m.parameters, 104650);
  EXPECT_EQ(m.macs, 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 7 * 7 * 128 * 64 * 9 + 1152 * 10);
  auto out = model->forward(torch::zeros({2, 1, 28, 28}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 10}));
  // Taps for the stages this configuration has (three pools).
  EXPECT_EQ(model->tap_names(), (std::vector<std::string>{"stage1", "stage2", "stage3", "features", "pooled", "logits"}));
  auto list = ConfigValue::make_sequence();
  list->items.push_back(ConfigValue::make_scalar("0"));
  auto map = ConfigValue::make_map();
  map->set("name", ConfigValue::make_scalar("cnn"));
  map->set("config", list);
  EXPECT_THROW(shrink::build_model(ConfigNode(map, "model"), mnist), shrink::UserError);
}

}  // namespace
