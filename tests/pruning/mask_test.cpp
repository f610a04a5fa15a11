// Masks: selection against slow references (per layer, global, ties), the AGP and iterative
// formulas, and pruned weights staying exactly zero through SGD with momentum and weight decay,
// and through Adam, on Shrink layers, plain torch::nn modules and TorchScript modules.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/pruning/mask.h"

using namespace shrink;
using namespace shrink::pruning;

namespace {

/// Reference: indices of the k smallest scores by a full sort of (score, position).
std::vector<int64_t> smallest_k(const torch::Tensor& scores, int64_t k) {
  auto flat = scores.reshape({-1}).to(torch::kDouble);
  std::vector<std::pair<double, int64_t>> v;
  for (int64_t i = 0; i < flat.numel(); ++i) v.emplace_back(flat[i].item<double>(), i);
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<int64_t> out;
  for (int64_t i = 0; i < k; ++i) out.push_back(v[i].second);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int64_t> zeros_of(const torch::Tensor& mask) {
  std::vector<int64_t> out;
  auto flat = mask.reshape({-1});
  for (int64_t i = 0; i < flat.numel(); ++i)
    if (flat[i].item<float>() == 0) out.push_back(i);
  return out;
}

struct TwoLayers : torch::nn::Module {
  TwoLayers() {
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(2, 4, 3).padding(1)));
    fc = register_module("fc", nn::Linear(4 * 5 * 5, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc->forward(torch::relu(conv->forward(x)).flatten(1)); }
  nn::Conv2d conv{nullptr};
  nn::Linear fc{nullptr};
};

/// One training step as the trainer does it, returning the weights right after the optimizer
/// step (before masks are re-applied).
template <class Model>
std::vector<torch::Tensor> step(Model& model, torch::optim::Optimizer& opt, const torch::Tensor& x,
                                const torch::Tensor& y) {
  opt.zero_grad();
  auto loss = torch::nn::functional::cross_entropy(model.forward(x), y);
  loss.backward();
  mask_gradients(model);
  opt.step();
  std::vector<torch::Tensor> after;
  for (const auto& w : layer_masks(model)) after.push_back(w.weight.detach().clone());
  apply_masks(model);
  return after;
}

}  // namespace

TEST(Masks, KeepLargestPrunesExactlyTheSmallest) {
  torch::manual_seed(3);
  auto scores = torch::randn({7, 13});
  for (double s : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    auto mask = keep_largest(scores.abs(), s);
    const int64_t k = std::llround(s * scores.numel());
    EXPECT_EQ(zeros_of(mask), smallest_k(scores.abs(), k)) << "sparsity " << s;
  }
  // Ties: exactly k pruned, the first positions first.
  auto ties = torch::zeros({10});
  EXPECT_EQ(zeros_of(keep_largest(ties, 0.3)), (std::vector<int64_t>{0, 1, 2}));
}

TEST(Masks, GlobalThresholdSpansLayers) {
  torch::manual_seed(4);
  auto a = torch::randn({20, 10}) * 0.01;  // small weights: a global threshold prunes them first
  auto b = torch::randn({30, 5});
  auto masks = keep_largest_global({a.abs(), b.abs()}, 0.5);
  auto all = torch::cat({a.abs().reshape({-1}), b.abs().reshape({-1})});
  const auto expected = smallest_k(all, std::llround(0.5 * all.numel()));
  auto got_all = zeros_of(torch::cat({masks[0].reshape({-1}), masks[1].reshape({-1})}));
  EXPECT_EQ(got_all, expected);
  EXPECT_GT(mask_sparsity(masks[0]), 0.8);  // the small layer loses most
  EXPECT_LT(mask_sparsity(masks[1]), 0.5);
  // Per layer, both are at exactly 50%.
  EXPECT_DOUBLE_EQ(mask_sparsity(keep_largest(a.abs(), 0.5)), 0.5);
  EXPECT_DOUBLE_EQ(mask_sparsity(keep_largest(b.abs(), 0.5)), 0.5);
}

TEST(Masks, AgpAndIterativeFormulas) {
  // s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3
  for (int64_t t : {0, 10, 25, 50, 75, 99, 100, 120}) {
    const double p = std::clamp((t - 10) / 90.0, 0.0, 1.0);
    const double expected = 0.9 + (0.1 - 0.9) * std::pow(1 - p, 3);
    EXPECT_NEAR(agp_sparsity(0.1, 0.9, 10, 100, t), expected, 1e-12) << t;
  }
  EXPECT_DOUBLE_EQ(iterative_sparsity(0.875, 3, 0), 0.0);
  EXPECT_NEAR(iterative_sparsity(0.875, 3, 1), 0.5, 1e-12);  // each cycle keeps half of the rest
  EXPECT_NEAR(iterative_sparsity(0.875, 3, 2), 0.75, 1e-12);
  EXPECT_DOUBLE_EQ(iterative_sparsity(0.875, 3, 3), 0.875);
}

TEST(Masks, LayerMaskIsABufferThatClonesAndSaves) {
  nn::Linear fc(4, 3);
  EXPECT_FALSE(fc->masked());
  EXPECT_EQ(fc->named_buffers().size(), 0u);
  fc->enable_mask();
  EXPECT_TRUE(fc->masked());
  ASSERT_EQ(fc->named_buffers().size(), 1u);
  fc->weight_mask.copy_(keep_largest(fc->weight.abs(), 0.5));
  fc->apply_mask();
  auto copy = std::dynamic_pointer_cast<nn::LinearImpl>(fc->clone());
  ASSERT_TRUE(copy->weight_mask.defined());
  EXPECT_TRUE(torch::equal(copy->weight_mask, fc->weight_mask));
  EXPECT_EQ(copy->weight.count_nonzero().item<int64_t>(), 6);
  // A state dict with masks enables them in a fresh model.
  TwoLayers a, b;
  a.fc->enable_mask();
  std::vector<std::string> names;
  for (const auto& item : a.named_buffers()) names.push_back(item.key());
  EXPECT_EQ(enable_masks_named(b, names), 1);
  EXPECT_TRUE(b.fc->masked());
  EXPECT_FALSE(b.conv->masked());
}

TEST(Masks, PrunedWeightsStayZeroThroughSgdMomentumAndWeightDecay) {
  torch::manual_seed(5);
  TwoLayers model;
  for (auto& m : {std::shared_ptr<torch::nn::Module>(model.conv.ptr()), std::shared_ptr<torch::nn::Module>(model.fc.ptr())})
    enable_layer_mask(*m);
  for (auto& w : layer_masks(model)) w.mask.copy_(keep_largest(w.weight.abs(), 0.6));
  apply_masks(model);
  torch::optim::SGD opt(model.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.01));
  auto x = torch::randn({8, 2, 5, 5});
  auto y = torch::randint(0, 3, {8});
  auto before = layer_masks(model)[0].weight.clone();
  for (int i = 0; i < 5; ++i) {
    auto after_step = step(model, opt, x, y);
    auto masks = layer_masks(model);
    for (size_t j = 0; j < masks.size(); ++j) {
      // The optimizer alone did not move them (no gradient, no momentum, no decay of a zero).
      EXPECT_EQ(after_step[j].masked_select(masks[j].mask == 0).abs().max().item<float>(), 0.0f);
      EXPECT_EQ(masks[j].weight.masked_select(masks[j].mask == 0).abs().max().item<float>(), 0.0f);
    }
  }
  // Survivors did train.
  auto w = layer_masks(model)[0];
  EXPECT_FALSE(torch::equal(before.masked_select(w.mask == 1), w.weight.masked_select(w.mask == 1)));
}

TEST(Masks, PrunedWeightsStayZeroThroughAdam) {
  torch::manual_seed(6);
  TwoLayers model;
  model.fc->enable_mask();
  model.fc->weight_mask.copy_(keep_largest(model.fc->weight.abs(), 0.8));
  apply_masks(model);
  torch::optim::Adam opt(model.parameters(), torch::optim::AdamOptions(0.01).weight_decay(0.01));
  auto x = torch::randn({8, 2, 5, 5});
  auto y = torch::randint(0, 3, {8});
  for (int i = 0; i < 5; ++i) {
    auto after_step = step(model, opt, x, y);
    EXPECT_EQ(after_step[0].masked_select(model.fc->weight_mask == 0).abs().max().item<float>(), 0.0f);
  }
  EXPECT_EQ(model.fc->weight.count_nonzero().item<int64_t>(), model.fc->weight_mask.sum().item<int64_t>());
}

TEST(Masks, ParameterMasksOnPlainAndTorchScriptModules) {
  torch::manual_seed(7);
  torch::nn::Linear plain(6, 4);
  ParameterMasks masks;
  masks.add(*plain, "weight");
  masks.set_mask("weight", keep_largest(plain->weight.abs(), 0.5));
  torch::optim::SGD opt(plain->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.1));
  auto x = torch::randn({5, 6});
  for (int i = 0; i < 4; ++i) {
    opt.zero_grad();
    plain->forward(x).pow(2).sum().backward();
    masks.mask_gradients();
    opt.step();
    masks.apply();
  }
  EXPECT_EQ(plain->weight.count_nonzero().item<int64_t>(), 12);
  EXPECT_THROW(masks.add(*plain, "nope"), UserError);

  // A TorchScript module's parameter, masked by name and trained from C++.
  torch::jit::Module script("m");
  script.register_parameter("w", torch::randn({4, 4}), false);
  ParameterMasks jit_masks;
  jit_masks.add(script, "w");
  auto w = jit_masks.weights()[0].weight;
  jit_masks.set_mask("w", keep_largest(w.abs(), 0.25));
  w.set_requires_grad(true);
  torch::optim::SGD jit_opt({w}, torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(0.1));
  for (int i = 0; i < 4; ++i) {
    jit_opt.zero_grad();
    torch::mm(torch::ones({2, 4}), w).pow(2).sum().backward();
    jit_masks.mask_gradients();
    jit_opt.step();
    jit_masks.apply();
  }
  EXPECT_EQ(script.attr("w").toTensor().count_nonzero().item<int64_t>(), 12);
  EXPECT_THROW(jit_masks.add(script, "missing"), UserError);
}
