#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/core/error.h"
#include "shrink/models/model.h"
#include "shrink/models/resnet.h"
#include "shrink/nn/layer.h"

namespace {

using shrink::ConfigNode;
using shrink::ConfigValue;
using shrink::ShortcutKind;

const shrink::DataInfo kCifar{{3, 32, 32}, 10};
const shrink::DataInfo kImageNet{{3, 224, 224}, 1000};

ConfigNode model_node(const std::string& name, const std::map<std::string, std::string>& options = {}) {
  auto map = ConfigValue::make_map();
  map->set("name", ConfigValue::make_scalar(name));
  for (const auto& [k, v] : options) map->set(k, ConfigValue::make_scalar(v));
  return ConfigNode(map, "model");
}

int64_t count_parameters(const shrink::ModelPtr& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

/// MACs of one sample: a forward on a zero batch of one, summed over Shrink's costed layers.
int64_t count_macs(const shrink::ModelPtr& model, const std::vector<int64_t>& sample_shape) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<int64_t> shape{1};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  model->forward(torch::zeros(shape));
  model->train();
  int64_t macs = 0;
  for (const auto& m : model->modules())
    if (auto* costed = dynamic_cast<shrink::nn::CostedLayer*>(m.get())) macs += costed->macs_per_sample();
  return macs;
}

std::vector<int64_t> sizes(const torch::Tensor& t) { return t.sizes().vec(); }

// ------------------------------------------------------------------------------------------
// Slow, obvious references: counts by formula, torchvision's names by its definition.

struct Counts {
  int64_t params = 0, macs = 0;
};

/// Adds a conv (no bias) on an h x w input; updates h, w to its output.
void add_conv(Counts& c, int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t& h, int64_t& w) {
  h = (h + 2 * pad - k) / stride + 1;
  w = (w + 2 * pad - k) / stride + 1;
  c.params += in * out * k * k;
  c.macs += h * w * out * in * k * k;
}

/// CIFAR ResNet (post-activation) or pre-activation ResNet / WRN.
Counts cifar_reference(int64_t depth, bool projection, bool preact, int64_t in_channels, int64_t classes,
                       int64_t k = 1, bool wrn = false, int64_t size = 32) {
  const int64_t n = wrn ? (depth - 4) / 6 : (depth - 2) / 6;
  Counts c;
  int64_t h = size, w = size;
  add_conv(c, in_channels, 16, 3, 1, 1, h, w);
  if (!preact) c.params += 2 * 16;  // stem BN
  int64_t in = 16;
  const int64_t widths[3] = {16 * k, 32 * k, 64 * k}, strides[3] = {1, 2, 2};
  for (int s = 0; s < 3; ++s)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t out = widths[s], stride = i == 0 ? strides[s] : 1;
      int64_t h2 = h, w2 = w, hs = h, ws = w;
      if (preact) c.params += 2 * in;  // bn1 on the input
      add_conv(c, in, out, 3, stride, 1, h2, w2);
      c.params += 2 * out;
      add_conv(c, out, out, 3, 1, 1, h2, w2);
      if (!preact) c.params += 2 * out;
      if ((stride != 1 || in != out) && projection) {
        add_conv(c, in, out, 1, stride, 0, hs, ws);
        if (!preact) c.params += 2 * out;
      }
      h = h2, w = w2, in = out;
    }
  if (preact) c.params += 2 * in;  // final BN
  c.params += in * classes + classes;
  c.macs += in * classes;
  return c;
}

/// torchvision.models.resnet18 / resnet50 state_dict keys, in order, split into parameters and
/// buffers (as LibTorch lists them).
void torchvision_names(bool bottleneck, const std::vector<int>& blocks, std::vector<std::string>& params,
                       std::vector<std::string>& buffers) {
  auto bn = [&](const std::string& p) {
    params.push_back(p + ".weight");
    params.push_back(p + ".bias");
    buffers.push_back(p + ".running_mean");
    buffers.push_back(p + ".running_var");
    buffers.push_back(p + ".num_batches_tracked");
  };
  params.push_back("conv1.weight");
  bn("bn1");
  for (int s = 0; s < 4; ++s)
    for (int b = 0; b < blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      for (int i = 1; i <= (bottleneck ? 3 : 2); ++i) {
        params.push_back(p + "conv" + std::to_string(i) + ".weight");
        bn(p + "bn" + std::to_string(i));
      }
      // Every stage but ResNet-18's first starts with a projection.
      if (b == 0 && (s > 0 || bottleneck)) {
        params.push_back(p + "downsample.0.weight");
        bn(p + "downsample.1");
      }
    }
  params.push_back("fc.weight");
  params.push_back("fc.bias");
}

template <class Items>
std::vector<std::string> keys(const Items& items) {
  std::vector<std::string> out;
  for (const auto& item : items) out.push_back(item.key());
  return out;
}

// ------------------------------------------------------------------------------------------

class ResNet : public ::testing::Test {
 protected:
  // These forwards are small (batch 1 or tiny images): on one thread they do not wait at OpenMP
  // barriers, which costs 10-40x when the two cores are shared with other processes.
  void SetUp() override {
    threads_ = at::get_num_threads();
    at::set_num_threads(1);
  }
  void TearDown() override { at::set_num_threads(threads_); }
  int threads_ = 1;
};

TEST_F(ResNet, RegistryHasTheFamily) {
  for (const char* name : {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "preact_resnet20", "wrn16",
                           "resnet18", "resnet50"})
    EXPECT_TRUE(shrink::model_registry().contains(name)) << name;
}

TEST_F(ResNet, CifarCountsMatchTheFormula) {
  torch::manual_seed(0);
  for (int64_t depth : {20, 32, 44, 56, 110})
    for (const std::string shortcut : {"A", "B"}) {
      auto model = shrink::build_model(model_node("resnet" + std::to_string(depth), {{"shortcut", shortcut}}), kCifar);
      // MACs on 14x14 images (7x7 after the first stride: odd sizes) keep this fast.
      const auto ref = cifar_reference(depth, shortcut == "B", /*preact=*/false, 3, 10, 1, false, 14);
      EXPECT_EQ(count_parameters(model), ref.params) << depth << shortcut;
      EXPECT_EQ(count_macs(model, {3, 14, 14}), ref.macs) << depth << shortcut;
      auto* net = dynamic_cast<shrink::CifarResNetImpl*>(model.get());
      ASSERT_NE(net, nullptr);
      EXPECT_EQ(static_cast<int64_t>(net->residual_blocks().size()), 3 * (depth - 2) / 6);
    }
}

TEST_F(ResNet, CifarPublishedFigures) {
  // He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-56 0.85M parameters (option A). The usual
  // 40.8M / 125.7M MAC figures are those of option B's projections; option A is 0.6% / 0.2% lower.
  auto r20 = shrink::build_model(model_node("resnet20"), kCifar);
  const int64_t params20 = count_parameters(r20), macs20 = count_macs(r20, {3, 32, 32});
  EXPECT_EQ(params20, 269722);
  EXPECT_EQ(macs20, 40551040);
  EXPECT_NEAR(params20 / 1e6, 0.27, 0.005);
  EXPECT_NEAR(macs20 / 40.8e6, 1.0, 0.01);

  auto r20b = shrink::build_model(model_node("resnet20", {{"shortcut", "B"}}), kCifar);
  const int64_t macs20b = count_macs(r20b, {3, 32, 32});
  EXPECT_EQ(count_parameters(r20b), 272474);
  EXPECT_EQ(macs20b, 40813184);
  EXPECT_NEAR(macs20b / 40.8e6, 1.0, 0.005);

  auto r56 = shrink::build_model(model_node("resnet56"), kCifar);
  const int64_t params56 = count_parameters(r56), macs56 = count_macs(r56, {3, 32, 32});
  EXPECT_EQ(params56, 853018);
  EXPECT_EQ(macs56, 125485696);
  EXPECT_NEAR(params56 / 1e6, 0.85, 0.005);
  EXPECT_NEAR(macs56 / 125.7e6, 1.0, 0.005);
}

TEST_F(ResNet, ImageNetResNetsAreTorchvisions) {
  torch::NoGradGuard no_grad;
  // Parameters, MACs on 3x224x224 and names of torchvision's resnet18 / resnet50.
  struct Case {
    const char* name;
    bool bottleneck;
    std::vector<int> blocks;
    int64_t params, macs;
    double published_macs, tolerance;
    size_t state_dict_size;
  };
  for (const Case& c : {Case{"resnet18", false, {2, 2, 2, 2}, 11689512, 1814073344, 1.82e9, 0.005, 122},
                        Case{"resnet50", true, {3, 4, 6, 3}, 25557032, 4089184256, 4.09e9, 0.01, 320}}) {
    auto model = shrink::build_model(model_node(c.name), kImageNet);
    EXPECT_EQ(count_parameters(model), c.params) << c.name;
    const int64_t macs = count_macs(model, {3, 224, 224});
    EXPECT_EQ(macs, c.macs) << c.name;
    EXPECT_NEAR(macs / c.published_macs, 1.0, c.tolerance) << c.name;

    std::vector<std::string> params, buffers;
    torchvision_names(c.bottleneck, c.blocks, params, buffers);
    EXPECT_EQ(keys(model->named_parameters()), params) << c.name;
    EXPECT_EQ(keys(model->named_buffers()), buffers) << c.name;
    EXPECT_EQ(params.size() + buffers.size(), c.state_dict_size) << c.name;  // len(torchvision state_dict)
    EXPECT_EQ(dynamic_cast<shrink::ImageNetResNetImpl*>(model.get())->residual_blocks().size(),
              c.bottleneck ? 16u : 8u);
    if (c.bottleneck) continue;

    // Representative shapes of ResNet-18.
    auto p = model->named_parameters();
    auto b = model->named_buffers();
    EXPECT_EQ(sizes(p["conv1.weight"]), (std::vector<int64_t>{64, 3, 7, 7}));
    EXPECT_EQ(sizes(p["layer1.0.conv1.weight"]), (std::vector<int64_t>{64, 64, 3, 3}));
    EXPECT_EQ(sizes(p["layer2.0.conv1.weight"]), (std::vector<int64_t>{128, 64, 3, 3}));
    EXPECT_EQ(sizes(p["layer2.0.downsample.0.weight"]), (std::vector<int64_t>{128, 64, 1, 1}));
    EXPECT_EQ(sizes(p["layer2.0.downsample.1.weight"]), (std::vector<int64_t>{128}));
    EXPECT_EQ(sizes(b["layer2.0.downsample.1.running_var"]), (std::vector<int64_t>{128}));
    EXPECT_EQ(sizes(b["layer4.1.bn2.num_batches_tracked"]), (std::vector<int64_t>{}));
    EXPECT_EQ(b["bn1.num_batches_tracked"].scalar_type(), torch::kLong);
    EXPECT_EQ(sizes(p["fc.weight"]), (std::vector<int64_t>{1000, 512}));
    EXPECT_EQ(sizes(p["fc.bias"]), (std::vector<int64_t>{1000}));
    EXPECT_EQ(p.find("layer1.0.downsample.0.weight"), nullptr);
    // torchvision's init: BN weight 1, bias 0; fan_out kaiming convs (std sqrt(2 / (64 * 9))).
    EXPECT_TRUE(torch::all(p["layer3.1.bn2.weight"] == 1).item<bool>());
    EXPECT_TRUE(torch::all(p["layer3.1.bn2.bias"] == 0).item<bool>());
    EXPECT_NEAR(p["layer1.0.conv1.weight"].std().item<double>(), std::sqrt(2.0 / (64 * 9)), 0.003);
  }
}

TEST_F(ResNet, ImageNetTaps) {
  torch::NoGradGuard no_grad;
  auto model = shrink::build_model(model_node("resnet18", {{"num_classes", "5"}}), shrink::DataInfo{{1, 64, 64}, 0});
  EXPECT_EQ(model->tap_names(),
            (std::vector<std::string>{"stem", "layer1", "layer2", "layer3", "layer4", "features", "logits"}));
  model->record_taps(model->tap_names());
  model->eval();
  auto y = model->forward(torch::randn({2, 1, 64, 64}));
  EXPECT_EQ(sizes(y), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(sizes(model->tap("stem")), (std::vector<int64_t>{2, 64, 16, 16}));
  EXPECT_EQ(sizes(model->tap("layer1")), (std::vector<int64_t>{2, 64, 16, 16}));
  EXPECT_EQ(sizes(model->tap("layer2")), (std::vector<int64_t>{2, 128, 8, 8}));
  EXPECT_EQ(sizes(model->tap("layer3")), (std::vector<int64_t>{2, 256, 4, 4}));
  EXPECT_EQ(sizes(model->tap("layer4")), (std::vector<int64_t>{2, 512, 2, 2}));
  EXPECT_EQ(sizes(model->tap("features")), (std::vector<int64_t>{2, 512}));
  EXPECT_TRUE(model->tap("logits").equal(y));
}

TEST_F(ResNet, CifarShapesAndTapsOnOneChannel) {
  auto model = shrink::build_model(model_node("resnet20"), shrink::DataInfo{{1, 32, 32}, 10});
  const auto ref = cifar_reference(20, false, false, 1, 10);
  EXPECT_EQ(count_parameters(model), ref.params);  // 269,434
  auto* net = dynamic_cast<shrink::CifarResNetImpl*>(model.get());
  ASSERT_NE(net, nullptr);
  EXPECT_EQ(net->conv1->options.in_channels(), 1);
  EXPECT_EQ(model->tap_names(), (std::vector<std::string>{"stem", "layer1", "layer2", "layer3", "features", "logits"}));
  model->record_taps({"stem", "layer1", "layer2", "layer3", "features", "logits"});
  auto y = model->forward(torch::randn({2, 1, 32, 32}));
  EXPECT_EQ(sizes(y), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(sizes(model->tap("stem")), (std::vector<int64_t>{2, 16, 32, 32}));
  EXPECT_EQ(sizes(model->tap("layer1")), (std::vector<int64_t>{2, 16, 32, 32}));
  EXPECT_EQ(sizes(model->tap("layer2")), (std::vector<int64_t>{2, 32, 16, 16}));
  EXPECT_EQ(sizes(model->tap("layer3")), (std::vector<int64_t>{2, 64, 8, 8}));
  EXPECT_EQ(sizes(model->tap("features")), (std::vector<int64_t>{2, 64}));
  EXPECT_TRUE(model->tap("logits").equal(y));
  // Names follow torchvision's scheme.
  auto p = model->named_parameters();
  for (const char* name : {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.2.bn2.bias",
                           "layer3.2.conv2.weight", "fc.weight", "fc.bias"})
    EXPECT_NE(p.find(name), nullptr) << name;
}

TEST_F(ResNet, ShortcutAIsParameterFreeZeroPadding) {
  auto a = shrink::build_model(model_node("resnet20"), kCifar);
  auto b = shrink::build_model(model_node("resnet20", {{"shortcut", "B"}}), kCifar);
  // B adds 1x1 conv + BN at the two stage transitions: (16*32 + 2*32) + (32*64 + 2*64).
  EXPECT_EQ(count_parameters(b) - count_parameters(a), 2752);
  EXPECT_NE(b->named_parameters().find("layer2.0.downsample.0.weight"), nullptr);
  EXPECT_NE(b->named_parameters().find("layer3.0.downsample.1.bias"), nullptr);
  for (const auto& p : a->named_parameters()) EXPECT_EQ(p.key().find("downsample"), std::string::npos) << p.key();

  auto blocks = dynamic_cast<shrink::CifarResNetImpl*>(a.get())->residual_blocks();
  ASSERT_EQ(blocks.size(), 9u);
  EXPECT_EQ(blocks[0]->shortcut_kind, ShortcutKind::kIdentity);
  EXPECT_EQ(blocks[3]->shortcut_kind, ShortcutKind::kZeroPad);
  EXPECT_EQ(blocks[6]->shortcut_kind, ShortcutKind::kZeroPad);
  EXPECT_TRUE(blocks[3]->downsample.is_empty());
  auto blocks_b = dynamic_cast<shrink::CifarResNetImpl*>(b.get())->residual_blocks();
  EXPECT_EQ(blocks_b[3]->shortcut_kind, ShortcutKind::kProjection);
  EXPECT_EQ(blocks_b[4]->shortcut_kind, ShortcutKind::kIdentity);

  // Reference: out[n][c][i][j] = x[n][c][2i][2j] for c < 16, else 0.
  auto x = torch::randn({2, 16, 7, 7});
  auto s = blocks[3]->shortcut(x, x);
  ASSERT_EQ(sizes(s), (std::vector<int64_t>{2, 32, 4, 4}));
  auto expected = torch::zeros({2, 32, 4, 4});
  auto xa = x.accessor<float, 4>();
  auto ea = expected.accessor<float, 4>();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 16; ++c)
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) ea[n][c][i][j] = xa[n][c][2 * i][2 * j];
  EXPECT_TRUE(s.equal(expected));
}

TEST_F(ResNet, BlocksSplitBranchAndShortcut) {
  torch::manual_seed(1);
  shrink::BasicBlockImpl block(16, 32, 2, ShortcutKind::kProjection);
  block.eval();
  auto x = torch::randn({2, 16, 8, 8});
  auto pre = block.preactivate(x);
  EXPECT_TRUE(pre.equal(x));
  auto expected = torch::relu(block.branch(pre) + block.shortcut(x, pre));
  EXPECT_TRUE(block.forward(x).allclose(expected));
  // The projection is downsample.0 (1x1 conv, stride 2) then downsample.1 (BN).
  auto conv = block.downsample->ptr<shrink::nn::Conv2dImpl>(0);
  auto bn = block.downsample->ptr<torch::nn::BatchNorm2dImpl>(1);
  ASSERT_TRUE(conv && bn);
  EXPECT_TRUE(block.shortcut(x, pre).allclose(bn->forward(conv->forward(x))));

  // A pre-activation projection reads relu(bn1(x)) and has no BN of its own.
  shrink::PreActBlockImpl preact(16, 32, 2, ShortcutKind::kProjection);
  preact.eval();
  auto p = preact.preactivate(x);
  EXPECT_TRUE(p.allclose(torch::relu(preact.bn1->forward(x))));
  EXPECT_EQ(preact.downsample->size(), 1u);
  EXPECT_TRUE(preact.shortcut(x, p).allclose(preact.downsample->ptr<shrink::nn::Conv2dImpl>(0)->forward(p)));
  EXPECT_TRUE(preact.forward(x).allclose(preact.branch(p) + preact.shortcut(x, p)));
}

TEST_F(ResNet, ZeroInitResidualAndReplacedBlocks) {
  torch::NoGradGuard no_grad;
  // With zero-initialized last BNs every layer1 block is relu(0 + x) = x on the ReLU'd stem.
  auto model = shrink::build_model(model_node("resnet20", {{"zero_init_residual", "true"}}), kCifar);
  model->eval();
  model->record_taps({"stem", "layer1"});
  model->forward(torch::randn({2, 3, 32, 32}));
  EXPECT_TRUE(model->tap("layer1").equal(model->tap("stem")));

  // Blocks swapped into a stage with replace_module are the ones that run.
  auto plain = shrink::build_model(model_node("resnet20"), kCifar);
  auto* net = dynamic_cast<shrink::CifarResNetImpl*>(plain.get());
  plain->eval();
  plain->record_taps({"stem", "layer1"});
  auto x = torch::randn({2, 3, 32, 32});
  plain->forward(x);
  EXPECT_FALSE(plain->tap("layer1").equal(plain->tap("stem")));
  std::shared_ptr<shrink::BasicBlockImpl> block;
  for (int i = 0; i < 3; ++i) {
    block = std::make_shared<shrink::BasicBlockImpl>(16, 16, 1, ShortcutKind::kZeroPad);
    torch::nn::init::zeros_(block->bn2->weight);
    block->eval();
    net->layer1->replace_module(std::to_string(i), std::static_pointer_cast<torch::nn::Module>(block));
  }
  plain->forward(x);
  EXPECT_TRUE(plain->tap("layer1").equal(plain->tap("stem")));
  EXPECT_EQ(net->residual_blocks()[2], block);
}

TEST_F(ResNet, PreActResNet20) {
  auto a = shrink::build_model(model_node("preact_resnet20"), kCifar);
  auto b = shrink::build_model(model_node("preact_resnet20", {{"shortcut", "B"}}), kCifar);
  EXPECT_EQ(count_parameters(a), cifar_reference(20, false, true, 3, 10).params);  // 269,722
  EXPECT_EQ(count_parameters(b), cifar_reference(20, true, true, 3, 10).params);   // 272,282
  EXPECT_EQ(count_macs(a, {3, 32, 32}), 40551040);
  auto names = keys(b->named_parameters());
  EXPECT_EQ(names.front(), "conv1.weight");
  EXPECT_EQ(names[1], "layer1.0.bn1.weight");  // no stem BN: the first block pre-activates
  EXPECT_NE(b->named_parameters().find("layer2.0.downsample.0.weight"), nullptr);
  EXPECT_EQ(b->named_parameters().find("layer2.0.downsample.1.weight"), nullptr);
  EXPECT_NE(b->named_parameters().find("bn.weight"), nullptr);  // final BN before pooling
  auto* net = dynamic_cast<shrink::PreActResNetImpl*>(a.get());
  ASSERT_NE(net, nullptr);
  for (const auto& block : net->residual_blocks())
    EXPECT_NE(std::dynamic_pointer_cast<shrink::PreActBlockImpl>(block), nullptr);
  EXPECT_EQ(net->residual_blocks()[3]->shortcut_kind, ShortcutKind::kZeroPad);

  a->record_taps({"layer3", "features"});
  auto y = a->forward(torch::randn({3, 3, 32, 32}));
  EXPECT_EQ(sizes(y), (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(sizes(a->tap("layer3")), (std::vector<int64_t>{3, 64, 8, 8}));
  // features come after the final BN-ReLU: non-negative.
  EXPECT_GE(a->tap("features").min().item<float>(), 0.0f);
}

TEST_F(ResNet, WideResNet16) {
  // WRN-16-4: 2.7M, WRN-16-8: 11.0M parameters (Zagoruyko & Komodakis 2016, Table 1 / Table 4).
  const std::map<int64_t, int64_t> expected = {{1, 175066}, {2, 691674}, {4, 2748890}, {8, 10961370}};
  for (const auto& [k, params] : expected) {
    auto model = shrink::build_model(model_node("wrn16", {{"widen_factor", std::to_string(k)}}), kCifar);
    EXPECT_EQ(count_parameters(model), params) << k;
    EXPECT_EQ(params, cifar_reference(16, true, true, 3, 10, k, /*wrn=*/true).params) << k;
    if (k <= 2) EXPECT_EQ(count_macs(model, {3, 32, 32}), cifar_reference(16, true, true, 3, 10, k, true).macs) << k;
  }
  EXPECT_NEAR(expected.at(4) / 1e6, 2.7, 0.05);
  EXPECT_NEAR(expected.at(8) / 1e6, 11.0, 0.05);

  auto model = shrink::build_model(model_node("wrn16", {{"widen_factor", "2"}, {"dropout", "0.3"}}),
                                   shrink::DataInfo{{3, 16, 16}, 4});
  auto* net = dynamic_cast<shrink::WideResNetImpl*>(model.get());
  ASSERT_NE(net, nullptr);
  EXPECT_EQ(net->residual_blocks().size(), 6u);
  // k = 2: the first block widens 16 -> 32, so it projects; the second keeps the shape.
  EXPECT_EQ(net->residual_blocks()[0]->shortcut_kind, ShortcutKind::kProjection);
  EXPECT_EQ(net->residual_blocks()[1]->shortcut_kind, ShortcutKind::kIdentity);
  model->record_taps({"layer1", "layer2", "layer3"});
  auto x = torch::randn({2, 3, 16, 16});
  torch::manual_seed(3);
  auto y1 = model->forward(x);
  EXPECT_EQ(sizes(model->tap("layer1")), (std::vector<int64_t>{2, 32, 16, 16}));
  EXPECT_EQ(sizes(model->tap("layer2")), (std::vector<int64_t>{2, 64, 8, 8}));
  EXPECT_EQ(sizes(model->tap("layer3")), (std::vector<int64_t>{2, 128, 4, 4}));
  auto y2 = model->forward(x);
  EXPECT_FALSE(y1.allclose(y2));  // dropout in training
  model->eval();
  EXPECT_TRUE(model->forward(x).equal(model->forward(x)));
}

TEST_F(ResNet, CifarResNetLearnsATinyProblem) {
  torch::manual_seed(0);
  const shrink::DataInfo data{{3, 8, 8}, 4};
  auto model = shrink::build_model(model_node("resnet20"), data);
  auto x = torch::randn({32, 3, 8, 8});
  auto labels = torch::randint(0, 4, {32}, torch::kLong);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  model->train();
  double first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    opt.zero_grad();
    auto loss = torch::cross_entropy_loss(model->forward(x), labels);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.6 * first) << "first " << first << " last " << last;
}

TEST_F(ResNet, DirectConstructionAndErrors) {
  shrink::CifarResNetImpl::Options options;
  options.num_classes = 3;
  options.shortcut = "B";
  auto model = std::make_shared<shrink::ResNet32Impl>(options, shrink::DataInfo{{3, 32, 32}, 0});
  EXPECT_EQ(model->depth, 32);
  EXPECT_EQ(model->forward(torch::zeros({1, 3, 32, 32})).size(1), 3);

  options.shortcut = "C";
  EXPECT_THROW(shrink::ResNet20Impl(options, kCifar), shrink::UserError);
  EXPECT_THROW(shrink::build_model(model_node("resnet20", {{"shortcut", "C"}}), kCifar), shrink::ConfigError);
  EXPECT_THROW(shrink::build_model(model_node("resnet20", {{"widen_factor", "2"}}), kCifar), shrink::ConfigError);
  EXPECT_THROW(shrink::build_model(model_node("wrn16", {{"widen_factor", "0"}}), kCifar), shrink::ConfigError);
  EXPECT_THROW(shrink::build_model(model_node("wrn16", {{"dropout", "1.5"}}), kCifar), shrink::ConfigError);
  EXPECT_THROW(shrink::build_model(model_node("resnet18"), shrink::DataInfo{{784}, 10}), shrink::UserError);
  EXPECT_THROW(shrink::build_model(model_node("resnet56"), shrink::DataInfo{{3, 32, 32}, 0}), shrink::UserError);
  try {
    shrink::build_model(model_node("resnet20", {{"shortcut", "b"}}), kCifar);
    FAIL() << "expected ConfigError";
  } catch (const shrink::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.shortcut"), std::string::npos) << e.what();
  }
}

}  // namespace
