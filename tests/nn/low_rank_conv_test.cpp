#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <string>

#include "shrink/nn/conv.h"
#include "shrink/nn/layer.h"
#include "shrink/nn/low_rank_conv.h"

namespace {

using shrink::nn::Conv2d;
using shrink::nn::Conv2dOptions;
using shrink::nn::ConvForm;

/// The host used by most tests: stride 2 and padding 1, so the factors must split them right.
Conv2dOptions host_options(const std::string& form) {
  return Conv2dOptions(5, 6, 3).stride(2).padding(1).form(ConvForm::parse(form));
}

/// Sum of the MACs that every Shrink layer inside `module` (itself included) reports.
int64_t total_macs(const std::shared_ptr<torch::nn::Module>& module) {
  int64_t total = 0;
  for (const auto& m : module->modules()) {
    if (auto* costed = dynamic_cast<shrink::nn::CostedLayer*>(m.get())) total += costed->macs_per_sample();
  }
  return total;
}

std::set<std::string> parameter_names(const torch::nn::Module& module) {
  std::set<std::string> names;
  for (const auto& p : module.named_parameters()) names.insert(p.key());
  return names;
}

/// conv2d with the host's settings and a full kernel (what a form must compute).
torch::Tensor host_conv(const Conv2dOptions& o, const torch::Tensor& x, const torch::Tensor& kernel,
                        const torch::Tensor& bias) {
  return torch::conv2d(x, kernel, bias, o.stride(), o.padding(), o.dilation());
}

TEST(LowRankConv, JaderbergComputesItsKernel) {
  torch::manual_seed(0);
  // Non-square kernel, stride, padding and dilation per dimension.
  auto options = Conv2dOptions(5, 6, {3, 5}).stride({2, 1}).padding({1, 2}).dilation({1, 2}).form(ConvForm::parse("jaderberg(2)"));
  Conv2d conv(options);
  auto& form = *conv->form_module()->as<shrink::nn::JaderbergConvImpl>();
  auto v = form.vertical->weight.detach(), h = form.horizontal->weight.detach();
  ASSERT_EQ(v.sizes(), (std::vector<int64_t>{2, 5, 3, 1}));
  ASSERT_EQ(h.sizes(), (std::vector<int64_t>{6, 2, 1, 5}));
  auto kernel = torch::zeros({6, 5, 3, 5});
  for (int64_t o = 0; o < 6; ++o)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t y = 0; y < 3; ++y)
        for (int64_t x = 0; x < 5; ++x)
          for (int64_t k = 0; k < 2; ++k)
            kernel[o][c][y][x] += h[o][k][0][x] * v[k][c][y][0];
  auto input = torch::randn({2, 5, 9, 11});
  auto expected = host_conv(options, input, kernel, form.horizontal->bias.detach());
  auto output = conv(input);
  ASSERT_EQ(output.sizes(), expected.sizes());
  EXPECT_TRUE(torch::allclose(output, expected, 1e-4, 1e-5));
  // Unbatched input, as a dense Conv2d accepts it.
  EXPECT_TRUE(torch::allclose(conv(input[0]), expected[0], 1e-4, 1e-5));
}

TEST(LowRankConv, BnLowRankInEvalFoldsIntoTheKernel) {
  torch::manual_seed(1);
  auto options = host_options("bn_low_rank(3)");
  Conv2d conv(options);
  auto& form = *conv->form_module()->as<shrink::nn::BnLowRankConvImpl>();
  {
    torch::NoGradGuard no_grad;
    // Zero mean and shift keep the fold exact at the zero-padded border.
    form.bn->weight.copy_(torch::rand({3}) + 0.5);
    form.bn->bias.zero_();
    form.bn->running_mean.zero_();
    form.bn->running_var.copy_(torch::rand({3}) + 0.5);
  }
  conv->eval();
  auto scale = form.bn->weight.detach() / (form.bn->running_var + form.bn->options.eps()).sqrt();
  auto v = form.vertical->weight.detach(), h = form.horizontal->weight.detach();
  auto kernel = torch::zeros({6, 5, 3, 3});
  for (int64_t o = 0; o < 6; ++o)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t y = 0; y < 3; ++y)
        for (int64_t x = 0; x < 3; ++x)
          for (int64_t k = 0; k < 3; ++k)
            kernel[o][c][y][x] += h[o][k][0][x] * scale[k] * v[k][c][y][0];
  auto input = torch::randn({2, 5, 8, 7});
  auto expected = host_conv(options, input, kernel, form.horizontal->bias.detach());
  EXPECT_TRUE(torch::allclose(conv(input), expected, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(conv(input[1]), expected[1], 1e-4, 1e-5));  // unbatched
  // In train mode the BatchNorm normalizes the batch (Tai et al.): each rank channel has mean 0.
  conv->train();
  auto hidden = form.bn(form.vertical(input)).detach();
  EXPECT_LT((hidden.mean({0, 2, 3}) - form.bn->bias.detach()).abs().max().item<double>(), 1e-4);
}

TEST(LowRankConv, CpComputesItsKernel) {
  torch::manual_seed(2);
  auto options = host_options("cp(4)");
  Conv2d conv(options);
  auto& form = *conv->form_module()->as<shrink::nn::CpConvImpl>();
  auto pin = form.pointwise_in->weight.detach(), vert = form.vertical->weight.detach();
  auto hor = form.horizontal->weight.detach(), pout = form.pointwise_out->weight.detach();
  ASSERT_EQ(pin.sizes(), (std::vector<int64_t>{4, 5, 1, 1}));
  ASSERT_EQ(vert.sizes(), (std::vector<int64_t>{4, 1, 3, 1}));
  ASSERT_EQ(hor.sizes(), (std::vector<int64_t>{4, 1, 1, 3}));
  ASSERT_EQ(pout.sizes(), (std::vector<int64_t>{6, 4, 1, 1}));
  auto kernel = torch::zeros({6, 5, 3, 3});
  for (int64_t o = 0; o < 6; ++o)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t y = 0; y < 3; ++y)
        for (int64_t x = 0; x < 3; ++x)
          for (int64_t r = 0; r < 4; ++r)
            kernel[o][c][y][x] += pout[o][r][0][0] * pin[r][c][0][0] * vert[r][0][y][0] * hor[r][0][0][x];
  auto input = torch::randn({2, 5, 8, 7});
  EXPECT_TRUE(torch::allclose(conv(input), host_conv(options, input, kernel, form.pointwise_out->bias.detach()),
                              1e-4, 1e-5));
}

TEST(LowRankConv, Tucker2ComputesItsKernel) {
  torch::manual_seed(3);
  auto options = host_options("tucker2(2,4)");
  Conv2d conv(options);
  auto& form = *conv->form_module()->as<shrink::nn::Tucker2ConvImpl>();
  auto first = form.first->weight.detach(), core = form.core->weight.detach(), last = form.last->weight.detach();
  ASSERT_EQ(first.sizes(), (std::vector<int64_t>{2, 5, 1, 1}));
  ASSERT_EQ(core.sizes(), (std::vector<int64_t>{4, 2, 3, 3}));
  ASSERT_EQ(last.sizes(), (std::vector<int64_t>{6, 4, 1, 1}));
  auto kernel = torch::zeros({6, 5, 3, 3});
  for (int64_t o = 0; o < 6; ++o)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t y = 0; y < 3; ++y)
        for (int64_t x = 0; x < 3; ++x)
          for (int64_t p = 0; p < 4; ++p)
            for (int64_t q = 0; q < 2; ++q)
              kernel[o][c][y][x] += last[o][p][0][0] * core[p][q][y][x] * first[q][c][0][0];
  auto input = torch::randn({2, 5, 8, 7});
  EXPECT_TRUE(
      torch::allclose(conv(input), host_conv(options, input, kernel, form.last->bias.detach()), 1e-4, 1e-5));
}

TEST(LowRankConv, ParameterNamesAndBias) {
  EXPECT_EQ(parameter_names(*Conv2d(host_options("jaderberg(2)"))),
            (std::set<std::string>{"form.vertical.weight", "form.horizontal.weight", "form.horizontal.bias"}));
  EXPECT_EQ(parameter_names(*Conv2d(host_options("bn_low_rank(2)"))),
            (std::set<std::string>{"form.vertical.weight", "form.bn.weight", "form.bn.bias", "form.horizontal.weight",
                                   "form.horizontal.bias"}));
  EXPECT_EQ(parameter_names(*Conv2d(host_options("cp(3)"))),
            (std::set<std::string>{"form.pointwise_in.weight", "form.vertical.weight", "form.horizontal.weight",
                                   "form.pointwise_out.weight", "form.pointwise_out.bias"}));
  EXPECT_EQ(parameter_names(*Conv2d(host_options("tucker2(2,3)").bias(false))),
            (std::set<std::string>{"form.first.weight", "form.core.weight", "form.last.weight"}));
  Conv2d conv(host_options("tucker2(2,3)"));
  EXPECT_TRUE(conv->composite());
  EXPECT_FALSE(conv->weight.defined());
  EXPECT_FALSE(conv->bias.defined());
}

TEST(LowRankConv, RejectsWhatItCannotBuild) {
  EXPECT_THROW(Conv2d(Conv2dOptions(4, 4, 3).groups(2).form(ConvForm::parse("jaderberg(2)"))), c10::Error);
  ConvForm zero_rank{shrink::nn::ConvFormKind::cp, {0}};
  EXPECT_THROW(Conv2d(Conv2dOptions(4, 4, 3).form(zero_rank)), c10::Error);
  ConvForm missing_rank{shrink::nn::ConvFormKind::tucker2, {2}};
  EXPECT_THROW(Conv2d(Conv2dOptions(4, 4, 3).form(missing_rank)), c10::Error);
  // A failed set_form leaves the layer as it was.
  Conv2d conv(Conv2dOptions(4, 4, 3));
  EXPECT_THROW(conv->set_form(zero_rank), c10::Error);
  EXPECT_FALSE(conv->composite());
  EXPECT_TRUE(conv->weight.defined());
}

TEST(LowRankConv, SetFormKeepsShapes) {
  torch::manual_seed(4);
  auto input = torch::randn({1, 5, 9, 8});
  Conv2d conv(Conv2dOptions(5, 6, 3).stride(2).padding(1).dilation(2));
  const auto dense_shape = conv(input).sizes().vec();
  for (const char* form : {"jaderberg(3)", "bn_low_rank(3)", "cp(7)", "tucker2(3,2)"}) {
    conv->set_form(ConvForm::parse(form));
    EXPECT_EQ(conv(input).sizes().vec(), dense_shape) << form;
  }
}

TEST(LowRankConv, MacsOfInnerLayers) {
  torch::manual_seed(5);
  // 5 -> 6 channels, 3x3, stride 2, padding 1: 10x10 -> 5x5; a vertical factor gives 5x10.
  auto input = torch::randn({2, 5, 10, 10});
  const int64_t r = 3;
  Conv2d jaderberg(host_options("jaderberg(3)"));
  jaderberg(input);
  EXPECT_EQ(jaderberg->macs_per_sample(), 0);
  EXPECT_EQ(total_macs(jaderberg.ptr()), 5 * 10 * r * 5 * 3 + 5 * 5 * 6 * r * 3);
  Conv2d bn(host_options("bn_low_rank(3)"));
  bn(input);
  EXPECT_EQ(total_macs(bn.ptr()), 5 * 10 * r * 5 * 3 + 5 * 5 * 6 * r * 3);
  Conv2d cp(host_options("cp(3)"));
  cp(input);
  EXPECT_EQ(total_macs(cp.ptr()), 10 * 10 * r * 5 + 5 * 10 * r * 3 + 5 * 5 * r * 3 + 5 * 5 * 6 * r);
  Conv2d tucker(host_options("tucker2(2,4)"));
  tucker(input);
  EXPECT_EQ(total_macs(tucker.ptr()), 10 * 10 * 2 * 5 + 5 * 5 * 4 * 2 * 9 + 5 * 5 * 6 * 4);
}

TEST(LowRankConv, CloneIsIndependent) {
  torch::manual_seed(6);
  auto input = torch::randn({2, 5, 6, 6});
  for (const char* form : {"jaderberg(2)", "bn_low_rank(2)", "cp(3)", "tucker2(2,3)"}) {
    Conv2d conv(host_options(form));
    conv->eval();
    auto copy = std::dynamic_pointer_cast<shrink::nn::Conv2dImpl>(conv->clone());
    ASSERT_TRUE(copy) << form;
    EXPECT_TRUE(torch::equal(copy->forward(input), conv(input))) << form;
    // The copy's typed members point at its own parameters: editing them changes only the copy.
    const auto before = conv(input);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : copy->parameters()) p.add_(1);
    }
    EXPECT_TRUE(torch::equal(conv(input), before)) << form;
    EXPECT_FALSE(torch::allclose(copy->forward(input), before)) << form;
    std::ostringstream printed;
    printed << *copy;
    EXPECT_NE(printed.str().find(std::string("form=") + form), std::string::npos) << printed.str();
  }
}

TEST(LowRankConv, Prints) {
  std::ostringstream printed;
  printed << *Conv2d(host_options("cp(3)"));
  const auto text = printed.str();
  EXPECT_NE(text.find("(form): shrink::nn::CpConv(5, 6, kernel_size=[3, 3], form=cp(3))"), std::string::npos) << text;
  EXPECT_NE(text.find("(vertical): shrink::nn::Conv2d(3, 3, kernel_size=[3, 1], stride=[2, 1], padding=[1, 0], "
                      "groups=3, bias=false)"),
            std::string::npos)
      << text;
}

TEST(LowRankConv, SerializesByName) {
  torch::manual_seed(7);
  auto input = torch::randn({2, 5, 6, 6});
  for (const char* form : {"jaderberg(2)", "bn_low_rank(2)", "cp(3)", "tucker2(2,3)"}) {
    Conv2d conv(host_options(form));
    conv->train();
    conv(input);  // moves the BatchNorm's running statistics away from their defaults
    conv->eval();
    const auto expected = conv(input);
    std::stringstream bytes;
    {
      torch::serialize::OutputArchive archive;
      for (const auto& p : conv->named_parameters()) archive.write(p.key(), p.value());
      for (const auto& b : conv->named_buffers()) archive.write(b.key(), b.value(), /*is_buffer=*/true);
      archive.save_to(bytes);
    }
    torch::manual_seed(99);
    Conv2d fresh(host_options(form));
    fresh->eval();
    ASSERT_FALSE(torch::allclose(fresh(input), expected)) << form;
    torch::serialize::InputArchive archive;
    archive.load_from(bytes);
    torch::NoGradGuard no_grad;
    for (auto& p : fresh->named_parameters()) {
      torch::Tensor value;
      ASSERT_TRUE(archive.try_read(p.key(), value)) << p.key();
      p.value().copy_(value);
    }
    for (auto& b : fresh->named_buffers()) {
      torch::Tensor value;
      ASSERT_TRUE(archive.try_read(b.key(), value, /*is_buffer=*/true)) << b.key();
      b.value().copy_(value);
    }
    EXPECT_TRUE(torch::equal(fresh(input), expected)) << form;
  }
}

TEST(LowRankConv, ModuleSaveAndLoad) {
  torch::manual_seed(8);
  auto input = torch::randn({1, 5, 6, 6});
  Conv2d conv(host_options("bn_low_rank(2)"));
  conv(input);
  conv->eval();
  std::stringstream bytes;
  torch::save(conv, bytes);
  Conv2d fresh(host_options("bn_low_rank(2)"));
  torch::load(fresh, bytes);
  fresh->eval();
  EXPECT_TRUE(torch::equal(fresh(input), conv(input)));
}

TEST(LowRankConv, GradientsReachEveryFactor) {
  torch::manual_seed(9);
  auto input = torch::randn({3, 5, 6, 6});
  for (const char* form : {"jaderberg(2)", "bn_low_rank(2)", "cp(3)", "tucker2(2,3)"}) {
    Conv2d conv(host_options(form));
    auto output = conv(input);
    // A random weighting: a plain sum has no gradient through train-mode BatchNorm.
    (output * torch::randn_like(output)).sum().backward();
    for (const auto& p : conv->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << form << " " << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << form << " " << p.key();
    }
  }
}

}  // namespace
