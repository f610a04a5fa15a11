#pragma once
// Tensor decompositions behind the low-rank forms (float64 inside, results in the input's
// dtype). Each function is checked in tests against a slow, obvious reference.
#include <torch/torch.h>

#include <cstdint>

namespace shrink::lowrank {

/// W [out, in] ~= second [out, r] @ first [r, in], from the truncated SVD W = U S V^T:
/// first = sqrt(S_r) V_r^T, second = U_r sqrt(S_r). Exact when r >= rank(W).
struct SvdFactors {
  torch::Tensor first;            ///< [r, in]
  torch::Tensor second;           ///< [out, r]
  torch::Tensor singular_values;  ///< all of them, descending (float64)
};
SvdFactors truncated_svd(const torch::Tensor& matrix, int64_t rank);

/// Singular values of a 2-d matrix, descending (float64).
torch::Tensor singular_values(const torch::Tensor& matrix);

/// Smallest r with sum_{i<r} s_i^2 >= energy * sum_i s_i^2 (energy in (0, 1]; at least 1).
int64_t rank_for_energy(const torch::Tensor& singular_values, double energy);

/// Rank estimated by empirical variational Bayesian matrix factorization (Nakajima et al. 2013,
/// analytic EVBMF with the noise variance estimated), as Kim et al. 2016 choose Tucker ranks. At
/// least 1.
int64_t evbmf_rank(const torch::Tensor& matrix);

/// Jaderberg et al. 2014, scheme 2: kernel W [out, in, kh, kw] ~= sum_k H[o, k, 0, x] V[k, c, y, 0]
/// from the SVD of W reshaped to [(in, kh), (out, kw)]. Exact when that matrix has rank <= r
/// (e.g. a separable kernel).
struct JaderbergFactors {
  torch::Tensor vertical;    ///< [r, in, kh, 1]
  torch::Tensor horizontal;  ///< [out, r, 1, kw]
};
JaderbergFactors jaderberg(const torch::Tensor& kernel, int64_t rank);
/// The matrix whose SVD jaderberg() truncates ([(in * kh), (out * kw)]).
torch::Tensor jaderberg_matrix(const torch::Tensor& kernel);

/// Rank-R CP decomposition of W [out, in, kh, kw] by alternating least squares:
/// W[o, c, y, x] ~= sum_r out[o, r] in[c, r] vertical[y, r] horizontal[x, r].
struct CpFactors {
  torch::Tensor out;         ///< [out, R]
  torch::Tensor in;          ///< [in, R]
  torch::Tensor vertical;    ///< [kh, R]
  torch::Tensor horizontal;  ///< [kw, R]
  int64_t iterations = 0;    ///< ALS sweeps run
  double relative_error = 0; ///< ||W - W_hat|| / ||W||
};
/// Starts from the leading singular vectors of each unfolding (random columns where a mode has
/// fewer than R; `seed` drives them); stops after `max_iterations` sweeps or when the relative
/// error improves by less than `tolerance`.
CpFactors cp_als(const torch::Tensor& kernel, int64_t rank, int64_t max_iterations = 100, double tolerance = 1e-7,
                 uint64_t seed = 0);

/// Tucker-2 of W [out, in, kh, kw] over the channel modes:
/// W ~= core x_0 out_factor x_1 in_factor, core [r_out, r_in, kh, kw].
struct Tucker2Factors {
  torch::Tensor in;    ///< [in, r_in], orthonormal columns
  torch::Tensor core;  ///< [r_out, r_in, kh, kw]
  torch::Tensor out;   ///< [out, r_out], orthonormal columns
  double relative_error = 0;
};
/// HOSVD (leading left singular vectors of the mode-0 and mode-1 unfoldings), then
/// `hooi_iterations` sweeps of higher-order orthogonal iteration.
Tucker2Factors tucker2(const torch::Tensor& kernel, int64_t rank_in, int64_t rank_out, int64_t hooi_iterations = 0);
/// Mode-n unfolding of a 4-d kernel: [size(mode), product of the other sizes] (mode 0 or 1).
torch::Tensor unfold(const torch::Tensor& kernel, int64_t mode);

}  // namespace shrink::lowrank
