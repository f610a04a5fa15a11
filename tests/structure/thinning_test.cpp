// Channel groups of the model zoo, and thinning: a thinned model computes what the masked
// model computes, has the parameters and MACs of a hand count, and keeps training.
#include <gtest/gtest.h>

#include <set>

#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/models/model.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/report/summary.h"
#include "shrink/structure/channel_groups.h"
#include "shrink/structure/structured_pruning.h"
#include "shrink/structure/thinning.h"

using namespace shrink;
using namespace shrink::structure;

namespace {

ModelPtr zoo(const std::string& yaml, std::vector<int64_t> shape = {3, 32, 32}, int64_t classes = 10) {
  torch::manual_seed(3);
  DataInfo info;
  info.sample_shape = std::move(shape);
  info.num_classes = classes;
  return build_model(ConfigNode(read_yaml_string(yaml, "model.yaml"), "model"), info);
}

/// Random biases and BatchNorm parameters, and BatchNorm statistics of the input `x` (so that
/// activations stay near unit scale through deep models); weights keep the zoo's random init.
void randomize(torch::nn::Module& model, uint64_t seed, const torch::Tensor& x) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  std::vector<torch::nn::BatchNorm2dImpl*> norms;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) norms.push_back(bn);
    if (auto* conv = m->as<nn::Conv2dImpl>(); conv && conv->bias.defined()) conv->bias.uniform_(-0.1, 0.1);
    if (auto* fc = m->as<nn::LinearImpl>(); fc && fc->bias.defined()) fc->bias.uniform_(-0.1, 0.1);
  }
  for (auto* bn : norms) bn->options.momentum(1.0);  // running statistics := this batch's
  model.train();
  dynamic_cast<ModelImpl&>(model).forward(x);
  for (auto* bn : norms) {
    bn->options.momentum(0.1);
    bn->running_var.clamp_min_(0.05);  // no near-constant channel amplifies the changes pruning makes
    bn->weight.uniform_(0.5, 1.5);
    bn->bias.uniform_(-0.2, 0.2);
  }
}

void copy_state(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto src = from.named_parameters();
  for (auto& p : to.named_parameters()) p.value().copy_(src[p.key()]);
  auto bufs = from.named_buffers();
  for (auto& b : to.named_buffers()) b.value().copy_(bufs[b.key()]);
}

std::vector<std::string> names_of(const std::vector<ChannelGroup>& groups, GroupKind kind) {
  std::vector<std::string> out;
  for (const auto& g : groups)
    if (g.kind == kind) out.push_back(g.name);
  return out;
}

/// Groups whose name matches one of the globs ("*" = all).
std::vector<ChannelGroup> pick(torch::nn::Module& model, const std::vector<std::string>& globs) {
  std::vector<ChannelGroup> out;
  for (auto& g : channel_groups(model))
    for (const auto& pattern : globs)
      if (glob_match(pattern, g.name)) {
        out.push_back(g);
        break;
      }
  return out;
}

int64_t count_parameters(torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

/// Every layer's options describe its tensors (so MACs, printing and clone() are right).
void expect_options_match_shapes(torch::nn::Module& model) {
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const auto& m = item.value();
    if (auto* conv = m->as<nn::Conv2dImpl>()) {
      const auto& o = conv->options;
      EXPECT_EQ(conv->weight.size(0), o.out_channels()) << item.key();
      EXPECT_EQ(conv->weight.size(1), o.in_channels() / o.groups()) << item.key();
      if (conv->bias.defined()) EXPECT_EQ(conv->bias.size(0), o.out_channels()) << item.key();
    } else if (auto* fc = m->as<nn::LinearImpl>()) {
      EXPECT_EQ(fc->weight.size(0), fc->options.out_features()) << item.key();
      EXPECT_EQ(fc->weight.size(1), fc->options.in_features()) << item.key();
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      EXPECT_EQ(bn->weight.size(0), bn->options.num_features()) << item.key();
      EXPECT_EQ(bn->running_var.size(0), bn->options.num_features()) << item.key();
    }
  }
}

/// Prunes `globs` of two copies of a model at `ratio` (L1 per group), masking one and
/// thinning the other; their outputs must agree and differ from the dense model's.
void expect_thinned_equals_masked(const std::string& yaml, const std::vector<std::string>& globs,
                                  std::vector<int64_t> shape = {3, 32, 32}, double ratio = 0.5) {
  SCOPED_TRACE(yaml);
  auto masked = zoo(yaml, shape), thinned = zoo(yaml, shape);
  torch::manual_seed(5);
  std::vector<int64_t> input_shape = {2};
  input_shape.insert(input_shape.end(), shape.begin(), shape.end());
  const auto x = torch::randn(input_shape);
  randomize(*masked, 11, x);
  copy_state(*masked, *thinned);
  masked->eval();
  thinned->eval();
  torch::NoGradGuard no_grad;
  const auto dense_out = masked->forward(x);

  auto mg = pick(*masked, globs), tg = pick(*thinned, globs);
  ASSERT_FALSE(mg.empty());
  ASSERT_EQ(mg.size(), tg.size());
  std::vector<torch::Tensor> scores;
  for (const auto& g : mg) scores.push_back(channel_scores(g, "l1"));
  const auto keep = select_channels(scores, ratio, false, 1);
  int64_t removed = 0;
  for (size_t i = 0; i < mg.size(); ++i) {
    ASSERT_EQ(mg[i].name, tg[i].name);
    mask_channels(mg[i], keep[i]);
    removed += mg[i].channels() - static_cast<int64_t>(keep[i].size());
  }
  const int64_t dense_params = count_parameters(*thinned);
  for (size_t i = 0; i < tg.size(); ++i) thin(tg[i], keep[i]);
  EXPECT_GT(removed, 0);
  EXPECT_LT(count_parameters(*thinned), dense_params);
  for (size_t i = 0; i < tg.size(); ++i) EXPECT_EQ(tg[i].channels(), static_cast<int64_t>(keep[i].size()));

  const auto masked_out = masked->forward(x), thinned_out = thinned->forward(x);
  ASSERT_EQ(masked_out.sizes(), thinned_out.sizes());
  // Within 1e-5, relative to the output scale when it exceeds 1 (float sums in another order).
  const double scale = std::max(1.0, masked_out.abs().max().item<double>());
  EXPECT_TRUE(torch::allclose(masked_out, thinned_out, 1e-5, 1e-5 * scale))
      << "max difference " << (masked_out - thinned_out).abs().max().item<double>() << " at output scale "
      << scale;
  EXPECT_GT((dense_out - masked_out).abs().max().item<double>(), 1e-4) << "pruning changed nothing";
  expect_options_match_shapes(*thinned);
}

}  // namespace

// ---- groups ----

TEST(ChannelGroups, ResNetShortcutAOffersOnlyBlockInternalGroups) {
  auto model = zoo("name: resnet20\n");
  auto groups = channel_groups(*model);
  EXPECT_EQ(names_of(groups, GroupKind::internal),
            (std::vector<std::string>{"layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1",
                                      "layer2.1.conv1", "layer2.2.conv1", "layer3.0.conv1", "layer3.1.conv1",
                                      "layer3.2.conv1"}));
  EXPECT_TRUE(names_of(groups, GroupKind::stream).empty());
  const auto& g = groups[3];
  ASSERT_EQ(g.members.size(), 3u);
  EXPECT_EQ(g.members[0].path, "layer2.0.conv1");
  EXPECT_EQ(g.members[1].path, "layer2.0.bn1");
  EXPECT_EQ(g.members[2].path, "layer2.0.conv2");
  EXPECT_EQ(g.members[2].role, ChannelRole::consumer);
  EXPECT_EQ(g.channels(), 32);
}

TEST(ChannelGroups, ResidualStreamsTieEveryWriterOfAStage) {
  auto model = zoo("name: resnet20\nshortcut: B\n");
  auto groups = channel_groups(*model);
  EXPECT_EQ(names_of(groups, GroupKind::stream),
            (std::vector<std::string>{"stream.layer1", "stream.layer2", "stream.layer3"}));
  const auto& s2 = groups[10];
  ASSERT_EQ(s2.name, "stream.layer2");
  std::vector<std::string> producers, consumers, norms;
  for (const auto* m : s2.with_role(ChannelRole::producer)) producers.push_back(m->path);
  for (const auto* m : s2.with_role(ChannelRole::consumer)) consumers.push_back(m->path);
  for (const auto* m : s2.with_role(ChannelRole::norm)) norms.push_back(m->path);
  EXPECT_EQ(producers, (std::vector<std::string>{"layer2.0.downsample.0", "layer2.0.conv2", "layer2.1.conv2",
                                                 "layer2.2.conv2"}));
  EXPECT_EQ(norms, (std::vector<std::string>{"layer2.0.downsample.1", "layer2.0.bn2", "layer2.1.bn2",
                                             "layer2.2.bn2"}));
  EXPECT_EQ(consumers, (std::vector<std::string>{"layer2.1.conv1", "layer2.2.conv1", "layer3.0.conv1",
                                                 "layer3.0.downsample.0"}));
  // The stem writes layer1's stream (layer1.0 keeps the shape: identity shortcut).
  EXPECT_EQ(groups[9].members[0].path, "conv1");
  EXPECT_EQ(groups[11].with_role(ChannelRole::consumer).back()->path, "fc");

  auto r50 = zoo("name: resnet50\n", {3, 32, 32});
  auto g50 = channel_groups(*r50);
  EXPECT_EQ(names_of(g50, GroupKind::stream),
            (std::vector<std::string>{"stream.stem", "stream.layer1", "stream.layer2", "stream.layer3",
                                      "stream.layer4"}));
  EXPECT_EQ(names_of(g50, GroupKind::internal).size(), 2u * 16u);
}

TEST(ChannelGroups, EveryZooModelHasGroups) {
  // (vgg16 and alexnet are covered by the disabled heavy test below: their 4096-wide Linears
  // take seconds to build.)
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"name: resnet32\n", {"layer1.0.conv1"}},
      {"name: resnet44\nshortcut: B\n", {"stream.layer3"}},
      {"name: resnet56\n", {"layer3.8.conv1"}},
      {"name: resnet110\n", {"layer3.17.conv1"}},
      {"name: preact_resnet20\nshortcut: B\n", {"layer1.0.conv1", "stream.layer1", "stream.layer3"}},
      {"name: preact_resnet20\n", {"layer1.0.conv1"}},
      {"name: wrn16\n", {"stream.stem", "stream.layer1", "layer3.1.conv1"}},
      {"name: resnet18\n", {"stream.layer1", "stream.layer4", "layer4.1.conv1"}},
      {"name: vgg11_bn_cifar\n", {"features.0", "features.22"}},
      {"name: vgg16_bn_cifar\n", {"features.0", "features.40"}},
      {"name: mobilenet_v1_cifar\n", {"features.0.0", "features.1.pointwise", "features.13.pointwise"}},
      {"name: mobilenet_v2_cifar\n",
       {"features.0.0", "features.1.conv.1", "features.2.conv.0.0", "stream.features.2", "stream.features.14",
        "features.17.conv.2", "features.18.0"}},
      {"name: squeezenet1_1_cifar\n",
       {"features.0", "features.3.squeeze", "features.3.expand1x1", "features.12.expand3x3"}},
  };
  for (const auto& [yaml, expected] : cases) {
    auto model = zoo(yaml);
    std::set<std::string> names;
    for (const auto& g : channel_groups(*model)) names.insert(g.name);
    for (const auto& e : expected) EXPECT_TRUE(names.count(e)) << yaml << " lacks " << e;
  }
  auto v1 = zoo("name: mobilenet_v1\n", {3, 64, 64});
  EXPECT_EQ(channel_groups(*v1).size(), 14u);
  auto v2 = zoo("name: mobilenet_v2\n", {3, 64, 64});
  EXPECT_FALSE(channel_groups(*v2).empty());
  auto sq = zoo("name: squeezenet1_1\n", {3, 64, 64});
  EXPECT_EQ(channel_groups(*sq).size(), 1u + 3u * 8u);
  auto l5 = zoo("name: lenet5\n", {1, 28, 28});
  auto g5 = channel_groups(*l5);
  ASSERT_EQ(g5.size(), 3u);
  EXPECT_EQ(g5[1].name, "conv2");
  EXPECT_EQ(g5[1].with_role(ChannelRole::consumer)[0]->block, 16);  // 4x4 positions per channel
  auto l300 = zoo("name: lenet300\n", {1, 28, 28});
  EXPECT_EQ(names_of(channel_groups(*l300), GroupKind::internal), (std::vector<std::string>{"fc1", "fc2"}));
}

TEST(ChannelGroups, MobileNetV2TiesProjectionsOnlyAcrossResidualAdds) {
  auto model = zoo("name: mobilenet_v2_cifar\n");
  for (const auto& g : channel_groups(*model)) {
    if (g.name == "stream.features.4") {  // features.4, 5, 6: the 32-channel stage
      std::vector<std::string> producers;
      for (const auto* m : g.with_role(ChannelRole::producer)) producers.push_back(m->path);
      EXPECT_EQ(producers,
                (std::vector<std::string>{"features.4.conv.2", "features.5.conv.2", "features.6.conv.2"}));
    }
    if (g.name == "features.2.conv.0.0") {  // expansion through the depthwise conv
      ASSERT_EQ(g.with_role(ChannelRole::passthrough).size(), 1u);
      EXPECT_EQ(g.with_role(ChannelRole::passthrough)[0]->path, "features.2.conv.1.0");
      EXPECT_EQ(g.with_role(ChannelRole::norm).size(), 2u);
      EXPECT_EQ(g.kind, GroupKind::internal);
    }
  }
}

// ---- thinned == masked ----

TEST(Thinning, ResNet20ShortcutAInternalGroups) { expect_thinned_equals_masked("name: resnet20\n", {"*"}); }
TEST(Thinning, ResNet20ShortcutBWithDownsampleStreams) {
  expect_thinned_equals_masked("name: resnet20\nshortcut: B\n", {"*"});
}
TEST(Thinning, PreActResNetAndWideResNetStreams) {
  expect_thinned_equals_masked("name: preact_resnet20\nshortcut: B\n", {"*"});
  expect_thinned_equals_masked("name: wrn16\nwiden_factor: 2\n", {"stream.*", "layer2.*"});
}
TEST(Thinning, ResNet18StreamGroup) {
  expect_thinned_equals_masked("name: resnet18\n", {"stream.layer2", "stream.layer4", "layer3.0.conv1"});
}
TEST(Thinning, MobileNetV1Depthwise) { expect_thinned_equals_masked("name: mobilenet_v1_cifar\n", {"*"}); }
TEST(Thinning, MobileNetV2ExpansionsAndResidualProjections) {
  expect_thinned_equals_masked("name: mobilenet_v2_cifar\n", {"*"});
}
TEST(Thinning, SqueezeNetFireConcatenation) { expect_thinned_equals_masked("name: squeezenet1_1_cifar\n", {"*"}); }
TEST(Thinning, VggWithBatchNorm) { expect_thinned_equals_masked("name: vgg11_bn_cifar\n", {"*"}); }
TEST(Thinning, LeNet5LinearAfterFlatten) {
  expect_thinned_equals_masked("name: lenet5\n", {"*"}, {1, 28, 28});
  expect_thinned_equals_masked("name: lenet300\n", {"*"}, {1, 28, 28}, 0.7);
}

// Large ImageNet models: run with --gtest_also_run_disabled_tests.
TEST(Thinning, DISABLED_LargeImageNetModels) {
  expect_thinned_equals_masked("name: resnet50\n", {"*"}, {3, 64, 64});
  expect_thinned_equals_masked("name: vgg16\n", {"*"}, {3, 32, 32});
  expect_thinned_equals_masked("name: alexnet\n", {"*"}, {3, 64, 64});
  expect_thinned_equals_masked("name: mobilenet_v2\n", {"*"}, {3, 64, 64});
  expect_thinned_equals_masked("name: squeezenet1_1\n", {"*"}, {3, 64, 64});
}

// ---- counts ----

TEST(Thinning, ResNet20HalfInternalChannelsMatchesAHandCount) {
  auto model = zoo("name: resnet20\n");
  const auto dense = summarize(model, {3, 32, 32});
  EXPECT_EQ(dense.parameters, 269722);
  for (const auto& g : channel_groups(*model)) {
    std::vector<int64_t> keep;
    for (int64_t c = 0; c < g.channels(); c += 2) keep.push_back(c);
    thin(g, keep);
  }
  const auto thinned = summarize(model, {3, 32, 32});
  // Each block of width w, input width in, output size s x s loses r = w / 2 filters of conv1
  // (r * in * 9 weights, 2r BN parameters) and r input channels of conv2 (w * r * 9).
  int64_t params = 0, macs = 0;
  const struct {
    int64_t in, w, s;
  } blocks[] = {{16, 16, 32}, {16, 16, 32}, {16, 16, 32}, {16, 32, 16}, {32, 32, 16},
                {32, 32, 16}, {32, 64, 8},  {64, 64, 8},  {64, 64, 8}};
  for (const auto& b : blocks) {
    const int64_t r = b.w / 2;
    params += r * b.in * 9 + 2 * r + b.w * r * 9;
    macs += b.s * b.s * (r * b.in * 9 + b.w * r * 9);
  }
  EXPECT_EQ(thinned.parameters, dense.parameters - params);
  EXPECT_EQ(thinned.macs, dense.macs - macs);
  std::printf("resnet20 (shortcut A), every internal group at half: %lld -> %lld parameters, %lld -> %lld MACs "
              "(%.2fx fewer)\n",
              static_cast<long long>(dense.parameters), static_cast<long long>(thinned.parameters),
              static_cast<long long>(dense.macs), static_cast<long long>(thinned.macs),
              static_cast<double>(dense.macs) / static_cast<double>(thinned.macs));
}

TEST(Thinning, StreamGroupCountsIncludeEveryTiedLayer) {
  auto model = zoo("name: resnet20\nshortcut: B\n");
  const auto dense = summarize(model, {3, 32, 32});
  auto groups = pick(*model, {"stream.layer3"});
  ASSERT_EQ(groups.size(), 1u);
  std::vector<int64_t> keep;
  for (int64_t c = 0; c < 48; ++c) keep.push_back(c);
  thin(groups[0], keep);  // 64 -> 48: 16 channels
  const auto thinned = summarize(model, {3, 32, 32});
  const int64_t r = 16;
  // Producers: downsample 1x1 (32 in), three conv2 (64 in, 3x3); four BNs; consumers: conv1 of
  // blocks 1 and 2 (64 out, 3x3), and fc (10 outputs, no bias change).
  const int64_t params = r * 32 + 3 * (r * 64 * 9) + 4 * 2 * r + 2 * (64 * r * 9) + 10 * r;
  EXPECT_EQ(thinned.parameters, dense.parameters - params);
  // At 8x8 each conv's MACs are 64 x its weights; fc reads one value per channel.
  const int64_t macs = 64 * (r * 32 + 3 * r * 64 * 9 + 2 * 64 * r * 9) + 10 * r;
  EXPECT_EQ(thinned.macs, dense.macs - macs);
}

// ---- training after thinning ----

TEST(Thinning, SetKeepsParameterIdentityAndSgdMomentumTrainsAfterForgettingState) {
  auto model = zoo("name: resnet20\nshortcut: B\n");
  model->train();
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-4));
  torch::manual_seed(1);
  const auto x = torch::randn({4, 3, 32, 32});
  const auto y = torch::tensor({0, 1, 2, 3}, torch::kLong);
  auto step = [&] {
    sgd.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    sgd.step();
    return loss.item<double>();
  };
  step();
  ASSERT_FALSE(sgd.state().empty());
  auto groups = pick(*model, {"stream.layer2", "layer1.1.conv1"});
  ASSERT_EQ(groups.size(), 2u);
  ASSERT_EQ(groups[1].name, "stream.layer2");
  auto* downsample = groups[1].members[0].module.get();  // layer2.0.downsample.0, 32 filters
  const auto* impl_before = downsample->named_parameters()["weight"].unsafeGetTensorImpl();
  std::vector<torch::Tensor> resized;
  for (const auto& g : groups) {
    std::vector<int64_t> keep;
    for (int64_t c = 1; c < g.channels(); c += 2) keep.push_back(c);
    auto r = thin(g, keep);
    resized.insert(resized.end(), r.begin(), r.end());
  }
  // The same TensorImpl, now smaller, with no stale gradient; the optimizer sees it.
  const auto w = downsample->named_parameters()["weight"];
  EXPECT_EQ(w.unsafeGetTensorImpl(), impl_before);
  EXPECT_EQ(w.size(0), 16);
  EXPECT_FALSE(w.grad().defined());
  EXPECT_TRUE(w.requires_grad());
  bool found = false;
  for (const auto& p : sgd.param_groups()[0].params()) found = found || p.unsafeGetTensorImpl() == impl_before;
  EXPECT_TRUE(found);
  const auto before = sgd.state().size();
  EXPECT_EQ(forget_optimizer_state(sgd, resized), static_cast<int64_t>(resized.size()));
  EXPECT_EQ(sgd.state().size(), before - resized.size());
  const auto w_before = w.detach().clone();
  double loss = 0;
  for (int i = 0; i < 3; ++i) loss = step();
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_FALSE(torch::equal(w_before, w.detach()));
  EXPECT_EQ(sgd.state().size(), before);  // momentum restarted with the new shapes
}

TEST(Thinning, MaskedWeightsAreThinnedWithTheirMasks) {
  auto model = zoo("name: resnet20\n");
  auto groups = pick(*model, {"layer1.0.conv1"});
  auto* conv2 = groups[0].members[2].module->as<nn::Conv2dImpl>();
  conv2->enable_mask();
  conv2->weight_mask.index_fill_(0, torch::tensor({3}), 0.0);
  thin(groups[0], {0, 1, 2, 3});
  EXPECT_EQ(conv2->weight_mask.sizes(), conv2->weight.sizes());
  EXPECT_EQ(conv2->weight.size(1), 4);
  EXPECT_EQ(conv2->options.in_channels(), 4);
  EXPECT_EQ(conv2->weight_mask[3].sum().item<double>(), 0.0);
  EXPECT_EQ(conv2->weight_mask[2].sum().item<double>(), 4 * 9);
}

TEST(Thinning, KeepIndicesAreChecked) {
  auto model = zoo("name: lenet5\n", {1, 28, 28});
  auto g = channel_groups(*model)[0];
  EXPECT_THROW(thin(g, {}), c10::Error);
  EXPECT_THROW(thin(g, {3, 1}), c10::Error);
  EXPECT_THROW(thin(g, {0, 20}), c10::Error);
}

// ---- user models ----

namespace {
struct TwoConvImpl : ModelImpl {
  TwoConvImpl() {
    a = register_module("a", nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)));
    b = register_module("b", nn::Conv2d(nn::Conv2dOptions(8, 6, 3).padding(1)));
    fc = register_module("fc", nn::Linear(6 * 4 * 4, 5));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto y = torch::relu(b(torch::relu(a(x))));
    return fc(torch::adaptive_avg_pool2d(y, {4, 4}).flatten(1));
  }
  nn::Conv2d a{nullptr}, b{nullptr};
  nn::Linear fc{nullptr};
};
}  // namespace

TEST(ChannelGroups, UsersDescribeTheirOwnModels) {
  auto model = std::make_shared<TwoConvImpl>();
  EXPECT_FALSE(has_channel_groups(*model));
  try {
    channel_groups(*model);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("register_channel_groups"), std::string::npos) << e.what();
  }
  register_channel_groups<TwoConvImpl>([](torch::nn::Module& m) {
    auto& net = dynamic_cast<TwoConvImpl&>(m);
    return std::vector<ChannelGroup>{ChannelGroup().producer(net.a.ptr()).consumer(net.b.ptr()),
                                     ChannelGroup().producer(net.b.ptr()).consumer(net.fc.ptr(), 16)};
  });
  ASSERT_TRUE(has_channel_groups(*model));
  auto groups = channel_groups(*model);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[1].name, "b");
  torch::manual_seed(2);
  const auto x = torch::randn({2, 3, 8, 8});
  torch::NoGradGuard no_grad;
  auto reference = std::make_shared<TwoConvImpl>();
  copy_state(*model, *reference);
  auto rg = channel_groups(*reference);
  mask_channels(rg[0], {0, 2, 5});
  mask_channels(rg[1], {1, 4});
  thin(groups[0], {0, 2, 5});
  thin(groups[1], {1, 4});
  EXPECT_EQ(model->fc->options.in_features(), 32);
  EXPECT_TRUE(torch::allclose(model->forward(x), reference->forward(x), 1e-5, 1e-5));
}
