// Distillation losses against slow, obvious references written with loops over plain numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "shrink/distill/losses.h"

using namespace shrink::distill;

namespace {

double softmax_at(const torch::Tensor& row, int64_t c, double temperature) {
  double denom = 0;
  for (int64_t k = 0; k < row.size(0); ++k) denom += std::exp(row[k].item<double>() / temperature);
  return std::exp(row[c].item<double>() / temperature) / denom;
}

double reference_kd(const torch::Tensor& s, const torch::Tensor& t, double temperature) {
  double total = 0;
  for (int64_t n = 0; n < s.size(0); ++n)
    for (int64_t c = 0; c < s.size(1); ++c) {
      double pt = softmax_at(t[n], c, temperature), ps = softmax_at(s[n], c, temperature);
      total += pt * std::log(pt / ps);
    }
  return temperature * temperature * total / s.size(0);
}

}  // namespace

TEST(KdLoss, MatchesHandComputedValueWithTemperatureSquared) {
  // Two classes: student logits (0, 0), teacher (ln 3, 0). At T = 1 the teacher says (3/4, 1/4):
  // KL = 3/4 ln(3/2) + 1/4 ln(1/2). At T = 2 it says (sqrt3, 1) / (sqrt3 + 1), and the T^2 = 4 scales it.
  auto s = torch::zeros({1, 2}, torch::kDouble);
  auto t = torch::tensor({{std::log(3.0), 0.0}}, torch::kDouble);
  EXPECT_NEAR(kd_loss(s, t, 1.0).item<double>(), 0.75 * std::log(1.5) + 0.25 * std::log(0.5), 1e-12);
  const double a = std::sqrt(3.0) / (std::sqrt(3.0) + 1), b = 1 / (std::sqrt(3.0) + 1);
  EXPECT_NEAR(kd_loss(s, t, 2.0).item<double>(), 4 * (a * std::log(a / 0.5) + b * std::log(b / 0.5)), 1e-12);
}

TEST(KdLoss, MatchesReferenceAndHintonGradient) {
  torch::manual_seed(1);
  auto s = torch::randn({5, 7}, torch::kDouble).requires_grad_();
  auto t = torch::randn({5, 7}, torch::kDouble) * 3;
  for (double temperature : {1.0, 4.0, 20.0}) {
    auto loss = kd_loss(s, t, temperature);
    EXPECT_NEAR(loss.item<double>(), reference_kd(s.detach(), t, temperature), 1e-10);
    // Hinton et al.: d(T^2 KL)/dz_i = T (p_i - q_i), averaged over the batch.
    s.mutable_grad() = torch::Tensor();
    loss.backward();
    for (int64_t n = 0; n < 5; ++n)
      for (int64_t c = 0; c < 7; ++c) {
        double expected = temperature * (softmax_at(s[n].detach(), c, temperature) - softmax_at(t[n], c, temperature)) / 5;
        EXPECT_NEAR(s.grad()[n][c].item<double>(), expected, 1e-10);
      }
  }
  EXPECT_THROW(kd_loss(s, torch::zeros({5, 6}, torch::kDouble), 1.0), c10::Error);
}

TEST(AttentionTransfer, MapAndLossMatchReference) {
  torch::manual_seed(2);
  auto x = torch::randn({3, 4, 5, 6}, torch::kDouble);
  auto y = torch::randn({3, 8, 5, 6}, torch::kDouble);  // channels may differ
  for (double p : {1.0, 2.0, 4.0}) {
    auto map = attention_map(x, p);
    ASSERT_EQ(map.sizes(), (std::vector<int64_t>{3, 30}));
    auto reference = [&](const torch::Tensor& a, int64_t n) {
      std::vector<double> q(30, 0.0);
      double norm = 0;
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 6; ++w) {
          double sum = 0;
          for (int64_t c = 0; c < a.size(1); ++c) sum += std::pow(std::abs(a[n][c][h][w].item<double>()), p);
          q[h * 6 + w] = sum / a.size(1);
          norm += q[h * 6 + w] * q[h * 6 + w];
        }
      for (auto& v : q) v /= std::sqrt(norm);
      return q;
    };
    double loss = 0;
    for (int64_t n = 0; n < 3; ++n) {
      auto qx = reference(x, n), qy = reference(y, n);
      for (int64_t i = 0; i < 30; ++i) {
        EXPECT_NEAR(map[n][i].item<double>(), qx[i], 1e-12);
        loss += (qx[i] - qy[i]) * (qx[i] - qy[i]);
      }
    }
    EXPECT_NEAR(attention_loss(x, y, p).item<double>(), loss / 90, 1e-12);
  }
  EXPECT_NEAR(attention_loss(x, x * 3).item<double>(), 0.0, 1e-12);  // maps are scale-free
}

TEST(SimilarityPreserving, MatchesReference) {
  torch::manual_seed(3);
  auto s = torch::randn({4, 3, 2, 2}, torch::kDouble);
  auto t = torch::randn({4, 5}, torch::kDouble);  // any shapes with the same batch
  auto gram = [](const torch::Tensor& x) {
    auto a = x.flatten(1);
    std::vector<std::vector<double>> g(4, std::vector<double>(4));
    for (int i = 0; i < 4; ++i) {
      double norm = 0;
      for (int j = 0; j < 4; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < a.size(1); ++k) dot += a[i][k].item<double>() * a[j][k].item<double>();
        g[i][j] = dot;
        norm += dot * dot;
      }
      for (int j = 0; j < 4; ++j) g[i][j] /= std::sqrt(norm);
    }
    return g;
  };
  auto gs = gram(s), gt = gram(t);
  double expected = 0;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) expected += (gs[i][j] - gt[i][j]) * (gs[i][j] - gt[i][j]);
  EXPECT_NEAR(similarity_loss(s, t).item<double>(), expected / 16, 1e-12);
}

TEST(HintLoss, IsMeanSquaredError) {
  auto a = torch::tensor({{1.0, 2.0}, {3.0, 4.0}}), b = torch::tensor({{1.0, 0.0}, {0.0, 4.0}});
  EXPECT_NEAR(hint_loss(a, b).item<double>(), (4.0 + 9.0) / 4, 1e-6);
}
