// Decompositions against slow, obvious references: reconstructions by explicit loops, singular
// values from the eigenvalues of the Gram matrix, EVBMF's free energy written out as in the Python
// reference and minimized on a fine grid; exact recovery of kernels built with a known structure,
// and errors that do not grow with the rank.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "shrink/lowrank/decompose.h"

using namespace shrink::lowrank;

namespace {

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = b.to(torch::kDouble);
  return (a.to(torch::kDouble) - x).norm().item<double>() / x.norm().item<double>();
}

/// Reference: W[o, c, y, x] = sum_k horizontal[o, k, 0, x] vertical[k, c, y, 0], by loops.
torch::Tensor jaderberg_reference(const torch::Tensor& vertical, const torch::Tensor& horizontal) {
  auto v = vertical.to(torch::kDouble).contiguous();
  auto h = horizontal.to(torch::kDouble).contiguous();
  const int64_t r = v.size(0), in = v.size(1), kh = v.size(2), out = h.size(0), kw = h.size(3);
  auto w = torch::zeros({out, in, kh, kw}, torch::kDouble);
  auto W = w.accessor<double, 4>();
  auto V = v.accessor<double, 4>();
  auto H = h.accessor<double, 4>();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in; ++c)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x)
          for (int64_t k = 0; k < r; ++k) W[o][c][y][x] += H[o][k][0][x] * V[k][c][y][0];
  return w;
}

/// Reference: W[o, c, y, x] = sum_r out[o, r] in[c, r] vertical[y, r] horizontal[x, r].
torch::Tensor cp_reference(const CpFactors& f) {
  auto a = f.out.to(torch::kDouble), b = f.in.to(torch::kDouble);
  auto c = f.vertical.to(torch::kDouble), d = f.horizontal.to(torch::kDouble);
  auto A = a.accessor<double, 2>(), B = b.accessor<double, 2>(), C = c.accessor<double, 2>(),
       D = d.accessor<double, 2>();
  auto w = torch::zeros({a.size(0), b.size(0), c.size(0), d.size(0)}, torch::kDouble);
  auto W = w.accessor<double, 4>();
  for (int64_t o = 0; o < a.size(0); ++o)
    for (int64_t i = 0; i < b.size(0); ++i)
      for (int64_t y = 0; y < c.size(0); ++y)
        for (int64_t x = 0; x < d.size(0); ++x)
          for (int64_t r = 0; r < a.size(1); ++r) W[o][i][y][x] += A[o][r] * B[i][r] * C[y][r] * D[x][r];
  return w;
}

/// Reference: W[o, c, y, x] = sum_{r, s} core[r, s, y, x] out[o, r] in[c, s].
torch::Tensor tucker_reference(const torch::Tensor& core, const torch::Tensor& out, const torch::Tensor& in) {
  auto g = core.to(torch::kDouble), u = out.to(torch::kDouble), v = in.to(torch::kDouble);
  auto G = g.accessor<double, 4>();
  auto U = u.accessor<double, 2>(), V = v.accessor<double, 2>();
  auto w = torch::zeros({u.size(0), v.size(0), g.size(2), g.size(3)}, torch::kDouble);
  auto W = w.accessor<double, 4>();
  for (int64_t o = 0; o < u.size(0); ++o)
    for (int64_t c = 0; c < v.size(0); ++c)
      for (int64_t y = 0; y < g.size(2); ++y)
        for (int64_t x = 0; x < g.size(3); ++x)
          for (int64_t r = 0; r < g.size(0); ++r)
            for (int64_t s = 0; s < g.size(1); ++s) W[o][c][y][x] += G[r][s][y][x] * U[o][r] * V[c][s];
  return w;
}

/// The Python reference's objective (VBMF.EVBsigma2, H == L) verbatim, including -log(x) terms.
double evb_sigma2_reference(double sigma2, const std::vector<double>& s, int64_t L, int64_t M, double x_bar) {
  const double alpha = double(L) / M;
  double obj = 0;
  for (double v : s) {
    const double x = v * v / (M * sigma2);
    if (x > x_bar) {
      const double tau = 0.5 * (x - (1 + alpha) + std::sqrt((x - (1 + alpha)) * (x - (1 + alpha)) - 4 * alpha));
      obj += x - tau + std::log((tau + 1) / x) + alpha * std::log(tau / alpha + 1);
    } else {
      obj += x - std::log(x);
    }
  }
  return obj;
}

/// Reference EVBMF rank: the same bracket, the objective minimized on a fine log grid.
int64_t evbmf_reference(torch::Tensor y) {
  y = y.to(torch::kDouble);
  if (y.size(0) > y.size(1)) y = y.t();
  const int64_t L = y.size(0), M = y.size(1);
  const double alpha = double(L) / M, tau_bar = 2.5129 * std::sqrt(alpha);
  const double x_bar = (1 + tau_bar) * (1 + alpha / tau_bar);
  auto sv = torch::linalg_svdvals(y);
  std::vector<double> s(sv.data_ptr<double>(), sv.data_ptr<double>() + L);
  const int64_t eh_ub = std::min<int64_t>(int64_t(std::ceil(L / (1 + alpha))) - 1, L) - 1;
  double total = 0, tail = 0;
  for (int64_t h = 0; h < L; ++h) total += s[h] * s[h];
  for (int64_t h = eh_ub + 1; h < L; ++h) tail += s[h] * s[h];
  const double upper = total / (L * M);
  const double lower = std::max(s[eh_ub + 1] * s[eh_ub + 1] / (M * x_bar), tail / (L - eh_ub - 1) / M);
  double best = lower, best_f = INFINITY;
  const int n = 20000;
  for (int i = 0; i <= n; ++i) {
    const double sigma2 = std::exp(std::log(lower) + (std::log(upper) - std::log(lower)) * i / n);
    const double f = evb_sigma2_reference(sigma2, s, L, M, x_bar);
    if (f < best_f) best_f = f, best = sigma2;
  }
  const double threshold = std::sqrt(M * best * (1 + tau_bar) * (1 + alpha / tau_bar));
  int64_t rank = 0;
  for (double v : s) rank += v > threshold;
  return std::max<int64_t>(rank, 1);
}

/// A matrix of rank r (singular values well above the noise) plus Gaussian noise.
torch::Tensor low_rank_plus_noise(int64_t rows, int64_t cols, int64_t r, double noise) {
  return torch::randn({rows, r}, torch::kDouble).mm(torch::randn({r, cols}, torch::kDouble)) +
         noise * torch::randn({rows, cols}, torch::kDouble);
}

/// A kernel whose CP rank is exactly r.
torch::Tensor cp_kernel(int64_t out, int64_t in, int64_t kh, int64_t kw, int64_t r) {
  CpFactors f;
  f.out = torch::randn({out, r}), f.in = torch::randn({in, r});
  f.vertical = torch::randn({kh, r}), f.horizontal = torch::randn({kw, r});
  return cp_reference(f).to(torch::kFloat);
}

}  // namespace

TEST(Decompose, TruncatedSvdMatchesEckartYoung) {
  torch::manual_seed(1);
  auto w = torch::randn({9, 6});
  auto s = singular_values(w);
  ASSERT_EQ(s.scalar_type(), torch::kDouble);
  // Singular values squared are the eigenvalues of W^T W.
  auto eig = std::get<0>(torch::sort(torch::linalg_eigvalsh(w.to(torch::kDouble).t().mm(w.to(torch::kDouble))),
                                     0, /*descending=*/true));
  EXPECT_TRUE(torch::allclose(s.square(), eig, 1e-9, 1e-9));
  for (int64_t r = 1; r <= 6; ++r) {
    auto f = truncated_svd(w, r);
    ASSERT_EQ(f.first.sizes(), (std::vector<int64_t>{r, 6}));
    ASSERT_EQ(f.second.sizes(), (std::vector<int64_t>{9, r}));
    EXPECT_EQ(f.first.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::allclose(f.singular_values, s));
    // Error is the norm of the dropped singular values; both factors carry sqrt(S).
    const double tail = s.narrow(0, r, 6 - r).square().sum().sqrt().item<double>();
    EXPECT_NEAR((w.to(torch::kDouble) - f.second.to(torch::kDouble).mm(f.first.to(torch::kDouble))).norm().item<double>(),
                tail, 1e-4);
    auto diag = torch::diag(s.narrow(0, 0, r)).to(torch::kFloat);
    EXPECT_TRUE(torch::allclose(f.first.mm(f.first.t()), diag, 1e-4, 1e-4));
    EXPECT_TRUE(torch::allclose(f.second.t().mm(f.second), diag, 1e-4, 1e-4));
  }
  // Exact at the matrix's rank.
  auto low = torch::randn({8, 3}).mm(torch::randn({3, 10}));
  auto f = truncated_svd(low, 3);
  EXPECT_LT(rel_err(f.second.mm(f.first), low), 1e-5);
  EXPECT_THROW(truncated_svd(w, 0), c10::Error);
  EXPECT_THROW(truncated_svd(w, 7), c10::Error);
  EXPECT_THROW(truncated_svd(torch::randn({2, 3, 4}), 1), c10::Error);
}

TEST(Decompose, RankForEnergy) {
  auto s = torch::tensor({3.0, 2.0, 1.0, 0.0}, torch::kDouble);  // energies 9, 13, 14 of 14
  EXPECT_EQ(rank_for_energy(s, 0.5), 1);
  EXPECT_EQ(rank_for_energy(s, 9.0 / 14), 1);
  EXPECT_EQ(rank_for_energy(s, 0.9), 2);
  EXPECT_EQ(rank_for_energy(s, 0.95), 3);
  EXPECT_EQ(rank_for_energy(s, 1.0), 3);
  EXPECT_EQ(rank_for_energy(torch::zeros({3}), 0.5), 1);
  EXPECT_EQ(rank_for_energy(torch::tensor({2.0f}), 1.0), 1);
  EXPECT_THROW(rank_for_energy(s, 0.0), c10::Error);
  EXPECT_THROW(rank_for_energy(s, 1.5), c10::Error);
}

TEST(Decompose, EvbmfFindsTheRankOfANoisyLowRankMatrix) {
  torch::manual_seed(2);
  for (int64_t r : {1, 3, 7}) {
    auto y = low_rank_plus_noise(30, 50, r, 0.05);
    EXPECT_EQ(evbmf_rank(y), r) << "rank " << r;
    EXPECT_EQ(evbmf_rank(y.t()), r) << "rank " << r << ", transposed";
    // The estimate does not depend on the scale of the matrix.
    EXPECT_EQ(evbmf_rank(1e-4 * y), r) << "rank " << r << ", scaled";
    EXPECT_EQ(evbmf_rank(y.to(torch::kFloat)), r) << "rank " << r << ", float";
  }
  // Without noise: still the rank (the zero tail does not break the search).
  EXPECT_EQ(evbmf_rank(low_rank_plus_noise(20, 20, 4, 0)), 4);
  // Pure noise: nothing (at least 1).
  EXPECT_EQ(evbmf_rank(torch::randn({40, 60})), 1);
  EXPECT_EQ(evbmf_rank(torch::zeros({4, 5})), 1);
}

TEST(Decompose, EvbmfMatchesTheReferenceObjective) {
  torch::manual_seed(3);
  int64_t cases = 0;
  for (int64_t rows : {12, 40})
    for (int64_t cols : {16, 40})
      for (int64_t r : {2, 5})
        for (double noise : {0.3, 1.0, 3.0}) {
          auto y = low_rank_plus_noise(rows, cols, r, noise);
          EXPECT_EQ(evbmf_rank(y), evbmf_reference(y)) << rows << "x" << cols << " rank " << r << " noise " << noise;
          ++cases;
        }
  EXPECT_EQ(cases, 24);
}

TEST(Decompose, JaderbergMatrixLayout) {
  torch::manual_seed(4);
  auto w = torch::randn({5, 3, 2, 4});
  auto m = jaderberg_matrix(w);
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{3 * 2, 5 * 4}));
  for (int64_t o = 0; o < 5; ++o)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 2; ++y)
        for (int64_t x = 0; x < 4; ++x)
          ASSERT_EQ(m[c * 2 + y][o * 4 + x].item<float>(), w[o][c][y][x].item<float>());
}

TEST(Decompose, JaderbergIsExactOnSumsOfSeparableKernels) {
  torch::manual_seed(5);
  const int64_t out = 6, in = 4, kh = 3, kw = 3, r = 2;
  // sum_k a_k[c, y] b_k[o, x]: the [(in, kh), (out, kw)] matrix has rank r.
  auto a = torch::randn({r, in, kh}), b = torch::randn({r, out, kw});
  auto w = torch::einsum("kcy,kox->ocyx", {a, b}).contiguous();
  auto f = jaderberg(w, r);
  ASSERT_EQ(f.vertical.sizes(), (std::vector<int64_t>{r, in, kh, 1}));
  ASSERT_EQ(f.horizontal.sizes(), (std::vector<int64_t>{out, r, 1, kw}));
  EXPECT_LT(rel_err(jaderberg_reference(f.vertical, f.horizontal), w), 1e-5);
  // The two convolutions compute the original one.
  auto input = torch::randn({2, in, 7, 8});
  namespace F = torch::nn::functional;
  auto dense = F::conv2d(input, w, F::Conv2dFuncOptions().padding({1, 1}));
  auto split = F::conv2d(F::conv2d(input, f.vertical, F::Conv2dFuncOptions().padding({1, 0})), f.horizontal,
                         F::Conv2dFuncOptions().padding({0, 1}));
  EXPECT_LT(rel_err(split, dense), 1e-5);
}

TEST(Decompose, JaderbergErrorFallsWithRank) {
  torch::manual_seed(6);
  auto w = torch::randn({5, 4, 3, 3});
  auto s = singular_values(jaderberg_matrix(w));
  double previous = INFINITY;
  for (int64_t r = 1; r <= 12; ++r) {
    auto f = jaderberg(w, r);
    auto approx = jaderberg_reference(f.vertical, f.horizontal);
    const double err = (approx - w.to(torch::kDouble)).norm().item<double>();
    EXPECT_NEAR(err, s.narrow(0, r, s.size(0) - r).square().sum().sqrt().item<double>(), 1e-4) << "rank " << r;
    EXPECT_LE(err, previous + 1e-9);
    previous = err;
  }
  EXPECT_LT(previous, 1e-4);
  EXPECT_THROW(jaderberg(w, 13), c10::Error);
  EXPECT_THROW(jaderberg(torch::randn({3, 3}), 1), c10::Error);
}

TEST(Decompose, CpRecoversAnExactCpKernel) {
  torch::manual_seed(7);
  for (int trial = 0; trial < 3; ++trial) {
    auto w = cp_kernel(16, 8, 3, 3, 4);
    auto f = cp_als(w, 4);
    ASSERT_EQ(f.out.sizes(), (std::vector<int64_t>{16, 4}));
    ASSERT_EQ(f.in.sizes(), (std::vector<int64_t>{8, 4}));
    ASSERT_EQ(f.vertical.sizes(), (std::vector<int64_t>{3, 4}));
    ASSERT_EQ(f.horizontal.sizes(), (std::vector<int64_t>{3, 4}));
    const double err = rel_err(cp_reference(f), w);
    EXPECT_LT(err, 1e-4) << "trial " << trial << " after " << f.iterations << " sweeps";
    EXPECT_NEAR(f.relative_error, err, 1e-6);
    EXPECT_LE(f.iterations, 100);
  }
}

TEST(Decompose, CpErrorFallsWithRankAndIsSeeded) {
  torch::manual_seed(8);
  auto w = torch::randn({8, 6, 3, 3});
  double previous = INFINITY;
  for (int64_t r : {1, 2, 4, 8, 16}) {
    auto f = cp_als(w, r, 200);
    EXPECT_NEAR(f.relative_error, rel_err(cp_reference(f), w), 1e-6) << "rank " << r;
    EXPECT_LT(f.relative_error, previous) << "rank " << r;
    previous = f.relative_error;
  }
  auto a = cp_als(w, 5, 20, 1e-7, 3), b = cp_als(w, 5, 20, 1e-7, 3);
  EXPECT_TRUE(torch::equal(a.out, b.out));
  EXPECT_TRUE(torch::equal(a.horizontal, b.horizontal));
  EXPECT_EQ(cp_als(w, 2, 1).iterations, 1);
  EXPECT_THROW(cp_als(w, 0), c10::Error);
}

TEST(Decompose, UnfoldLayout) {
  torch::manual_seed(9);
  auto w = torch::randn({4, 3, 2, 5});
  auto u0 = unfold(w, 0), u1 = unfold(w, 1);
  ASSERT_EQ(u0.sizes(), (std::vector<int64_t>{4, 30}));
  ASSERT_EQ(u1.sizes(), (std::vector<int64_t>{3, 40}));
  for (int64_t o = 0; o < 4; ++o)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 2; ++y)
        for (int64_t x = 0; x < 5; ++x) {
          const float v = w[o][c][y][x].item<float>();
          ASSERT_EQ(u0[o][(c * 2 + y) * 5 + x].item<float>(), v);
          ASSERT_EQ(u1[c][(o * 2 + y) * 5 + x].item<float>(), v);
        }
  EXPECT_THROW(unfold(w, 4), c10::Error);
}

TEST(Decompose, Tucker2RecoversAnExactTuckerKernel) {
  torch::manual_seed(10);
  const int64_t out = 12, in = 10, r_out = 5, r_in = 3;
  auto core = torch::randn({r_out, r_in, 3, 3}, torch::kDouble);
  auto w = tucker_reference(core, torch::randn({out, r_out}, torch::kDouble), torch::randn({in, r_in}, torch::kDouble));
  for (int64_t hooi : {0, 3}) {
    auto f = tucker2(w, r_in, r_out, hooi);
    ASSERT_EQ(f.core.sizes(), (std::vector<int64_t>{r_out, r_in, 3, 3}));
    ASSERT_EQ(f.out.sizes(), (std::vector<int64_t>{out, r_out}));
    ASSERT_EQ(f.in.sizes(), (std::vector<int64_t>{in, r_in}));
    EXPECT_LT(rel_err(tucker_reference(f.core, f.out, f.in), w), 1e-6);
    EXPECT_LT(f.relative_error, 1e-6);
    EXPECT_TRUE(torch::allclose(f.out.t().mm(f.out), torch::eye(r_out, torch::kDouble), 1e-9, 1e-9));
    EXPECT_TRUE(torch::allclose(f.in.t().mm(f.in), torch::eye(r_in, torch::kDouble), 1e-9, 1e-9));
  }
}

TEST(Decompose, Tucker2HooiDoesNotIncreaseTheError) {
  torch::manual_seed(11);
  auto w = torch::randn({10, 8, 3, 3});
  for (auto ranks : {std::pair<int64_t, int64_t>{2, 3}, {4, 4}, {8, 10}}) {
    auto hosvd = tucker2(w, ranks.first, ranks.second);
    auto hooi = tucker2(w, ranks.first, ranks.second, 5);
    EXPECT_EQ(hooi.core.scalar_type(), torch::kFloat);
    EXPECT_NEAR(hosvd.relative_error, rel_err(tucker_reference(hosvd.core, hosvd.out, hosvd.in), w), 1e-6);
    EXPECT_NEAR(hooi.relative_error, rel_err(tucker_reference(hooi.core, hooi.out, hooi.in), w), 1e-6);
    EXPECT_LE(hooi.relative_error, hosvd.relative_error + 1e-9);
    EXPECT_TRUE(torch::allclose(hooi.out.t().mm(hooi.out), torch::eye(ranks.second), 1e-5, 1e-5));
  }
  // Full ranks are exact; channel dims larger than the other modes' product still get
  // orthonormal factors.
  EXPECT_LT(tucker2(w, 8, 10).relative_error, 1e-6);
  auto tall = torch::randn({20, 1, 1, 1});
  auto f = tucker2(tall, 1, 4);
  EXPECT_TRUE(torch::allclose(f.out.t().mm(f.out), torch::eye(4), 1e-5, 1e-5));
  EXPECT_LT(f.relative_error, 1e-6);
  EXPECT_THROW(tucker2(w, 9, 2), c10::Error);
  EXPECT_THROW(tucker2(w, 2, 11), c10::Error);
}
