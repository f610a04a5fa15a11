#include "shrink/lowrank/decompose.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "shrink/core/compat.h"

namespace shrink::lowrank {

namespace {

// Decompositions run on the CPU in float64: kernels are small, and float32 SVDs lose the tail
// that EVBMF and the exactness tests look at.
torch::Tensor to_work(const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kDouble).contiguous(); }

torch::Tensor like(const torch::Tensor& t, const torch::Tensor& reference) {
  return t.to(reference.device(), reference.scalar_type()).contiguous();
}

void check_kernel(const torch::Tensor& kernel, const char* what) {
  TORCH_CHECK(kernel.defined() && kernel.dim() == 4, what, ": expected a 4-d kernel [out, in, kh, kw], got ",
              kernel.defined() ? kernel.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(kernel.numel() > 0, what, ": empty kernel ", kernel.sizes());
}

/// Leading `r` left singular vectors of `m` [rows, cols] (r <= rows); full U where r exceeds
/// min(rows, cols), so that the columns stay orthonormal.
torch::Tensor leading_left(const torch::Tensor& m, int64_t r) {
  const bool full = r > std::min(m.size(0), m.size(1));
  auto usv = torch::linalg_svd(m, /*full_matrices=*/full);
  return std::get<0>(usv).narrow(1, 0, r).contiguous();
}

/// Rows indexed (first slowest, last fastest) like the reshape of the other modes of a kernel.
torch::Tensor khatri_rao(const std::vector<torch::Tensor>& factors) {
  const int64_t r = factors.front().size(1);
  auto out = factors.front();
  for (size_t i = 1; i < factors.size(); ++i)
    out = (out.unsqueeze(1) * factors[i].unsqueeze(0)).reshape({-1, r});
  return out;
}

/// tau(x) of Nakajima et al. 2013 (x > x_bar).
double evb_tau(double x, double alpha) {
  const double b = x - (1 + alpha);
  return 0.5 * (b + std::sqrt(std::max(b * b - 4 * alpha, 0.0)));
}

/// The EVBMF free energy as a function of the noise variance, less terms that do not depend on
/// it. Every singular value contributes -log(x_h) in the reference objective; writing that as
/// log(sigma2) - log(s_h^2 / M) and dropping the constant keeps zero singular values finite.
double evb_objective(double sigma2, const std::vector<double>& s2, int64_t L, int64_t M, double residual,
                     double x_bar) {
  const double alpha = static_cast<double>(L) / M;
  const int64_t H = static_cast<int64_t>(s2.size());
  double obj = static_cast<double>(H) * std::log(sigma2);
  for (double v : s2) {
    const double x = v / (M * sigma2);
    if (x > x_bar) {
      const double t = evb_tau(x, alpha);
      obj += x - t + std::log(t + 1) + alpha * std::log(t / alpha + 1);
    } else {
      obj += x;
    }
  }
  return obj + residual / (M * sigma2) + static_cast<double>(L - H) * std::log(sigma2);
}

}  // namespace

SvdFactors truncated_svd(const torch::Tensor& matrix, int64_t rank) {
  TORCH_CHECK(matrix.defined() && matrix.dim() == 2, "truncated_svd: expected a 2-d matrix");
  const int64_t max_rank = std::min(matrix.size(0), matrix.size(1));
  TORCH_CHECK(rank >= 1 && rank <= max_rank, "truncated_svd: rank must be in [1, ", max_rank, "] for a ",
              matrix.sizes(), " matrix, got ", rank);
  auto usv = torch::linalg_svd(to_work(matrix), /*full_matrices=*/false);
  const auto& s = std::get<1>(usv);
  auto root = s.narrow(0, 0, rank).sqrt();
  SvdFactors f;
  f.first = like(root.unsqueeze(1) * std::get<2>(usv).narrow(0, 0, rank), matrix);
  f.second = like(std::get<0>(usv).narrow(1, 0, rank) * root.unsqueeze(0), matrix);
  f.singular_values = s.contiguous();
  return f;
}

torch::Tensor singular_values(const torch::Tensor& matrix) {
  TORCH_CHECK(matrix.defined() && matrix.dim() == 2, "singular_values: expected a 2-d matrix");
  return torch::linalg_svdvals(to_work(matrix));
}

int64_t rank_for_energy(const torch::Tensor& singular_values, double energy) {
  TORCH_CHECK(singular_values.defined() && singular_values.dim() == 1, "rank_for_energy: expected 1-d singular values");
  TORCH_CHECK(energy > 0 && energy <= 1, "rank_for_energy: energy must be in (0, 1], got ", energy);
  const auto cum = to_work(singular_values).square().cumsum(0);
  const int64_t n = cum.numel();
  if (n == 0) return 1;
  const auto* c = cum.data_ptr<double>();
  // The last cumulative sum is the total, so energy == 1 stops at the last nonzero value.
  const double target = energy * c[n - 1];
  for (int64_t r = 0; r < n; ++r)
    if (c[r] >= target) return std::max<int64_t>(r + 1, 1);
  return n;
}

int64_t evbmf_rank(const torch::Tensor& matrix) {
  TORCH_CHECK(matrix.defined() && matrix.dim() == 2 && matrix.numel() > 0, "evbmf_rank: expected a non-empty 2-d matrix");
  auto y = to_work(matrix);
  if (y.size(0) > y.size(1)) y = y.t();
  const int64_t L = y.size(0), M = y.size(1), H = L;
  const double alpha = static_cast<double>(L) / M;
  const double tau_bar = 2.5129 * std::sqrt(alpha);
  const double x_bar = (1 + tau_bar) * (1 + alpha / tau_bar);

  const auto sv = torch::linalg_svdvals(y);
  std::vector<double> s(sv.data_ptr<double>(), sv.data_ptr<double>() + H), s2(H);
  for (int64_t h = 0; h < H; ++h) s2[h] = s[h] * s[h];
  const double total = std::accumulate(s2.begin(), s2.end(), 0.0);
  if (!(total > 0)) return 1;
  const double residual = 0;  // H == L: every singular value is modelled

  // Bracket of the noise variance, as in Nakajima's code.
  const int64_t eh_ub = std::min<int64_t>(static_cast<int64_t>(std::ceil(L / (1 + alpha))) - 1, H) - 1;
  const int64_t tail = std::clamp<int64_t>(eh_ub + 1, 0, H - 1);
  double tail_mean = 0;
  for (int64_t h = tail; h < H; ++h) tail_mean += s2[h];
  tail_mean /= static_cast<double>(H - tail);
  const double upper = (total + residual) / (static_cast<double>(L) * M);
  // A noise-free low-rank matrix has a zero tail; a floor far below float64 round-off of the
  // large values keeps the search finite and still counts every genuine component.
  const double lower = std::max({s2[tail] / (M * x_bar), tail_mean / M, upper * 1e-24});

  double sigma2 = lower;
  if (upper > lower) {
    // Search in log(sigma2): the bracket spans orders of magnitude, and scipy's bounded search
    // with its absolute tolerance (the Python reference) depends on the scale of the matrix. A
    // grid finds the basin of the global minimum, golden sections refine it.
    auto f = [&](double t) { return evb_objective(std::exp(t), s2, L, M, residual, x_bar); };
    const double lo = std::log(lower), hi = std::log(upper);
    const int grid = 200;
    int best = 0;
    double best_f = std::numeric_limits<double>::infinity();
    for (int i = 0; i <= grid; ++i) {
      const double v = f(lo + (hi - lo) * i / grid);
      if (v < best_f) best_f = v, best = i;
    }
    double a = lo + (hi - lo) * std::max(best - 1, 0) / grid;
    double b = lo + (hi - lo) * std::min(best + 1, grid) / grid;
    const double g = (std::sqrt(5.0) - 1) / 2;
    double c = b - g * (b - a), d = a + g * (b - a);
    double fc = f(c), fd = f(d);
    for (int it = 0; it < 100 && b - a > 1e-12; ++it) {
      if (fc < fd) {
        b = d, d = c, fd = fc, c = b - g * (b - a), fc = f(c);
      } else {
        a = c, c = d, fc = fd, d = a + g * (b - a), fd = f(d);
      }
    }
    double t = (a + b) / 2;
    if (best_f < f(t)) t = lo + (hi - lo) * best / grid;
    sigma2 = std::exp(t);
  }

  const double threshold = std::sqrt(M * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar));
  int64_t rank = 0;
  for (double v : s)
    if (v > threshold) ++rank;
  return std::max<int64_t>(rank, 1);
}

torch::Tensor jaderberg_matrix(const torch::Tensor& kernel) {
  check_kernel(kernel, "jaderberg_matrix");
  const int64_t out = kernel.size(0), in = kernel.size(1), kh = kernel.size(2), kw = kernel.size(3);
  return kernel.permute({1, 2, 0, 3}).reshape({in * kh, out * kw});
}

JaderbergFactors jaderberg(const torch::Tensor& kernel, int64_t rank) {
  check_kernel(kernel, "jaderberg");
  const int64_t out = kernel.size(0), in = kernel.size(1), kh = kernel.size(2), kw = kernel.size(3);
  const int64_t max_rank = std::min(in * kh, out * kw);
  TORCH_CHECK(rank >= 1 && rank <= max_rank, "jaderberg: rank must be in [1, ", max_rank, "] for a kernel ",
              kernel.sizes(), ", got ", rank);
  auto usv = torch::linalg_svd(jaderberg_matrix(to_work(kernel)), /*full_matrices=*/false);
  auto root = std::get<1>(usv).narrow(0, 0, rank).sqrt();
  auto u = std::get<0>(usv).narrow(1, 0, rank) * root.unsqueeze(0);        // [(in, kh), r]
  auto vt = root.unsqueeze(1) * std::get<2>(usv).narrow(0, 0, rank);       // [r, (out, kw)]
  JaderbergFactors f;
  f.vertical = like(u.t().reshape({rank, in, kh, 1}), kernel);
  f.horizontal = like(vt.reshape({rank, out, kw}).permute({1, 0, 2}).unsqueeze(2), kernel);
  return f;
}

CpFactors cp_als(const torch::Tensor& kernel, int64_t rank, int64_t max_iterations, double tolerance, uint64_t seed) {
  check_kernel(kernel, "cp_als");
  TORCH_CHECK(rank >= 1, "cp_als: rank must be at least 1, got ", rank);
  TORCH_CHECK(max_iterations >= 1, "cp_als: max_iterations must be at least 1, got ", max_iterations);
  const auto x = to_work(kernel);
  const double norm_x = x.norm().item<double>();

  std::array<torch::Tensor, 4> unfolded, factors;
  auto gen = compat::make_cpu_generator(seed);
  for (int64_t n = 0; n < 4; ++n) {
    unfolded[n] = unfold(x, n);
    const int64_t size = x.size(n), k = std::min(size, rank);
    auto init = torch::randn({size, rank}, gen, torch::kDouble);
    init.narrow(1, 0, k).copy_(leading_left(unfolded[n], k));
    factors[n] = init;
  }
  auto others = [&](int64_t n) {
    std::vector<torch::Tensor> v;
    for (int64_t m = 0; m < 4; ++m)
      if (m != n) v.push_back(factors[m]);
    return v;
  };

  using Factors = std::array<torch::Tensor, 4>;
  auto error_of = [&](const Factors& f) {
    if (!(norm_x > 0)) return 0.0;
    return (unfolded[0] - f[0].mm(khatri_rao({f[1], f[2], f[3]}).t())).norm().item<double>() / norm_x;
  };

  CpFactors result;
  double previous = std::numeric_limits<double>::infinity(), error = previous;
  // Extrapolation along each sweep's step (Bro 1998's it^(1/acc_pow), doubled while it helps;
  // kept only when it lowers the error): plain ALS crawls through "swamps" for hundreds of
  // sweeps when R exceeds the kernel's spatial size (collinear columns).
  double acc_pow = 2;
  int acc_fails = 0;
  for (int64_t it = 0; it < max_iterations; ++it) {
    const Factors before = factors;
    for (int64_t n = 0; n < 4; ++n) {
      auto gram = torch::ones({rank, rank}, torch::kDouble);
      for (int64_t m = 0; m < 4; ++m)
        if (m != n) gram = gram * factors[m].t().mm(factors[m]);
      auto kr = khatri_rao(others(n));
      // Normal equations A G = X_(n) KR; the pseudo-inverse keeps rank-deficient Grams (R larger
      // than a mode) well defined.
      auto updated = unfolded[n].mm(kr).mm(torch::linalg_pinv(gram, /*rcond=*/1e-12, /*hermitian=*/true));
      if (n < 3) {
        // Unit columns keep the scale in the last factor instead of drifting between factors.
        factors[n] = updated / updated.square().sum(0).sqrt().clamp_min(std::numeric_limits<double>::min());
      } else {
        factors[n] = updated;
        const double residual = (unfolded[3] - updated.mm(kr.t())).norm().item<double>();
        error = norm_x > 0 ? residual / norm_x : 0;
      }
    }
    if (it > 0 && error > 0) {
      double step = std::pow(static_cast<double>(it + 1), 1 / acc_pow);
      const Factors after = factors;
      bool improved = false;
      for (int tries = 0; tries < 4; ++tries, step *= 2) {
        Factors trial;
        for (int64_t n = 0; n < 4; ++n) trial[n] = before[n] + step * (after[n] - before[n]);
        const double trial_error = error_of(trial);
        if (!(trial_error < error)) break;
        factors = trial, error = trial_error, improved = true;
      }
      if (!improved && ++acc_fails == 4) acc_pow += 1, acc_fails = 0;  // shorter steps from now on
    }
    result.iterations = it + 1;
    const bool done = previous - error < tolerance;
    previous = error;
    if (done) break;
  }

  // Balance the scale over the four factors so that the layers built from them start alike.
  auto norms = torch::ones({rank}, torch::kDouble);
  for (auto& f : factors) {
    auto n = f.square().sum(0).sqrt().clamp_min(std::numeric_limits<double>::min());
    f = f / n;
    norms = norms * n;
  }
  auto share = norms.pow(0.25);
  result.out = like(factors[0] * share, kernel);
  result.in = like(factors[1] * share, kernel);
  result.vertical = like(factors[2] * share, kernel);
  result.horizontal = like(factors[3] * share, kernel);
  result.relative_error = error;
  return result;
}

torch::Tensor unfold(const torch::Tensor& kernel, int64_t mode) {
  check_kernel(kernel, "unfold");
  TORCH_CHECK(mode >= 0 && mode < 4, "unfold: mode must be in [0, 3], got ", mode);
  std::vector<int64_t> order{mode};
  for (int64_t m = 0; m < 4; ++m)
    if (m != mode) order.push_back(m);
  return kernel.permute(order).reshape({kernel.size(mode), -1});
}

Tucker2Factors tucker2(const torch::Tensor& kernel, int64_t rank_in, int64_t rank_out, int64_t hooi_iterations) {
  check_kernel(kernel, "tucker2");
  const int64_t out = kernel.size(0), in = kernel.size(1);
  TORCH_CHECK(rank_in >= 1 && rank_in <= in, "tucker2: rank_in must be in [1, ", in, "], got ", rank_in);
  TORCH_CHECK(rank_out >= 1 && rank_out <= out, "tucker2: rank_out must be in [1, ", out, "], got ", rank_out);
  TORCH_CHECK(hooi_iterations >= 0, "tucker2: hooi_iterations must be non-negative, got ", hooi_iterations);
  const auto x = to_work(kernel);
  auto u_out = leading_left(unfold(x, 0), rank_out);
  auto u_in = leading_left(unfold(x, 1), rank_in);
  for (int64_t it = 0; it < hooi_iterations; ++it) {
    u_out = leading_left(unfold(torch::einsum("ocyx,cs->osyx", {x, u_in}), 0), rank_out);
    u_in = leading_left(unfold(torch::einsum("ocyx,or->rcyx", {x, u_out}), 1), rank_in);
  }
  auto core = torch::einsum("ocyx,or,cs->rsyx", {x, u_out, u_in});
  auto approx = torch::einsum("rsyx,or,cs->ocyx", {core, u_out, u_in});
  const double norm_x = x.norm().item<double>();
  Tucker2Factors f;
  f.in = like(u_in, kernel);
  f.core = like(core, kernel);
  f.out = like(u_out, kernel);
  f.relative_error = norm_x > 0 ? (x - approx).norm().item<double>() / norm_x : 0;
  return f;
}

}  // namespace shrink::lowrank
