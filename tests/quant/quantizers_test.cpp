// Fake quantizers against slow references: quantize-dequantize values, straight-through
// gradients, LSQ and PACT gradients against the papers' formulas, the values binary, ternary,
// DoReFa and fixed-point quantizers may take, stored bits, and clone/state of the modules.
#include <gtest/gtest.h>

#include <cmath>

#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/quant/fake_quantize.h"
#include "shrink/quant/quantizers.h"

using namespace shrink;
using namespace shrink::quant;

namespace {

QuantizerOptions uniform(int64_t bits, bool symmetric, bool per_channel = false, const std::string& range = "minmax") {
  QuantizerOptions o;
  o.bits = bits;
  o.symmetric = symmetric;
  o.per_channel = per_channel;
  o.range = range;
  return o;
}

QuantizerOptions kind(const std::string& name, int64_t bits = 8) {
  QuantizerOptions o;
  o.quantizer = name;
  o.bits = bits;
  return o;
}

/// Sorted distinct values of `t`.
std::vector<double> distinct(const torch::Tensor& t) {
  auto u = std::get<0>(torch::_unique(t.flatten().to(torch::kDouble), /*sorted=*/true));
  return std::vector<double>(u.data_ptr<double>(), u.data_ptr<double>() + u.numel());
}

}  // namespace

TEST(UniformQuantizer, MatchesReferenceQuantizeDequantize) {
  torch::manual_seed(1);
  for (int64_t bits : {2, 3, 4, 8, 16}) {
    for (bool symmetric : {true, false}) {
      for (bool per_channel : {false, true}) {
        auto x = torch::randn({6, 3, 3, 3}) * 2 + 0.3;
        UniformQuantizer q(uniform(bits, symmetric, per_channel), QuantizerRole::weight, 6);
        q->train();
        auto y = q->quantize(x);
        // Reference range: per channel or whole tensor, always containing 0.
        auto flat = per_channel ? x.reshape({6, -1}) : x.reshape({1, -1});
        auto lo = std::get<0>(flat.min(1)).clamp_max(0).to(torch::kDouble);
        auto hi = std::get<0>(flat.max(1)).clamp_min(0).to(torch::kDouble);
        auto [qmin, qmax] = integer_range(bits, symmetric);
        torch::Tensor scale, zp;
        if (symmetric) {
          scale = torch::max(-lo, hi) / ((qmax - qmin) / 2.0);
          zp = torch::zeros_like(scale);
        } else {
          scale = (hi - lo) / double(qmax - qmin);
          zp = (double(qmin) - torch::round(lo / scale)).clamp(qmin, qmax);
        }
        EXPECT_TRUE(torch::allclose(q->scale.to(torch::kDouble), scale, 1e-6, 0)) << bits << symmetric << per_channel;
        EXPECT_TRUE(torch::equal(q->zero_point.to(torch::kDouble), zp)) << bits << symmetric << per_channel;
        auto ref = quant::detail::reference_fake_quantize(x, q->scale, q->zero_point, qmin, qmax, per_channel);
        EXPECT_TRUE(torch::allclose(y, ref, 0, 1e-6 * (1 + scale.max().item<double>())))
            << "bits " << bits << " symmetric " << symmetric << " per_channel " << per_channel
            << " max diff " << (y - ref).abs().max().item<double>();
        // At most 2^bits distinct values per channel.
        for (int64_t c = 0; c < (per_channel ? 6 : 1); ++c) {
          auto values = distinct(per_channel ? y[c] : y);
          EXPECT_LE(static_cast<int64_t>(values.size()), int64_t{1} << std::min<int64_t>(bits, 20));
        }
      }
    }
  }
}

TEST(UniformQuantizer, GradientIsTheStraightThroughMask) {
  QuantizerOptions o = uniform(4, false, false, "minmax");
  UniformQuantizer q(o, QuantizerRole::activation);
  q->train();
  q->quantize(torch::linspace(-1, 1, 50));  // range [-1, 1]
  q->set_observing(false);
  auto x = torch::linspace(-3, 3, 61).requires_grad_(true);
  auto y = q->quantize(x);
  y.backward(torch::ones_like(y));
  const double s = q->scale.item<double>(), z = q->zero_point.item<double>();
  auto [qmin, qmax] = integer_range(4, false);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x[i].item<double>();
    const double level = std::nearbyint(v / s) + z;
    const double expected = (level >= qmin && level <= qmax) ? 1.0 : 0.0;
    EXPECT_EQ(x.grad()[i].item<double>(), expected) << "x = " << v;
  }
}

TEST(UniformQuantizer, RangesFollowTheirObserver) {
  auto batch = [](double lo, double hi) { return torch::tensor({lo, 0.0, hi}); };
  UniformQuantizer minmax(uniform(8, false, false, "minmax"), QuantizerRole::activation);
  UniformQuantizer ema(uniform(8, false, false, "moving_average"), QuantizerRole::activation);
  for (auto* q : {&minmax, &ema}) {
    (*q)->train();
    (*q)->quantize(batch(-1, 2));
    (*q)->quantize(batch(-3, 1));
  }
  EXPECT_DOUBLE_EQ(minmax->min_val.item<double>(), -3);
  EXPECT_DOUBLE_EQ(minmax->max_val.item<double>(), 2);
  EXPECT_NEAR(ema->min_val.item<double>(), -1 + 0.01 * (-3 + 1), 1e-6);
  EXPECT_NEAR(ema->max_val.item<double>(), 2 + 0.01 * (1 - 2), 1e-6);
  // Frozen: nothing moves; eval: nothing is observed.
  ema->set_observing(false);
  ema->quantize(batch(-100, 100));
  EXPECT_NEAR(ema->max_val.item<double>(), 1.99, 1e-6);
  ema->set_observing(true);
  ema->eval();
  ema->quantize(batch(-100, 100));
  EXPECT_NEAR(ema->max_val.item<double>(), 1.99, 1e-6);
  EXPECT_EQ(ema->observed.item<int64_t>(), 2);

  // Percentile: the extremes of a heavy tail are clipped.
  QuantizerOptions p = uniform(8, false, false, "percentile");
  p.percentile = 99.0;
  UniformQuantizer pq(p, QuantizerRole::activation);
  pq->train();
  auto x = torch::arange(0, 1000, torch::kFloat);
  pq->quantize(x);
  EXPECT_NEAR(pq->max_val.item<double>(), 989.01, 0.5);
  EXPECT_NEAR(pq->min_val.item<double>(), 9.99, 0.5);

  // Frozen before any batch: the first training batch still sets the range.
  UniformQuantizer early(uniform(8, false), QuantizerRole::activation);
  early->train();
  early->set_observing(false);
  early->quantize(batch(-2, 2));
  EXPECT_EQ(early->observed.item<int64_t>(), 1);
  early->quantize(batch(-5, 5));
  EXPECT_DOUBLE_EQ(early->max_val.item<double>(), 2);

  // An uncalibrated activation quantizer in eval passes its input through.
  UniformQuantizer fresh(uniform(8, false), QuantizerRole::activation);
  fresh->eval();
  auto v = torch::randn({10});
  EXPECT_TRUE(torch::equal(fresh->quantize(v), v));
}

TEST(LsqQuantizer, GradientsMatchThePaper) {
  for (bool per_channel : {false, true}) {
    QuantizerOptions o = kind("lsq", 3);
    o.per_channel = per_channel;
    LsqQuantizer q(o, QuantizerRole::weight, 2);
    q->train();
    auto x = torch::tensor({{-2.0, -0.31, 0.0, 0.12, 0.55, 3.0}, {0.9, -0.2, 0.26, -0.74, 0.01, -1.5}});
    q->quantize(x.clone());  // initializes the step: 2 mean|x| / sqrt(Qp)
    const auto [qmin, qmax] = integer_range(3, true);
    auto expected_step = per_channel ? 2 * x.abs().mean(1) / std::sqrt(double(qmax))
                                     : (2 * x.abs().mean() / std::sqrt(double(qmax))).reshape({1});
    EXPECT_TRUE(torch::allclose(q->step.detach(), expected_step.to(torch::kFloat), 1e-6, 1e-7));
    {
      torch::NoGradGuard g;
      q->step.copy_(per_channel ? torch::tensor({0.4, 0.25}) : torch::tensor({0.4}));
    }
    q->step.mutable_grad() = torch::Tensor();
    auto xg = x.clone().requires_grad_(true);
    auto y = q->quantize(xg);
    auto upstream = torch::linspace(0.5, 1.5, 12).reshape({2, 6});
    (y * upstream).sum().backward();
    // Reference (Esser et al. eq. 3 and 4, g = 1 / sqrt(N Qp)).
    const double n = per_channel ? 6.0 : 12.0;
    const double g = 1.0 / std::sqrt(n * qmax);
    std::vector<double> ds(per_channel ? 2 : 1, 0.0);
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t c = 0; c < 6; ++c) {
        const double s = q->step[per_channel ? r : 0].item<double>();
        const double v = x[r][c].item<double>() / s;
        const double u = upstream[r][c].item<double>();
        double dq_ds, dq_dx;
        if (v <= qmin) {
          dq_ds = qmin, dq_dx = 0;
        } else if (v >= qmax) {
          dq_ds = qmax, dq_dx = 0;
        } else {
          dq_ds = std::nearbyint(v) - v, dq_dx = 1;
        }
        ds[per_channel ? r : 0] += u * dq_ds * g;
        EXPECT_NEAR(xg.grad()[r][c].item<double>(), u * dq_dx, 1e-6) << r << "," << c;
        const double expected = std::min(std::max(std::nearbyint(v), double(qmin)), double(qmax)) * s;
        EXPECT_NEAR(y[r][c].item<double>(), expected, 1e-6);
      }
    for (size_t i = 0; i < ds.size(); ++i) EXPECT_NEAR(q->step.grad()[i].item<double>(), ds[i], 1e-5) << per_channel;
  }
}

TEST(LsqQuantizer, PassesThroughInEvalBeforeItsStepIsInitialized) {
  LsqQuantizer q(kind("lsq", 4), QuantizerRole::weight);
  q->eval();
  auto w = torch::randn({8}) * 0.01;
  EXPECT_TRUE(torch::equal(q->quantize(w), w));
}

TEST(PactQuantizer, ClipsQuantizesAndLearnsAlpha) {
  QuantizerOptions o = kind("pact", 2);
  o.init_alpha = 1.5;
  PactQuantizer q(o, QuantizerRole::activation);
  q->train();
  auto x = torch::tensor({-1.0, 0.2, 0.6, 1.1, 1.5, 2.0, 4.0}).requires_grad_(true);
  auto y = q->quantize(x);
  auto upstream = torch::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0});
  (y * upstream).sum().backward();
  const double step = 1.5 / 3.0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x[i].item<double>();
    const double clipped = std::min(std::max(v, 0.0), 1.5);
    EXPECT_NEAR(y[i].item<double>(), std::nearbyint(clipped / step) * step, 1e-6) << v;
    EXPECT_EQ(x.grad()[i].item<double>(), (v > 0 && v < 1.5) ? upstream[i].item<double>() : 0.0) << v;
  }
  // d/dalpha = sum of upstream where x >= alpha (Choi et al. eq. 3): 5 + 6 + 7.
  EXPECT_NEAR(q->alpha.grad().item<double>(), 18.0, 1e-6);
  auto a = q->affine();
  ASSERT_TRUE(a.has_value());
  EXPECT_NEAR(a->scale.item<double>(), step, 1e-7);
  EXPECT_EQ(a->quant_max, 3);
}

TEST(BinaryQuantizers, TakeOnlyTheirAllowedValues) {
  torch::manual_seed(2);
  auto w = torch::randn({4, 3, 3, 3}) * 0.8;
  // BinaryConnect: {-1, +1}; gradient cancelled where |w| > 1.
  {
    BinaryQuantizer q(kind("binary", 1), QuantizerRole::weight, 4);
    auto x = w.clone().requires_grad_(true);
    auto y = q->quantize(x);
    EXPECT_EQ(distinct(y), (std::vector<double>{-1, 1}));
    y.sum().backward();
    EXPECT_TRUE(torch::equal(x.grad(), (w.abs() <= 1).to(torch::kFloat)));
    EXPECT_EQ(q->stored_bits(w), double(w.numel()));
  }
  // BWN: +-alpha_c per filter, alpha_c = mean |w_c|.
  {
    BinaryQuantizer q(kind("bwn", 1), QuantizerRole::weight, 4);
    auto y = q->quantize(w);
    for (int64_t c = 0; c < 4; ++c) {
      const double alpha = w[c].abs().mean().item<double>();
      auto values = distinct(y[c]);
      ASSERT_EQ(values.size(), 2u);
      EXPECT_NEAR(values[0], -alpha, 1e-6);
      EXPECT_NEAR(values[1], alpha, 1e-6);
    }
    EXPECT_EQ(q->stored_bits(w), double(w.numel()) + 32.0 * 4);
  }
  // Ternary: {-a, 0, +a}, delta = 0.7 mean|w|, a = mean of |w| above delta.
  {
    BinaryQuantizer q(kind("ternary", 2), QuantizerRole::weight, 4);
    auto y = q->quantize(w);
    const double delta = 0.7 * w.abs().mean().item<double>();
    auto kept = w.abs() > delta;
    const double a = w.abs().masked_select(kept).mean().item<double>();
    auto values = distinct(y);
    ASSERT_EQ(values.size(), 3u);
    EXPECT_NEAR(values[0], -a, 1e-6);
    EXPECT_EQ(values[1], 0.0);
    EXPECT_NEAR(values[2], a, 1e-6);
    EXPECT_TRUE(torch::equal(y != 0, kept));
  }
  // Sign activations (XNOR-Net inputs).
  {
    BinaryQuantizer q(kind("sign", 1), QuantizerRole::activation);
    EXPECT_EQ(distinct(q->quantize(torch::randn({100}))), (std::vector<double>{-1, 1}));
  }
}

TEST(DorefaQuantizer, WeightsAndActivationsLieOnTheirGrids) {
  torch::manual_seed(3);
  auto w = torch::randn({8, 16});
  for (int64_t k : {1, 2, 4}) {
    DorefaQuantizer q(kind("dorefa", k), QuantizerRole::weight);
    auto y = q->quantize(w);
    auto values = distinct(y);
    EXPECT_LE(static_cast<int64_t>(values.size()), int64_t{1} << k) << k;
    if (k > 1) {
      // 2 * i / (2^k - 1) - 1.
      const double n = std::pow(2.0, double(k)) - 1;
      for (double v : values) EXPECT_NEAR(std::nearbyint((v + 1) / 2 * n), (v + 1) / 2 * n, 1e-5) << k;
      // Reference: tanh transform.
      auto t = torch::tanh(w);
      auto ref = 2 * torch::round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1;
      EXPECT_TRUE(torch::allclose(y, ref, 0, 1e-6)) << k;
    } else {
      EXPECT_EQ(values.size(), 2u);
      EXPECT_NEAR(values[1], w.abs().mean().item<double>(), 1e-6);
    }
  }
  DorefaQuantizer a(kind("dorefa", 2), QuantizerRole::activation);
  auto y = a->quantize(torch::tensor({-1.0, 0.1, 0.2, 0.5, 0.9, 3.0}));
  EXPECT_TRUE(torch::allclose(y, torch::tensor({0.0, 0.0, 1.0 / 3, 2.0 / 3, 1.0, 1.0}).to(torch::kFloat), 0, 1e-6));
}

TEST(FixedPointQuantizer, StochasticRoundingIsUnbiasedAndOnTheGrid) {
  QuantizerOptions o = kind("fixed_point", 16);
  o.fraction_bits = 4;
  FixedPointQuantizer q(o, QuantizerRole::weight);
  q->train();
  torch::manual_seed(5);
  auto x = torch::full({20000}, 0.3);  // 0.3 = 4.8 steps of 1/16
  auto y = q->quantize(x);
  EXPECT_EQ(distinct(y), (std::vector<double>{0.25, 0.3125}));
  EXPECT_NEAR(y.mean().item<double>(), 0.3, 0.001);
  // Gradient straight through inside the representable range, zero outside.
  auto big = torch::tensor({0.3, 5000.0}).requires_grad_(true);
  q->quantize(big).sum().backward();
  EXPECT_EQ(big.grad()[0].item<double>(), 1.0);
  EXPECT_EQ(big.grad()[1].item<double>(), 0.0);
  q->eval();
  EXPECT_TRUE(torch::equal(q->quantize(x), torch::full({20000}, 0.3125)));
  EXPECT_EQ(q->stored_bits(x), 16.0 * 20000);
}

TEST(QuantizerOptions, ValidationNamesTheKey) {
  auto error = [](QuantizerOptions o, QuantizerRole role) {
    try {
      validate(o, role);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error(uniform(9, true), QuantizerRole::weight), "bits: uniform quantization takes 2 to 8 or 16 bits (got 9)");
  EXPECT_EQ(error(kind("pact"), QuantizerRole::weight).rfind("quantizer: 'pact' quantizes activations", 0), 0u);
  EXPECT_EQ(error(kind("bwn", 1), QuantizerRole::activation).rfind("quantizer: 'bwn' quantizes weights", 0), 0u);
  EXPECT_EQ(error(uniform(8, false, true), QuantizerRole::activation), "per_channel: activations are quantized per tensor");
  EXPECT_EQ(error(kind("lsqq"), QuantizerRole::weight).rfind("quantizer: must be one of", 0), 0u);
  EXPECT_EQ(error(uniform(8, true), QuantizerRole::weight), "");
}

TEST(QuantizedLayers, ApplyTheirQuantizersAndCloneWithThem) {
  torch::manual_seed(6);
  nn::Conv2d conv(nn::Conv2dOptions(3, 4, 3).padding(1));
  nn::LayerQuantizers q;
  q.weight = make_quantizer_factory(uniform(4, true, true), QuantizerRole::weight, 4);
  q.input = make_quantizer_factory(uniform(8, false, false, "moving_average"), QuantizerRole::activation);
  conv->set_quantizers(q);
  conv->train();
  auto x = torch::randn({2, 3, 5, 5});
  auto y = conv->forward(x);
  auto* wq = dynamic_cast<UniformQuantizerImpl*>(conv->quantizers().weight);
  auto* iq = dynamic_cast<UniformQuantizerImpl*>(conv->quantizers().input);
  ASSERT_TRUE(wq && iq);
  auto xq = quant::detail::reference_fake_quantize(x, iq->scale, iq->zero_point, 0, 255, false);
  auto wref = quant::detail::reference_fake_quantize(conv->weight.detach(), wq->scale, wq->zero_point, -8, 7, true);
  auto ref = torch::conv2d(xq, wref, conv->bias.detach(), 1, 1);
  EXPECT_TRUE(torch::allclose(y, ref, 1e-5, 1e-5));
  EXPECT_DOUBLE_EQ(conv->bits_per_weight(), (4.0 * 108 + 32 * 4) / 108);
  // Quantizer state is module state: named, cloned, saved.
  auto names = conv->named_buffers();
  EXPECT_TRUE(names.contains("weight_quantizer.scale"));
  EXPECT_TRUE(names.contains("input_quantizer.max_val"));
  auto copy = std::dynamic_pointer_cast<nn::Conv2dImpl>(conv->clone());
  ASSERT_TRUE(copy);
  copy->eval();
  conv->eval();
  EXPECT_TRUE(torch::equal(copy->forward(x), conv->forward(x)));
  std::ostringstream printed;
  conv->pretty_print(printed);
  EXPECT_NE(printed.str().find("weight_quant=uniform(4 bits, per-channel, symmetric, minmax)"), std::string::npos)
      << printed.str();

  nn::Linear fc(nn::LinearOptions(6, 3));
  nn::LayerQuantizers lq;
  lq.weight = make_quantizer_factory(kind("binary", 1), QuantizerRole::weight, 3);
  fc->set_quantizers(lq);
  auto out = fc->forward(torch::ones({1, 6}));
  auto sign = torch::where(fc->weight >= 0, torch::ones_like(fc->weight), -torch::ones_like(fc->weight));
  EXPECT_TRUE(torch::allclose(out, torch::ones({1, 6}).mm(sign.t()) + fc->bias, 1e-6, 1e-6));
  EXPECT_DOUBLE_EQ(fc->bits_per_weight(), 1.0);
  fc->set_quantizers({});
  EXPECT_DOUBLE_EQ(fc->bits_per_weight(), 32.0);
  EXPECT_TRUE(fc->named_children().is_empty());
}

TEST(QuantizedLayers, FoldedBatchNormEqualsConvThenBatchNorm) {
  torch::manual_seed(7);
  nn::Conv2d conv(nn::Conv2dOptions(3, 5, 3).padding(1).bias(true));
  torch::nn::BatchNorm2d bn(5);
  {
    torch::NoGradGuard g;
    bn->running_mean.uniform_(-0.5, 0.5);
    bn->running_var.uniform_(0.5, 1.5);
    bn->weight.uniform_(0.5, 1.5);
    bn->weight[2] = 0;  // a pruned channel: constant output
    bn->bias.uniform_(-0.2, 0.2);
  }
  auto x = torch::randn({4, 3, 6, 6});
  for (bool training : {false, true}) {
    conv->fold_batch_norm(nullptr);
    conv->train(training);
    bn->train(training);
    auto reference = bn->forward(conv->forward(x));
    // In training the BatchNorm normalizes with batch statistics, which the folding scale cancels.
    conv->fold_batch_norm(bn);
    auto folded = bn->forward(conv->forward(x));
    EXPECT_TRUE(torch::allclose(folded, reference, 1e-4, 1e-5)) << "training " << training;
  }
  // Eval with a weight quantizer: exactly the folded, quantized convolution plus the folded bias.
  conv->fold_batch_norm(bn);
  nn::LayerQuantizers q;
  q.weight = make_quantizer_factory(uniform(4, true, true), QuantizerRole::weight, 5);
  conv->set_quantizers(q);
  conv->train();
  bn->eval();
  conv->forward(x);  // observe the folded weight's range
  conv->eval();
  auto y = bn->forward(conv->forward(x));
  auto s = nn::fold_scale(bn).detach();
  auto* wq = dynamic_cast<UniformQuantizerImpl*>(conv->quantizers().weight);
  auto wfold = quant::detail::reference_fake_quantize((conv->weight * s.view({-1, 1, 1, 1})).detach(), wq->scale,
                                               wq->zero_point, -8, 7, true);
  // The true factor is 0 for the pruned channel (its output is beta alone); the quantizer saw it at 1.
  auto s_true = (bn->weight * torch::rsqrt(bn->running_var + bn->options.eps())).detach();
  auto bias = (conv->bias - bn->running_mean) * s_true + bn->bias;
  auto expected = torch::conv2d(x, wfold, {}, 1, 1) * (s_true / s).view({1, -1, 1, 1}) + bias.detach().view({1, -1, 1, 1});
  EXPECT_TRUE(torch::allclose(y, expected, 1e-4, 1e-4)) << (y - expected).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(y.select(1, 2), bn->bias[2].expand_as(y.select(1, 2))));
  EXPECT_TRUE(torch::allclose(conv->folded_weight(), conv->weight * s_true.view({-1, 1, 1, 1})));
}

TEST(FakeQuantizeKernel, MatchesTheReferenceAndItsGradientIsTheRangeMask) {
  torch::manual_seed(8);
  for (auto [qmin, qmax, zp] : {std::tuple{0, 255, 37}, std::tuple{-128, 127, 0}, std::tuple{0, 15, 3},
                                std::tuple{-32768, 32767, 0}}) {
    const double scale = 0.0173;
    auto x = (torch::randn({3, 70001}) * 2.5).requires_grad_(true);  // odd size: several threads, a tail
    auto y = fake_quantize_per_tensor(x, scale, zp, qmin, qmax);
    auto ref = quant::detail::reference_fake_quantize(x.detach(), torch::tensor({scale}), torch::tensor({zp}), qmin,
                                                      qmax, false);
    EXPECT_TRUE(torch::equal(y.detach(), ref)) << qmin << ".." << qmax << ": "
                                               << (y.detach() - ref).abs().max().item<double>();
    auto upstream = torch::rand_like(y);
    (y * upstream).sum().backward();
    auto level = torch::round(x.detach() / static_cast<float>(scale)) + zp;
    auto mask = ((level >= qmin) & (level <= qmax)).to(torch::kFloat);
    EXPECT_TRUE(torch::equal(x.grad(), upstream * mask)) << qmin << ".." << qmax;
    // ATen's kernel agrees except on exact ties (it multiplies by 1 / scale).
    auto aten = torch::fake_quantize_per_tensor_affine(x.detach(), scale, zp, qmin, qmax);
    EXPECT_LE((aten != y.detach()).sum().item<int64_t>(), 3) << qmin << ".." << qmax;
  }
}
