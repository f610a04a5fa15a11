#include <gtest/gtest.h>

#include <sstream>

#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace {

/// Direct convolution, one multiply at a time (zero padding, groups).
torch::Tensor reference_conv2d(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                               int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t cout = w.size(0), cin_g = w.size(1), kh = w.size(2), kw = w.size(3);
  const int64_t oh = (h + 2 * padding - dilation * (kh - 1) - 1) / stride + 1;
  const int64_t ow = (wd + 2 * padding - dilation * (kw - 1) - 1) / stride + 1;
  const int64_t cout_g = cout / groups;
  auto xa = x.accessor<float, 4>();
  auto wa = w.accessor<float, 4>();
  auto out = torch::zeros({n, cout, oh, ow});
  auto oa = out.accessor<float, 4>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < cout; ++o) {
      const int64_t g = o / cout_g;
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t z = 0; z < ow; ++z) {
          double acc = b.defined() ? b[o].item<double>() : 0.0;
          for (int64_t c = 0; c < cin_g; ++c)
            for (int64_t p = 0; p < kh; ++p)
              for (int64_t q = 0; q < kw; ++q) {
                const int64_t yy = y * stride - padding + p * dilation;
                const int64_t zz = z * stride - padding + q * dilation;
                if (yy < 0 || yy >= h || zz < 0 || zz >= wd) continue;
                acc += double(xa[i][g * cin_g + c][yy][zz]) * double(wa[o][c][p][q]);
              }
          oa[i][o][y][z] = static_cast<float>(acc);
        }
    }
  (void)cin;
  return out;
}

TEST(Linear, MatchesTorchLinear) {
  torch::manual_seed(0);
  shrink::nn::Linear ours(7, 5);
  torch::nn::Linear theirs(7, 5);
  {
    torch::NoGradGuard g;
    theirs->weight.copy_(ours->weight);
    theirs->bias.copy_(ours->bias);
  }
  auto x = torch::randn({4, 7});
  EXPECT_TRUE(torch::allclose(ours(x), theirs(x), 1e-6, 1e-6));
  auto x3 = torch::randn({2, 3, 7});  // extra leading dimension
  EXPECT_TRUE(torch::allclose(ours(x3), theirs(x3), 1e-6, 1e-6));
  EXPECT_EQ(ours->macs_per_sample(), 3 * 7 * 5);
}

TEST(Linear, DefaultInitIsTorchs) {
  torch::manual_seed(42);
  torch::nn::Linear theirs(30, 20);
  torch::manual_seed(42);
  shrink::nn::Linear ours(30, 20);
  EXPECT_TRUE(torch::equal(ours->weight, theirs->weight));
  EXPECT_TRUE(torch::equal(ours->bias, theirs->bias));
}

TEST(Linear, NoBiasAndNames) {
  shrink::nn::Linear fc(shrink::nn::LinearOptions(3, 2).bias(false));
  auto params = fc->named_parameters();
  ASSERT_EQ(params.size(), 1u);
  EXPECT_TRUE(params.contains("weight"));
  EXPECT_FALSE(fc->bias.defined());
  auto x = torch::randn({4, 3});
  EXPECT_TRUE(torch::allclose(fc(x), x.matmul(fc->weight.t())));
  std::ostringstream s;
  s << *fc;
  EXPECT_EQ(s.str(), "shrink::nn::Linear(in_features=3, out_features=2, bias=false)");
}

TEST(Linear, MacsAreZeroBeforeForwardAndPerSample) {
  shrink::nn::Linear fc(784, 300);
  EXPECT_EQ(fc->macs_per_sample(), 0);
  fc(torch::zeros({8, 784}));
  EXPECT_EQ(fc->macs_per_sample(), 235200);
  EXPECT_EQ(fc->bits_per_weight(), 32.0);
}

TEST(Linear, CloneIsIndependent) {
  shrink::nn::Linear fc(4, 3);
  auto copy = std::dynamic_pointer_cast<shrink::nn::LinearImpl>(fc->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->weight, fc->weight));
  EXPECT_EQ(copy->named_parameters()["weight"].data_ptr(), copy->weight.data_ptr());
  {
    torch::NoGradGuard g;
    copy->weight.zero_();
  }
  EXPECT_GT(fc->weight.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(copy->options.in_features(), 4);
}

TEST(Conv2d, MatchesTorchConv2d) {
  torch::manual_seed(1);
  auto opts = shrink::nn::Conv2dOptions(4, 6, {3, 2}).stride(2).padding(1).dilation({1, 2}).groups(2);
  shrink::nn::Conv2d ours(opts);
  torch::nn::Conv2d theirs(torch::nn::Conv2dOptions(4, 6, {3, 2}).stride(2).padding(1).dilation({1, 2}).groups(2));
  ASSERT_EQ(ours->weight.sizes(), theirs->weight.sizes());
  {
    torch::NoGradGuard g;
    theirs->weight.copy_(ours->weight);
    theirs->bias.copy_(ours->bias);
  }
  auto x = torch::randn({2, 4, 9, 8});
  auto y = ours(x);
  EXPECT_TRUE(torch::allclose(y, theirs(x), 1e-5, 1e-5));
  EXPECT_EQ(ours->macs_per_sample(), y.size(2) * y.size(3) * 6 * (4 / 2) * 3 * 2);
}

TEST(Conv2d, DefaultInitIsTorchs) {
  torch::manual_seed(7);
  torch::nn::Conv2d theirs(torch::nn::Conv2dOptions(3, 8, 5));
  torch::manual_seed(7);
  shrink::nn::Conv2d ours(3, 8, 5);
  EXPECT_TRUE(torch::equal(ours->weight, theirs->weight));
  EXPECT_TRUE(torch::equal(ours->bias, theirs->bias));
}

TEST(Conv2d, MatchesSlowReference) {
  torch::manual_seed(3);
  for (int64_t groups : {1, 2}) {
    shrink::nn::Conv2d conv(shrink::nn::Conv2dOptions(2, 4, 3).stride(2).padding(1).groups(groups));
    auto x = torch::randn({2, 2, 5, 6});
    auto expected = reference_conv2d(x, conv->weight.detach(), conv->bias.detach(), 2, 1, 1, groups);
    EXPECT_TRUE(torch::allclose(conv(x), expected, 1e-5, 1e-5)) << "groups " << groups;
  }
  shrink::nn::Conv2d dilated(shrink::nn::Conv2dOptions(1, 2, 2).dilation(2).bias(false));
  auto x = torch::randn({1, 1, 5, 5});
  auto expected = reference_conv2d(x, dilated->weight.detach(), torch::Tensor(), 1, 0, 2, 1);
  EXPECT_TRUE(torch::allclose(dilated(x), expected, 1e-5, 1e-5));
}

TEST(Conv2d, MacsLeNet5) {
  shrink::nn::Conv2d conv1(1, 20, 5);
  conv1(torch::zeros({3, 1, 28, 28}));
  EXPECT_EQ(conv1->macs_per_sample(), 24 * 24 * 20 * 1 * 5 * 5);
  shrink::nn::Conv2d conv2(20, 50, 5);
  conv2(torch::zeros({1, 20, 12, 12}));
  EXPECT_EQ(conv2->macs_per_sample(), 8 * 8 * 50 * 20 * 5 * 5);
}

TEST(Conv2d, CloneIsIndependentAndPrints) {
  shrink::nn::Conv2d conv(shrink::nn::Conv2dOptions(3, 4, 3).padding(1));
  auto copy = std::dynamic_pointer_cast<shrink::nn::Conv2dImpl>(conv->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->weight, conv->weight));
  {
    torch::NoGradGuard g;
    copy->bias.fill_(5);
  }
  EXPECT_FALSE(torch::equal(copy->bias, conv->bias));
  auto y = copy->forward(torch::zeros({1, 3, 6, 6}));
  EXPECT_TRUE(torch::allclose(y, torch::full({1, 4, 6, 6}, 5.0)));
  std::ostringstream s;
  s << *conv;
  EXPECT_EQ(s.str(), "shrink::nn::Conv2d(3, 4, kernel_size=[3, 3], stride=[1, 1], padding=[1, 1])");
}

TEST(Layers, Backward) {
  shrink::nn::Conv2d conv(1, 2, 3);
  shrink::nn::Linear fc(2 * 4 * 4, 3);
  auto y = fc(conv(torch::randn({2, 1, 6, 6})).flatten(1));
  y.sum().backward();
  EXPECT_TRUE(conv->weight.grad().defined());
  EXPECT_TRUE(fc->bias.grad().defined());
}

}  // namespace
