#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "shrink/lowrank/decompose.h"
#include "shrink/lowrank/factorize.h"
#include "shrink/nn/low_rank_conv.h"

namespace {

using shrink::lowrank::factorize_conv;
using shrink::lowrank::factorize_linear;
using shrink::nn::Conv2d;
using shrink::nn::Conv2dOptions;
using shrink::nn::ConvForm;
using shrink::nn::Linear;
using shrink::nn::LinearOptions;

/// A 6 x 5 x 3 x 3 conv with stride 2 and padding 1 (the factors must split them right).
Conv2d strided_conv(bool bias = true) { return Conv2d(Conv2dOptions(5, 6, 3).stride(2).padding(1).bias(bias)); }

/// The dense layer's function, from a saved kernel and bias.
torch::Tensor original(const Conv2d& conv, const torch::Tensor& input, const torch::Tensor& kernel,
                       const torch::Tensor& bias) {
  const auto& o = conv->options;
  return torch::conv2d(input, kernel, bias, o.stride(), o.padding(), o.dilation());
}

void set_weight(Conv2d& conv, const torch::Tensor& kernel) {
  torch::NoGradGuard no_grad;
  conv->weight.copy_(kernel);
}

/// W[o, c, y, x] = sum_k b[k, o, x] a[k, c, y]: rank <= `rank` as a [(c, y), (o, x)] matrix.
torch::Tensor separable_kernel(int64_t out, int64_t in, int64_t kh, int64_t kw, int64_t rank) {
  auto a = torch::randn({rank, in, kh}), b = torch::randn({rank, out, kw});
  auto kernel = torch::zeros({out, in, kh, kw});
  for (int64_t k = 0; k < rank; ++k) kernel += b[k].view({out, 1, 1, kw}) * a[k].view({1, in, kh, 1});
  return kernel;
}

/// W[o, c, y, x] = sum_r A[o, r] B[c, r] C[y, r] D[x, r]: CP rank <= `rank`.
torch::Tensor cp_kernel(int64_t out, int64_t in, int64_t kh, int64_t kw, int64_t rank) {
  auto a = torch::randn({out, rank}), b = torch::randn({in, rank}), c = torch::randn({kh, rank}),
       d = torch::randn({kw, rank});
  auto kernel = torch::zeros({out, in, kh, kw});
  for (int64_t r = 0; r < rank; ++r)
    kernel += a.select(1, r).view({out, 1, 1, 1}) * b.select(1, r).view({1, in, 1, 1}) *
              c.select(1, r).view({1, 1, kh, 1}) * d.select(1, r).view({1, 1, 1, kw});
  return kernel;
}

double max_relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

TEST(FactorizeConv, Tucker2AtFullRanksIsExact) {
  torch::manual_seed(0);
  auto conv = strided_conv();
  const auto kernel = conv->weight.detach().clone(), bias = conv->bias.detach().clone();
  auto input = torch::randn({2, 5, 9, 8});
  const auto expected = original(conv, input, kernel, bias);
  auto report = factorize_conv(*conv, ConvForm::parse("tucker2(5,6)"));
  EXPECT_TRUE(conv->composite());
  EXPECT_LT(report.relative_error, 1e-6);
  EXPECT_LT(max_relative_difference(conv(input), expected), 1e-5);
  EXPECT_EQ(report.params_before, 6 * 5 * 9 + 6);
  EXPECT_EQ(report.params_after, 5 * 5 + 6 * 5 * 9 + 6 * 6 + 6);
}

TEST(FactorizeConv, Tucker2TruncatedReportsItsError) {
  torch::manual_seed(1);
  auto conv = strided_conv(/*bias=*/false);
  const auto kernel = conv->weight.detach().clone();
  auto report = factorize_conv(*conv, ConvForm::parse("tucker2(2,3)"), 100, /*tucker_iterations=*/5);
  EXPECT_GT(report.relative_error, 0.05);
  EXPECT_LT(report.relative_error, 1.0);
  EXPECT_EQ(report.params_before, 6 * 5 * 9);
  EXPECT_EQ(report.params_after, 2 * 5 + 3 * 2 * 9 + 6 * 3);
  // The reported error is the one of the kernel the factors compute (read back from the layers).
  auto& form = *conv->form_module()->as<shrink::nn::Tucker2ConvImpl>();
  auto first = form.first->weight.detach().to(torch::kDouble), core = form.core->weight.detach().to(torch::kDouble),
       last = form.last->weight.detach().to(torch::kDouble);
  auto rebuilt = torch::zeros({6, 5, 3, 3}, torch::kDouble);
  for (int64_t p = 0; p < 3; ++p)
    for (int64_t q = 0; q < 2; ++q)
      rebuilt += last.select(1, p).view({6, 1, 1, 1}) * core[p][q].view({1, 1, 3, 3}) * first[q].view({1, 5, 1, 1});
  const auto k = kernel.to(torch::kDouble);
  EXPECT_NEAR(((k - rebuilt).norm() / k.norm()).item<double>(), report.relative_error, 1e-5);
}

TEST(FactorizeConv, JaderbergOnASeparableKernelIsExact) {
  torch::manual_seed(2);
  for (const char* form : {"jaderberg(2)", "bn_low_rank(2)"}) {
    auto conv = strided_conv();
    const auto kernel = separable_kernel(6, 5, 3, 3, 2);
    set_weight(conv, kernel);
    const auto bias = conv->bias.detach().clone();
    auto input = torch::randn({2, 5, 9, 8});
    const auto expected = original(conv, input, kernel, bias);
    auto report = factorize_conv(*conv, ConvForm::parse(form));
    conv->eval();  // bn_low_rank's BatchNorm is the identity in eval
    EXPECT_LT(report.relative_error, 1e-5) << form;
    EXPECT_LT(max_relative_difference(conv(input), expected), 1e-5) << form;
    const int64_t bn = std::string(form) == "bn_low_rank(2)" ? 2 * 2 : 0;
    EXPECT_EQ(report.params_after, 2 * 5 * 3 + 6 * 2 * 3 + 6 + bn) << form;
  }
}

TEST(FactorizeConv, JaderbergErrorIsTheDroppedSingularValues) {
  torch::manual_seed(3);
  auto conv = strided_conv();
  const auto kernel = conv->weight.detach().to(torch::kDouble);
  // Eckart-Young on the [(in, kh), (out, kw)] matrix, with its singular values from LAPACK.
  auto matrix = kernel.permute({1, 2, 0, 3}).reshape({5 * 3, 6 * 3});
  auto s2 = torch::linalg_svdvals(matrix).pow(2);
  const double expected = std::sqrt(s2.slice(0, 4).sum().item<double>() / s2.sum().item<double>());
  auto report = factorize_conv(*conv, ConvForm::parse("jaderberg(4)"));
  EXPECT_NEAR(report.relative_error, expected, 1e-5);
}

TEST(FactorizeConv, CpOnACpRankKernelIsExact) {
  torch::manual_seed(4);
  auto conv = strided_conv();
  const auto kernel = cp_kernel(6, 5, 3, 3, 3);
  set_weight(conv, kernel);
  const auto bias = conv->bias.detach().clone();
  auto input = torch::randn({2, 5, 9, 8});
  const auto expected = original(conv, input, kernel, bias);
  auto report = factorize_conv(*conv, ConvForm::parse("cp(3)"), /*cp_iterations=*/500);
  EXPECT_LT(report.relative_error, 1e-3);
  EXPECT_LT(max_relative_difference(conv(input), expected), 1e-3);
  EXPECT_EQ(report.params_after, 3 * 5 + 3 * 3 + 3 * 3 + 6 * 3 + 6);
  // The balanced factors have comparable sizes.
  auto& form = *conv->form_module()->as<shrink::nn::CpConvImpl>();
  auto norm_in = form.pointwise_in->weight.detach().flatten(1).norm(2, {1});
  auto norm_out = form.pointwise_out->weight.detach().flatten(1).norm(2, {0});
  EXPECT_TRUE(torch::allclose(norm_in, norm_out, 1e-3, 1e-5));
}

TEST(FactorizeConv, KeepsTheDtype) {
  torch::manual_seed(5);
  for (const char* form : {"tucker2(5,6)", "bn_low_rank(15)"}) {
    auto conv = strided_conv();
    conv->to(torch::kDouble);
    const auto kernel = conv->weight.detach().clone(), bias = conv->bias.detach().clone();
    auto input = torch::randn({1, 5, 7, 7}, torch::kDouble);
    factorize_conv(*conv, ConvForm::parse(form));
    conv->eval();
    for (const auto& p : conv->parameters()) EXPECT_EQ(p.scalar_type(), torch::kDouble) << form;
    for (const auto& b : conv->named_buffers()) {
      const bool counter = b.key().find("num_batches_tracked") != std::string::npos;
      EXPECT_EQ(b.value().scalar_type(), counter ? torch::kLong : torch::kDouble) << form << " " << b.key();
    }
    EXPECT_TRUE(torch::allclose(conv(input), original(conv, input, kernel, bias), 1e-9, 1e-10)) << form;
  }
}

TEST(FactorizeConv, RejectsWhatItCannotDo) {
  auto conv = strided_conv();
  const auto kernel = conv->weight.detach().clone();
  EXPECT_THROW(factorize_conv(*conv, ConvForm::parse("dense")), c10::Error);
  EXPECT_THROW(factorize_conv(*conv, ConvForm::parse("fire(2,3)")), c10::Error);
  EXPECT_THROW(factorize_conv(*conv, ConvForm::parse("tucker2(6,6)")), c10::Error);     // rank_in > in
  EXPECT_THROW(factorize_conv(*conv, ConvForm::parse("jaderberg(16)")), c10::Error);    // > min(15, 18)
  EXPECT_THROW(factorize_conv(*conv, ConvForm::parse("cp(2)"), /*cp_iterations=*/0), c10::Error);
  // Nothing changed.
  EXPECT_FALSE(conv->composite());
  EXPECT_TRUE(torch::equal(conv->weight, kernel));
  factorize_conv(*conv, ConvForm::parse("jaderberg(2)"));
  EXPECT_THROW(factorize_conv(*conv, ConvForm::parse("jaderberg(2)")), c10::Error);  // already composite
  Conv2d masked(Conv2dOptions(5, 6, 3).masked(true));
  EXPECT_THROW(factorize_conv(*masked, ConvForm::parse("jaderberg(2)")), c10::Error);
  Conv2d grouped(Conv2dOptions(4, 6, 3).groups(2));
  EXPECT_THROW(factorize_conv(*grouped, ConvForm::parse("jaderberg(2)")), c10::Error);
}

TEST(FactorizeConv, FineTunesAfterFactorizing) {
  // A factorized layer still learns: fitting another dense conv's outputs.
  torch::manual_seed(6);
  auto target = strided_conv();
  auto conv = strided_conv();
  factorize_conv(*conv, ConvForm::parse("tucker2(3,3)"));
  torch::optim::Adam optimizer(conv->parameters(), torch::optim::AdamOptions(0.02));
  auto input = torch::randn({4, 5, 6, 6});
  const auto wanted = target(input).detach();
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < 40; ++step) {
    optimizer.zero_grad();
    auto loss = torch::mse_loss(conv(input), wanted);
    loss.backward();
    optimizer.step();
    if (step == 0) first_loss = loss.item<double>();
    last_loss = loss.item<double>();
  }
  EXPECT_LT(last_loss, 0.5 * first_loss);
}

TEST(FactorizeLinear, FullRankIsExact) {
  torch::manual_seed(7);
  Linear fc(7, 4);
  const auto weight = fc->weight.detach().clone(), bias = fc->bias.detach().clone();
  auto input = torch::randn({3, 7});
  auto report = factorize_linear(*fc, 4);
  EXPECT_TRUE(fc->composite());
  EXPECT_LT(report.relative_error, 1e-6);
  EXPECT_TRUE(torch::allclose(fc(input), torch::linear(input, weight, bias), 1e-5, 1e-6));
  EXPECT_EQ(report.params_before, 7 * 4 + 4);
  EXPECT_EQ(report.params_after, 7 * 4 + 4 * 4 + 4);
  EXPECT_TRUE(fc->second->bias.requires_grad());
}

TEST(FactorizeLinear, TruncatedIsEckartYoung) {
  torch::manual_seed(8);
  Linear fc(LinearOptions(9, 6).bias(false));
  const auto weight = fc->weight.detach().to(torch::kDouble);
  auto s2 = torch::linalg_svdvals(weight).pow(2);
  auto report = factorize_linear(*fc, 2);
  EXPECT_NEAR(report.relative_error, std::sqrt(s2.slice(0, 2).sum().item<double>() / s2.sum().item<double>()),
              1e-6);
  auto rebuilt = fc->second->weight.detach().to(torch::kDouble).matmul(fc->first->weight.detach().to(torch::kDouble));
  EXPECT_NEAR(((weight - rebuilt).norm() / weight.norm()).item<double>(), report.relative_error, 1e-5);
  EXPECT_EQ(report.params_after, 9 * 2 + 2 * 6);
}

TEST(FactorizeLinear, RejectsBadRanks) {
  Linear fc(7, 4);
  EXPECT_THROW(factorize_linear(*fc, 0), c10::Error);
  EXPECT_THROW(factorize_linear(*fc, 5), c10::Error);
  EXPECT_FALSE(fc->composite());
  factorize_linear(*fc, 2);
  EXPECT_THROW(factorize_linear(*fc, 2), c10::Error);
}

}  // namespace
