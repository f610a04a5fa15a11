// HashedNets (Chen et al. 2015): HashedLinear against a slow reference built from the hash
// functions (forward and the gradient of the stored vector, summed over collisions), parameter
// counts, clone and state dict, and the mlp / hashed_mlp models through the model registry.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/models/mlp.h"
#include "shrink/models/model.h"
#include "shrink/nn/hashed_linear.h"

using namespace shrink;

namespace {

/// V[i][j] = sign(i, j) * w[h(i, j)], from the hash functions alone.
torch::Tensor reference_virtual(const torch::Tensor& w, int64_t in, int64_t out, int64_t seed) {
  auto v = torch::empty({out, in}, torch::kFloat64);
  auto wd = w.detach().to(torch::kFloat64);
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < in; ++j)
      v[i][j] = nn::detail::hashed_sign(seed, i, j) *
                wd[nn::detail::hashed_index(seed, i, j, w.numel())].item<double>();
  return v;
}

int64_t count_parameters(const ModelPtr& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

ModelPtr build(const std::string& yaml, const DataInfo& data) {
  return build_model(ConfigNode(read_yaml_string(yaml, "model.yaml"), "model"), data);
}

const DataInfo kMnist{{1, 28, 28}, 10};

}  // namespace

TEST(HashedLinear, ForwardEqualsTheSlowHashedReference) {
  torch::manual_seed(1);
  const int64_t in = 13, out = 7, seed = 42;
  nn::HashedLinear fc(nn::HashedLinearOptions(in, out).compression(0.25).seed(seed));
  EXPECT_EQ(fc->weight.numel(), std::llround(0.25 * in * out));
  auto x = torch::randn({5, in});
  auto v = reference_virtual(fc->weight, in, out, seed);
  // y[n][i] = sum_j x[n][j] V[i][j] + b[i], by loops.
  auto y_ref = torch::empty({5, out}, torch::kFloat64);
  for (int64_t n = 0; n < 5; ++n)
    for (int64_t i = 0; i < out; ++i) {
      double s = fc->bias[i].item<double>();
      for (int64_t j = 0; j < in; ++j) s += x[n][j].item<double>() * v[i][j].item<double>();
      y_ref[n][i] = s;
    }
  EXPECT_TRUE(torch::allclose(fc(x).to(torch::kFloat64), y_ref, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(fc->virtual_weight().to(torch::kFloat64), v));
  // Both signs occur, and the hash spreads the virtual weights over most stored entries.
  EXPECT_GT(v.lt(0).sum().item<int64_t>(), 0);
  EXPECT_GT(v.gt(0).sum().item<int64_t>(), 0);
  EXPECT_GT(std::get<0>(torch::_unique(fc->hash_index.remainder(fc->weight.numel()))).numel(),
            fc->weight.numel() * 3 / 4);
}

TEST(HashedLinear, GradientOfTheStoredVectorSumsOverCollisions) {
  torch::manual_seed(2);
  const int64_t in = 9, out = 6, seed = 3;
  nn::HashedLinear fc(nn::HashedLinearOptions(in, out).compression(0.125).seed(seed));
  auto x = torch::randn({4, in});
  auto upstream = torch::randn({4, out});
  (fc(x) * upstream).sum().backward();
  // dL/dV = upstream^T x; dL/dw[k] = sum over (i, j) with h(i, j) = k of sign(i, j) dL/dV[i][j].
  auto dv = upstream.t().mm(x).to(torch::kFloat64);
  auto ref = torch::zeros({fc->weight.numel()}, torch::kFloat64);
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < in; ++j) {
      const auto k = nn::detail::hashed_index(seed, i, j, fc->weight.numel());
      ref[k] += nn::detail::hashed_sign(seed, i, j) * dv[i][j].item<double>();
    }
  EXPECT_TRUE(torch::allclose(fc->weight.grad().to(torch::kFloat64), ref, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(fc->bias.grad(), upstream.sum(0)));
}

TEST(HashedLinear, ParameterCountsCloneAndState) {
  nn::HashedLinear a(nn::HashedLinearOptions(100, 30).compression(1.0 / 64).seed(1));
  EXPECT_EQ(a->weight.numel(), std::llround(3000.0 / 64));  // 47
  EXPECT_EQ(a->bias.numel(), 30);
  nn::HashedLinear tiny(nn::HashedLinearOptions(3, 2).compression(0.01).bias(false));
  EXPECT_EQ(tiny->weight.numel(), 1) << "at least one stored weight";
  EXPECT_EQ(tiny->parameters().size(), 1u);
  EXPECT_EQ(a->bits_per_weight(), 32.0);

  // Same seed, same hash; another seed, another hash.
  nn::HashedLinear same(nn::HashedLinearOptions(100, 30).compression(1.0 / 64).seed(1));
  nn::HashedLinear other(nn::HashedLinearOptions(100, 30).compression(1.0 / 64).seed(2));
  EXPECT_TRUE(torch::equal(a->hash_index, same->hash_index));
  EXPECT_FALSE(torch::equal(a->hash_index, other->hash_index));

  auto x = torch::randn({3, 100});
  auto copy = std::dynamic_pointer_cast<nn::HashedLinearImpl>(a->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->forward(x), a(x)));
  EXPECT_TRUE(torch::equal(copy->hash_index, a->hash_index));
  {
    torch::NoGradGuard no_grad;
    copy->weight.add_(1.0);
  }
  EXPECT_FALSE(torch::equal(copy->weight, a->weight)) << "the clone owns its parameters";

  // Saved and loaded like any module.
  std::stringstream buffer;
  torch::save(a, buffer);
  nn::HashedLinear loaded(nn::HashedLinearOptions(100, 30).compression(1.0 / 64).seed(1));
  torch::load(loaded, buffer);
  EXPECT_TRUE(torch::equal(loaded(x), a(x)));
  a(torch::randn({2, 100}));
  EXPECT_EQ(a->macs_per_sample(), 3000);
}

TEST(MlpModels, BuildThroughTheRegistryWithParameterCounts) {
  ASSERT_TRUE(model_registry().contains("mlp"));
  ASSERT_TRUE(model_registry().contains("hashed_mlp"));
  auto mlp = build("name: mlp\n", kMnist);
  EXPECT_EQ(count_parameters(mlp), 266610) << "default hidden [300, 100] = LeNet-300-100";
  std::vector<std::string> names;
  for (const auto& p : mlp->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight",
                                             "fc3.bias"}));
  auto teacher = build("name: mlp\nhidden: [1200, 1200]\ndropout: 0.5\ninput_dropout: 0.2\n", kMnist);
  EXPECT_EQ(count_parameters(teacher), 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10);
  auto x = torch::rand({4, 1, 28, 28});
  teacher->eval();
  EXPECT_TRUE(torch::equal(teacher->forward(x), teacher->forward(x))) << "no dropout in eval";
  teacher->train();
  EXPECT_EQ(teacher->forward(x).sizes(), (std::vector<int64_t>{4, 10}));

  auto hashed = build("name: hashed_mlp\ncompression: 0.125\n", kMnist);
  const int64_t expected = std::llround(784 * 300 / 8.0) + 300 + std::llround(300 * 100 / 8.0) + 100 +
                           std::llround(100 * 10 / 8.0) + 10;
  EXPECT_EQ(count_parameters(hashed), expected);
  auto hashed64 = build("name: hashed_mlp\ncompression: 0.015625\nhidden: [1000]\nnum_classes: 5\n", kMnist);
  EXPECT_EQ(count_parameters(hashed64), std::llround(784 * 1000 / 64.0) + 1000 + std::llround(1000 * 5 / 64.0) + 5);
  EXPECT_EQ(hashed64->forward(torch::rand({2, 1, 28, 28})).sizes(), (std::vector<int64_t>{2, 5}));
  // Layers of one model hash differently.
  auto* fc1 = hashed->named_modules()["fc1"]->as<nn::HashedLinearImpl>();
  auto* fc2 = hashed->named_modules()["fc2"]->as<nn::HashedLinearImpl>();
  ASSERT_TRUE(fc1 && fc2);
  EXPECT_NE(fc1->options.seed(), fc2->options.seed());

  // Taps.
  mlp->record_taps({"features", "logits", "fc2"});
  auto logits = mlp->forward(x);
  EXPECT_TRUE(torch::equal(mlp->tap("logits"), logits));
  EXPECT_EQ(mlp->tap("features").sizes(), (std::vector<int64_t>{4, 100}));
  EXPECT_TRUE(torch::equal(mlp->tap("fc2"), mlp->tap("features")));
}

TEST(MlpModels, OptionErrors) {
  auto error_of = [](const std::string& yaml) -> std::string {
    try {
      build(yaml, kMnist);
    } catch (const UserError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of("name: mlp\nhidden: [300, 0]\n").find("mlp: hidden: widths must be positive (got [300, 0])"),
            std::string::npos);
  EXPECT_NE(error_of("name: hashed_mlp\ncompression: 0\n").find("compression must be in (0, 1]"), std::string::npos);
  EXPECT_NE(error_of("name: hashed_mlp\ncompression: 2\n").find("model.compression"), std::string::npos);
  EXPECT_NE(error_of("name: mlp\ndropout: 1.5\n").find("model.dropout"), std::string::npos);
  EXPECT_NE(build("name: mlp\nhidden: []\n", kMnist), nullptr) << "no hidden layer: logistic regression";
}
