#include <gtest/gtest.h>

#include <sstream>

#include "shrink/nn/compact_conv.h"
#include "shrink/nn/conv.h"

using namespace shrink::nn;

namespace {

ConvForm form_of(const std::string& text) { return ConvForm::parse(text); }

Conv2d host(int64_t in, int64_t out, int64_t k, const std::string& form, int64_t stride = 1, int64_t padding = 0,
            bool bias = true) {
  return Conv2d(Conv2dOptions(in, out, k).stride(stride).padding(padding).bias(bias).form(form_of(form)));
}

template <class T>
T* form_child(Conv2d& conv) {
  auto* f = dynamic_cast<T*>(conv->form_module().get());
  EXPECT_NE(f, nullptr) << conv->options.form().str();
  return f;
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

int64_t total_macs(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& m : module.modules(/*include_self=*/true))
    if (auto* c = dynamic_cast<const CostedLayer*>(m.get())) n += c->macs_per_sample();
  return n;
}

/// m rotated by 90 degrees `times` times like torch::rot90(m, times, {2, 3}), one element at a time:
/// one turn maps out[i][j] = m[j][k - 1 - i].
torch::Tensor slow_rot90(const torch::Tensor& w, int times) {
  auto cur = w.clone();
  const int64_t k = w.size(2);
  for (int t = 0; t < times; ++t) {
    auto next = torch::empty_like(cur);
    auto a = cur.accessor<float, 4>();
    auto b = next.accessor<float, 4>();
    for (int64_t o = 0; o < w.size(0); ++o)
      for (int64_t c = 0; c < w.size(1); ++c)
        for (int64_t i = 0; i < k; ++i)
          for (int64_t j = 0; j < k; ++j) b[o][c][i][j] = a[o][c][j][k - 1 - i];
    cur = next;
  }
  return cur;
}

}  // namespace

TEST(CompactConv, CReluIsYAndMinusYOfItsHalfConv) {
  torch::manual_seed(1);
  auto conv = host(3, 8, 3, "crelu", 2, 1);
  auto* f = form_child<CReluConvImpl>(conv);
  ASSERT_EQ(f->conv->weight.sizes(), (std::vector<int64_t>{4, 3, 3, 3}));
  auto x = torch::randn({2, 3, 9, 9});
  auto y = torch::conv2d(x, f->conv->weight, f->conv->bias, 2, 1);
  auto out = conv(x);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 8, 5, 5}));
  EXPECT_TRUE(torch::allclose(out, torch::cat({y, -y}, 1), 1e-5, 1e-6));
  auto one = conv(x[0]);  // unbatched
  EXPECT_TRUE(torch::allclose(one, out[0], 1e-5, 1e-6));
  // Half the parameters of the dense layer, half its MACs.
  EXPECT_EQ(parameter_count(*conv), (3 * 8 * 9 + 8) / 2);
  EXPECT_EQ(total_macs(*conv), 5 * 5 * 4 * 3 * 9);
}

TEST(CompactConv, MbaAddsEachBiasBlockToTheSameFilters) {
  torch::manual_seed(2);
  auto conv = host(4, 6, 3, "mba(3)", 1, 1, /*bias=*/false);
  auto* f = form_child<MbaConvImpl>(conv);
  ASSERT_EQ(f->biases.sizes(), (std::vector<int64_t>{3, 2}));
  EXPECT_FALSE(f->conv->bias.defined());
  // The biases start spread over [-1/sqrt(fan_in), 1/sqrt(fan_in)] along k.
  const double bound = 1.0 / std::sqrt(4.0 * 9);
  EXPECT_NEAR(f->biases[0][1].item<double>(), -bound, 1e-6);
  EXPECT_NEAR(f->biases[1][0].item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(f->biases[2][1].item<double>(), bound, 1e-6);
  {
    torch::NoGradGuard no_grad;
    f->biases.uniform_(-1, 1);
  }
  auto x = torch::randn({2, 4, 7, 7});
  auto out = conv(x);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 6, 7, 7}));
  auto y = torch::conv2d(x, f->conv->weight, {}, 1, 1);
  for (int64_t k = 0; k < 3; ++k)
    for (int64_t j = 0; j < 2; ++j)
      EXPECT_TRUE(torch::allclose(out.select(1, k * 2 + j), y.select(1, j) + f->biases[k][j].item<double>(), 1e-5,
                                  1e-6))
          << k << " " << j;
  EXPECT_TRUE(torch::allclose(conv(x[1]), out[1], 1e-5, 1e-6));
  EXPECT_EQ(parameter_count(*conv), 4 * 2 * 9 + 6);
  // Gradients reach the biases and the filters.
  out.pow(2).sum().backward();
  EXPECT_TRUE(f->biases.grad().defined());
  EXPECT_GT(f->biases.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(f->conv->weight.grad().abs().sum().item<double>(), 0);
}

TEST(CompactConv, CyclicKernelIsTheFourRotations) {
  torch::manual_seed(3);
  auto conv = host(3, 8, 3, "cyclic", 2, 1);
  auto* f = form_child<CyclicConvImpl>(conv);
  ASSERT_EQ(f->weight.sizes(), (std::vector<int64_t>{2, 3, 3, 3}));
  auto w = f->weight.detach();
  auto expected = torch::cat({w, slow_rot90(w, 1), slow_rot90(w, 2), slow_rot90(w, 3)}, 0);
  EXPECT_TRUE(torch::equal(f->effective_weight().detach(), expected));
  auto x = torch::randn({2, 3, 10, 10});
  auto out = conv(x);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 8, 5, 5}));
  EXPECT_TRUE(torch::allclose(out, torch::conv2d(x, expected, f->bias, 2, 1), 1e-5, 1e-6));
  // A quarter of the weights plus the full bias; MACs of the full convolution.
  EXPECT_EQ(parameter_count(*conv), 2 * 3 * 9 + 8);
  EXPECT_EQ(total_macs(*conv), 5 * 5 * 8 * 3 * 9);
  EXPECT_EQ(f->macs_per_sample(), 5 * 5 * 8 * 3 * 9);
}

TEST(CompactConv, CyclicKernelCachedWithoutAutogradFollowsWeightChanges) {
  torch::manual_seed(4);
  auto conv = host(3, 8, 3, "cyclic", 1, 1);
  auto* f = form_child<CyclicConvImpl>(conv);
  auto x = torch::randn({1, 3, 6, 6});
  torch::NoGradGuard no_grad;
  auto reference = [&] { return torch::conv2d(x, f->effective_weight(), f->bias, 1, 1); };
  EXPECT_TRUE(torch::allclose(conv(x), reference()));
  EXPECT_TRUE(torch::allclose(conv(x), reference()));  // from the cache
  f->weight.mul_(-2.0);                                // in place: the version counter moves
  EXPECT_TRUE(torch::allclose(conv(x), reference()));
  f->weight.set_(torch::randn_like(f->weight));        // new storage
  EXPECT_TRUE(torch::allclose(conv(x), reference()));
}

TEST(CompactConv, CyclicIsRotationEquivariant) {
  // Rotating the input rotates each output block and moves it to the next rotation's block.
  torch::manual_seed(4);
  auto conv = host(2, 8, 3, "cyclic", 1, 1, /*bias=*/false);
  auto x = torch::randn({1, 2, 6, 6});
  auto out = conv(x), rotated = conv(torch::rot90(x, 1, {2, 3}));
  for (int64_t r = 0; r < 4; ++r) {
    auto expected = torch::rot90(out.narrow(1, ((r + 3) % 4) * 2, 2), 1, {2, 3});
    EXPECT_TRUE(torch::allclose(rotated.narrow(1, r * 2, 2), expected, 1e-5, 1e-5)) << r;
  }
}

TEST(CompactConv, DepthwiseSeparableStructureAndCounts) {
  torch::manual_seed(5);
  auto conv = host(4, 10, 3, "depthwise_separable", 2, 1);
  auto* f = form_child<DepthwiseSeparableConvImpl>(conv);
  EXPECT_EQ(f->depthwise->options.groups(), 4);
  EXPECT_EQ(f->depthwise->weight.sizes(), (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_FALSE(f->depthwise->bias.defined());
  EXPECT_EQ(f->pointwise->weight.sizes(), (std::vector<int64_t>{10, 4, 1, 1}));
  EXPECT_TRUE(f->pointwise->bias.defined());
  EXPECT_EQ(parameter_count(*conv), 4 * 9 + 4 * 10 + 10 + 2 * 4);
  conv->eval();
  auto x = torch::randn({2, 4, 9, 9});
  auto out = conv(x);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 10, 5, 5}));
  // Eval BatchNorm with fresh statistics is the identity (up to eps).
  auto d = torch::conv2d(x, f->depthwise->weight, {}, 2, 1, 1, 4);
  auto expected = torch::conv2d(torch::relu(d / std::sqrt(1 + 1e-5)), f->pointwise->weight, f->pointwise->bias);
  EXPECT_TRUE(torch::allclose(out, expected, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(conv(x[0]), out[0], 1e-5, 1e-6));
  EXPECT_EQ(total_macs(*conv), 5 * 5 * 4 * 9 + 5 * 5 * 10 * 4);
  auto no_bias = host(4, 10, 3, "depthwise_separable", 1, 0, /*bias=*/false);
  EXPECT_EQ(parameter_count(*no_bias), 4 * 9 + 4 * 10 + 2 * 4);
}

TEST(CompactConv, FireStructureAndCounts) {
  torch::manual_seed(6);
  auto conv = host(6, 12, 3, "fire(3,5)", 2, 1);
  auto* f = form_child<FireConvImpl>(conv);
  EXPECT_EQ(f->squeeze->weight.sizes(), (std::vector<int64_t>{3, 6, 1, 1}));
  EXPECT_TRUE(f->squeeze->bias.defined());
  EXPECT_EQ(f->expand1x1->weight.sizes(), (std::vector<int64_t>{5, 3, 1, 1}));
  EXPECT_EQ(f->expand3x3->weight.sizes(), (std::vector<int64_t>{7, 3, 3, 3}));
  EXPECT_EQ(parameter_count(*conv), (6 * 3 + 3) + (3 * 5 + 5) + (3 * 7 * 9 + 7));
  for (const int64_t size : {9, 10}) {
    auto x = torch::randn({2, 6, size, size});
    auto out = conv(x);
    auto dense = torch::conv2d(x, torch::zeros({12, 6, 3, 3}), {}, 2, 1);
    ASSERT_EQ(out.sizes(), dense.sizes()) << size;
    auto s = torch::relu(torch::conv2d(x, f->squeeze->weight, f->squeeze->bias, 2));
    auto expected = torch::cat({torch::conv2d(s, f->expand1x1->weight, f->expand1x1->bias),
                                torch::conv2d(s, f->expand3x3->weight, f->expand3x3->bias, 1, 1)},
                               1);
    EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-6));
  }
  auto no_bias = host(6, 12, 3, "fire(3,5)", 1, 1, /*bias=*/false);
  EXPECT_EQ(parameter_count(*no_bias), (6 * 3 + 3) + 3 * 5 + 3 * 7 * 9);
}

TEST(CompactConv, OutputShapesMatchTheHost) {
  torch::manual_seed(7);
  auto x = torch::randn({1, 4, 11, 11});
  for (const std::string form : {"depthwise_separable", "crelu", "mba(2)", "cyclic", "fire(2,3)"})
    for (const int64_t stride : {1, 2}) {
      // fire needs "same" padding; the others take any.
      for (const int64_t padding : form == "fire(2,3)" ? std::vector<int64_t>{2} : std::vector<int64_t>{0, 2}) {
        Conv2d dense(Conv2dOptions(4, 8, 5).stride(stride).padding(padding));
        auto conv = host(4, 8, 5, form, stride, padding);
        EXPECT_TRUE(conv->composite());
        EXPECT_EQ(conv(x).sizes(), dense(x).sizes()) << form << " stride " << stride << " padding " << padding;
      }
    }
}

TEST(CompactConv, RejectsWhatDoesNotFit) {
  auto misfit = [](Conv2dOptions o, const std::string& form) { return compact_form_misfit(o.form(form_of(form))); };
  EXPECT_EQ(misfit(Conv2dOptions(4, 8, 3), "cyclic"), "");
  EXPECT_NE(misfit(Conv2dOptions(4, 6, 3), "cyclic").find("divisible by 4"), std::string::npos);
  EXPECT_NE(misfit(Conv2dOptions(4, 8, {3, 1}), "cyclic").find("square kernel"), std::string::npos);
  EXPECT_NE(misfit(Conv2dOptions(4, 7, 3), "crelu").find("even"), std::string::npos);
  EXPECT_NE(misfit(Conv2dOptions(4, 8, 3), "mba(3)").find("must divide"), std::string::npos);
  EXPECT_NE(misfit(Conv2dOptions(4, 8, 3).groups(2), "depthwise_separable").find("groups 1"), std::string::npos);
  EXPECT_NE(misfit(Conv2dOptions(4, 8, 3), "fire(2,8)").find("expand1x1"), std::string::npos);
  EXPECT_NE(misfit(Conv2dOptions(4, 8, 3), "fire(2,4)").find("'same' padding"), std::string::npos);
  EXPECT_EQ(misfit(Conv2dOptions(4, 8, 3).padding(1), "fire(2,4)"), "");
  EXPECT_EQ(misfit(Conv2dOptions(4, 8, 1), "fire(2,4)"), "");
  EXPECT_THROW(host(4, 6, 3, "cyclic"), c10::Error);
  // A failed set_form leaves the layer as it was.
  Conv2d conv(Conv2dOptions(4, 6, 3));
  const auto weight = conv->weight.clone();
  const auto* const weight_impl = conv->weight.unsafeGetTensorImpl();
  EXPECT_THROW(conv->set_form(form_of("cyclic")), c10::Error);
  EXPECT_FALSE(conv->composite());
  EXPECT_EQ(conv->weight.sizes(), (std::vector<int64_t>{6, 4, 3, 3}));
  // ... with its own parameters, not a fresh init.
  EXPECT_TRUE(torch::equal(conv->weight, weight));
  EXPECT_EQ(conv->weight.unsafeGetTensorImpl(), weight_impl);
  EXPECT_EQ(conv->named_parameters().keys(), (std::vector<std::string>{"weight", "bias"}));
  // A composite layer keeps its form and its form's parameters too.
  conv->set_form(form_of("crelu"));
  const auto inner = conv->named_parameters()["form.conv.weight"].clone();
  EXPECT_THROW(conv->set_form(form_of("cyclic")), c10::Error);
  EXPECT_EQ(conv->options.form().str(), "crelu");
  EXPECT_TRUE(torch::equal(conv->named_parameters()["form.conv.weight"], inner));
  EXPECT_TRUE(torch::equal(conv->forward(torch::ones({1, 4, 5, 5})).narrow(1, 0, 3),
                           -conv->forward(torch::ones({1, 4, 5, 5})).narrow(1, 3, 3)));
}

TEST(CompactConv, ParameterNames) {
  auto names = [](Conv2d conv) {
    std::vector<std::string> out;
    for (const auto& p : conv->named_parameters()) out.push_back(p.key());
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(names(host(4, 8, 3, "crelu")), (V{"form.conv.weight", "form.conv.bias"}));
  EXPECT_EQ(names(host(4, 8, 3, "mba(2)")), (V{"form.biases", "form.conv.weight"}));
  EXPECT_EQ(names(host(4, 8, 3, "cyclic")), (V{"form.weight", "form.bias"}));
  EXPECT_EQ(names(host(4, 8, 3, "cyclic", 1, 0, false)), (V{"form.weight"}));
  EXPECT_EQ(names(host(4, 8, 3, "depthwise_separable")),
            (V{"form.depthwise.weight", "form.bn.weight", "form.bn.bias", "form.pointwise.weight",
               "form.pointwise.bias"}));
  EXPECT_EQ(names(host(4, 8, 1, "fire(2,4)")),
            (V{"form.squeeze.weight", "form.squeeze.bias", "form.expand1x1.weight", "form.expand1x1.bias",
               "form.expand3x3.weight", "form.expand3x3.bias"}));
}

TEST(CompactConv, CloneIsIndependentAndPrints) {
  torch::manual_seed(8);
  const auto x = torch::randn({2, 4, 8, 8});
  for (const std::string form : {"depthwise_separable", "fire(2,3)", "crelu", "mba(2)", "cyclic"}) {
    auto conv = host(4, 8, 3, form, 1, 1);
    conv->eval();
    auto copy = std::dynamic_pointer_cast<Conv2dImpl>(conv->clone());
    ASSERT_TRUE(copy) << form;
    EXPECT_EQ(copy->options.form(), conv->options.form());
    EXPECT_TRUE(torch::allclose(copy->forward(x), conv(x), 1e-6, 1e-6)) << form;
    auto a = conv->named_parameters(), b = copy->named_parameters();
    ASSERT_EQ(a.size(), b.size()) << form;
    {
      torch::NoGradGuard no_grad;
      for (const auto& p : b) p.value().add_(1.0);
    }
    for (const auto& p : a) EXPECT_FALSE(torch::equal(p.value(), b[p.key()])) << form << " " << p.key();
    EXPECT_FALSE(torch::allclose(copy->forward(x), conv(x), 1e-3, 1e-3)) << form;
    std::ostringstream printed;
    conv->pretty_print(printed);
    EXPECT_NE(printed.str().find("form=" + form), std::string::npos) << printed.str();
    std::ostringstream inner;
    conv->form_module()->pretty_print(inner);
    EXPECT_NE(inner.str().find("shrink::nn::"), std::string::npos) << inner.str();
  }
}
