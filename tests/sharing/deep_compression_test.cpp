// Deep Compression storage accounting: hand-computed bit counts (fillers, codebook, raw floats),
// a slow reference on random sparse tensors, layers' default index bits, and `shrink summary`.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "shrink/models/lenet.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/report/summary.h"
#include "shrink/sharing/deep_compression.h"
#include "shrink/sharing/huffman.h"

using namespace shrink;
using namespace shrink::sharing;

namespace {

/// 2x6 weights: nonzeros at flattened positions 1, 8 and 9.
torch::Tensor hand_tensor() {
  return torch::tensor({0.f, 1.5f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, -2.f, 1.5f, 0.f, 0.f}).view({2, 6});
}

/// Slow reference of the whole accounting: entries listed one by one, maps for the counts,
/// Huffman cost by repeated merging of the two lightest weights.
uint64_t slow_huffman_cost(const std::map<uint32_t, uint64_t>& counts) {
  std::vector<uint64_t> w;
  for (const auto& [s, c] : counts) w.push_back(c);
  if (w.size() == 1) return w[0];
  uint64_t total = 0;
  while (w.size() > 1) {
    std::sort(w.begin(), w.end());
    const uint64_t m = w[0] + w[1];
    total += m;  // every merge adds one bit to each symbol below it
    w.erase(w.begin(), w.begin() + 2);
    w.push_back(m);
  }
  return total;
}

WeightStorage slow_storage(const torch::Tensor& weight, int index_bits, int64_t max_codebook) {
  WeightStorage s;
  auto t = weight.contiguous().view(-1);
  const int64_t max_gap = (int64_t(1) << index_bits) - 1;
  std::vector<int64_t> gaps;
  std::vector<float> values;  // 0 for fillers
  int64_t prev = -1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = t[i].item<float>();
    if (v == 0.0f) continue;
    while (i - prev > max_gap) {
      gaps.push_back(max_gap);
      values.push_back(0.0f);
      prev += max_gap;
      ++s.filler;
    }
    gaps.push_back(i - prev);
    values.push_back(v);
    prev = i;
    ++s.nonzero;
  }
  s.weights = t.numel();
  s.entries = static_cast<int64_t>(gaps.size());
  s.index_bits = index_bits;
  if (s.entries == 0) return s;
  std::map<float, int64_t> distinct;
  for (auto v : values)
    if (v != 0.0f) distinct[v] = 0;
  std::map<uint32_t, uint64_t> gap_counts;
  for (auto g : gaps) ++gap_counts[static_cast<uint32_t>(g)];
  s.index_storage_bits = s.entries * index_bits;
  s.huffman_index_bits = static_cast<int64_t>(slow_huffman_cost(gap_counts) + 32 + 5 * (gap_counts.rbegin()->first + 1));
  if (static_cast<int64_t>(distinct.size()) <= max_codebook) {
    s.codebook = true;
    s.codebook_size = static_cast<int64_t>(distinct.size());
    const int64_t symbols = s.codebook_size + (s.filler ? 1 : 0);
    int bits = 1;
    while ((int64_t(1) << bits) < symbols) ++bits;
    s.value_bits = bits;
    s.value_storage_bits = s.entries * bits;
    s.codebook_bits = s.codebook_size * 32;
    // Symbols by float bit pattern order, filler last: only the counts matter for the cost,
    // the table length needs the position of the last symbol.
    std::map<uint32_t, uint64_t> value_counts;
    for (auto v : values) {
      uint32_t b;
      std::memcpy(&b, &v, 4);
      ++value_counts[v == 0.0f ? 0xffffffffu : b];
    }
    const uint64_t table_symbols = s.filler ? s.codebook_size + 1 : s.codebook_size;
    s.huffman_value_bits = static_cast<int64_t>(slow_huffman_cost(value_counts) + 32 + 5 * table_symbols);
  } else {
    s.value_bits = 32;
    s.value_storage_bits = s.entries * 32;
    s.huffman_value_bits = s.value_storage_bits;
  }
  return s;
}

void expect_same(const WeightStorage& a, const WeightStorage& b, const std::string& what) {
  EXPECT_EQ(a.weights, b.weights) << what;
  EXPECT_EQ(a.nonzero, b.nonzero) << what;
  EXPECT_EQ(a.filler, b.filler) << what;
  EXPECT_EQ(a.entries, b.entries) << what;
  EXPECT_EQ(a.codebook, b.codebook) << what;
  EXPECT_EQ(a.codebook_size, b.codebook_size) << what;
  EXPECT_EQ(a.value_bits, b.value_bits) << what;
  EXPECT_EQ(a.index_storage_bits, b.index_storage_bits) << what;
  EXPECT_EQ(a.value_storage_bits, b.value_storage_bits) << what;
  EXPECT_EQ(a.codebook_bits, b.codebook_bits) << what;
  EXPECT_EQ(a.huffman_index_bits, b.huffman_index_bits) << what;
  EXPECT_EQ(a.huffman_value_bits, b.huffman_value_bits) << what;
}

/// Random weights with a given density and `levels` distinct values (0: continuous).
torch::Tensor random_weights(std::vector<int64_t> shape, double density, int levels, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto w = torch::randn(shape, gen);
  if (levels > 0) w = torch::round(w * (levels / 6.0)) / (levels / 6.0) + 0.001;
  auto keep = torch::rand(shape, gen) < density;
  return w * keep;
}

}  // namespace

TEST(DeepCompression, HandComputedCodebookWithFillers) {
  // fc index bits 2: gaps up to 3. Position 1: gap 2. Position 8: gap 7 = two fillers (gap 3
  // each) + gap 1. Position 9: gap 1. Entries 5, of them 2 fillers.
  auto s = weight_storage(hand_tensor(), 2);
  EXPECT_EQ(s.weights, 12);
  EXPECT_EQ(s.nonzero, 3);
  EXPECT_EQ(s.filler, 2);
  EXPECT_EQ(s.entries, 5);
  EXPECT_TRUE(s.codebook);
  EXPECT_EQ(s.codebook_size, 2);  // 1.5 and -2
  EXPECT_EQ(s.value_bits, 2);     // 3 symbols with the filler's zero
  EXPECT_EQ(s.index_storage_bits, 10);
  EXPECT_EQ(s.value_storage_bits, 10);
  EXPECT_EQ(s.codebook_bits, 64);
  EXPECT_EQ(s.bits(), 84);
  // Gaps {2, 3, 3, 1, 1}: counts 2/1/2 -> lengths 1/2/2 -> 8 bits; table 32 + 4 lengths * 5.
  EXPECT_EQ(s.huffman_index_bits, 8 + 32 + 20);
  // Values {1.5, 0, 0, -2, 1.5}: counts 2/1/2 -> 8 bits; table 32 + 3 * 5.
  EXPECT_EQ(s.huffman_value_bits, 8 + 32 + 15);
  EXPECT_EQ(s.huffman_bits(), 60 + 55 + 64);

  auto sparse = sparse_weight(hand_tensor(), 2);
  EXPECT_EQ(sparse.gaps, (std::vector<uint32_t>{2, 3, 3, 1, 1}));
  EXPECT_EQ(sparse.codebook_values.size(), 2u);  // ascending bit patterns: 1.5 (0x3fc00000), -2 (0xc0000000)
  EXPECT_EQ(sparse.values, (std::vector<uint32_t>{0, 2, 2, 1, 0}));
  EXPECT_TRUE(torch::equal(dense_weight(sparse), hand_tensor()));

  // Wide enough indices need no filler: gaps {2, 7, 1}, 2 symbols -> 1 bit per value.
  auto wide = weight_storage(hand_tensor(), 3);
  EXPECT_EQ(wide.filler, 0);
  EXPECT_EQ(wide.value_bits, 1);
  EXPECT_EQ(wide.bits(), 3 * 3 + 3 * 1 + 64);
}

TEST(DeepCompression, HandComputedRawFloats) {
  // With a codebook of at most one value the two distinct values are stored as raw floats.
  auto s = weight_storage(hand_tensor(), 2, /*max_codebook=*/1);
  EXPECT_FALSE(s.codebook);
  EXPECT_EQ(s.codebook_size, 0);
  EXPECT_EQ(s.value_bits, 32);
  EXPECT_EQ(s.entries, 5);
  EXPECT_EQ(s.bits(), 5 * 2 + 5 * 32);
  EXPECT_EQ(s.huffman_bits(), 60 + 5 * 32);
  auto sparse = sparse_weight(hand_tensor(), 2, 1);
  EXPECT_FALSE(sparse.codebook);
  EXPECT_TRUE(torch::equal(dense_weight(sparse), hand_tensor()));

  // A dense layer of continuous values: every gap is 1 (a one-symbol code: 1 bit each).
  auto dense = torch::randn({20, 30}) + 10.0;
  auto d = weight_storage(dense, 5);
  EXPECT_FALSE(d.codebook);
  EXPECT_EQ(d.entries, 600);
  EXPECT_EQ(d.filler, 0);
  EXPECT_EQ(d.bits(), 600 * (5 + 32));
  EXPECT_EQ(d.huffman_index_bits, 600 + 32 + 2 * 5);

  // Zeros only: nothing stored; negative zeros are zeros.
  auto zeros = -torch::zeros({4, 4});
  auto z = weight_storage(zeros, 5);
  EXPECT_EQ(z.entries, 0);
  EXPECT_EQ(z.huffman_bits(), 0);
  auto back = dense_weight(sparse_weight(zeros, 5));
  EXPECT_TRUE(torch::equal(back, zeros));
}

TEST(DeepCompression, MatchesSlowReferenceOnRandomSparseTensors) {
  int trial = 0;
  for (double density : {0.002, 0.05, 0.3, 1.0})
    for (int levels : {0, 3, 16})
      for (int bits : {1, 3, 5, 8}) {
        ++trial;
        auto w = random_weights({37, 29}, density, levels, static_cast<uint64_t>(trial));
        const auto what = "density " + std::to_string(density) + " levels " + std::to_string(levels) + " bits " +
                          std::to_string(bits);
        expect_same(weight_storage(w, bits), slow_storage(w, bits, 256), what);
        expect_same(weight_storage(w, bits, 4), slow_storage(w, bits, 4), what + " max_codebook 4");
        auto sparse = sparse_weight(w, bits);
        EXPECT_TRUE(torch::equal(dense_weight(sparse), w)) << what;
      }
}

TEST(DeepCompression, LayersUseConvAndFcIndexBitsAndCountBiases) {
  nn::Conv2d conv(nn::Conv2dOptions(3, 4, 3));
  nn::Linear fc(nn::LinearOptions(10, 6));
  auto c = layer_storage(*conv, "conv");
  EXPECT_EQ(c.weight, "weight");
  EXPECT_EQ(c.coded.index_bits, 8);
  EXPECT_EQ(c.other_parameters, 4);
  EXPECT_EQ(c.parameters, 4 * 27 + 4);
  EXPECT_EQ(c.bits(), c.coded.bits() + 4 * 32);
  auto f = layer_storage(*fc, "fc", DeepCompressionOptions{8, 3});
  EXPECT_EQ(f.coded.index_bits, 3);
  EXPECT_EQ(f.coded.entries, 60);
  EXPECT_EQ(f.huffman_bits(), f.coded.huffman_bits() + 6 * 32);
  torch::nn::BatchNorm2d bn(4);
  auto b = layer_storage(*bn, "bn");
  EXPECT_TRUE(b.weight.empty());  // 1-d scale: stored raw
  EXPECT_EQ(b.bits(), 8 * 32);
  EXPECT_THROW(layer_storage(*fc, "fc", DeepCompressionOptions{8, 17}), c10::Error);
}

TEST(DeepCompression, ModelStorageAndSummaryOfAPrunedSharedLeNet300) {
  auto model = std::make_shared<LeNet300Impl>(LeNet300Impl::Options{}, DataInfo{{1, 28, 28}, 10});
  {
    torch::NoGradGuard g;
    for (auto* layer : {&model->fc1, &model->fc2, &model->fc3}) {
      auto& w = (*layer)->weight;
      w.copy_(random_weights(w.sizes().vec(), 0.08, 16, 11));  // ~8% kept, <= 32 shared values
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto summary = summarize(model, {1, 28, 28});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 1.0) << "summary must stay cheap (it runs at the end of every training)";
  std::cout << "LeNet-300 summary with Deep Compression accounting: " << seconds * 1000 << " ms\n";

  auto storage = model_storage(*model);
  ASSERT_EQ(storage.layers.size(), 3u);
  EXPECT_EQ(storage.parameters, 266610);
  int64_t bits = 0, huffman = 0;
  for (size_t i = 0; i < 3; ++i) {
    const auto& l = storage.layers[i];
    EXPECT_EQ(l.coded.index_bits, 5);
    EXPECT_TRUE(l.coded.codebook);
    EXPECT_GT(l.coded.filler, 0);  // 5-bit gaps at 8% density overflow now and then
    EXPECT_EQ(summary.layers[i].deep_compression.bits(), l.bits());
    EXPECT_EQ(summary.layers[i].deep_compression.huffman_bits(), l.huffman_bits());
    bits += l.bits();
    huffman += l.huffman_bits();
  }
  EXPECT_EQ(storage.bits, bits);
  EXPECT_EQ(summary.deep_compression_bits, bits);
  EXPECT_EQ(summary.huffman_bits, huffman);
  EXPECT_DOUBLE_EQ(storage.rate(), 266610.0 * 32 / double(bits));
  EXPECT_DOUBLE_EQ(summary.huffman_rate(), 266610.0 * 32 / double(huffman));
  EXPECT_GT(storage.rate(), 25.0);
  EXPECT_GT(storage.huffman_rate(), storage.rate());
  std::cout << "8% weights, 5-bit shared: " << storage.rate() << "x, with Huffman " << storage.huffman_rate() << "x\n";

  auto dense_model = std::make_shared<LeNet300Impl>(LeNet300Impl::Options{}, DataInfo{{1, 28, 28}, 10});
  auto dense = summarize(dense_model, {1, 28, 28});
  EXPECT_FALSE(dense.layers[0].deep_compression.coded.codebook);
  EXPECT_LT(dense.deep_compression_rate(), 1.0);  // dense weights pay for their indices
  auto cmp = compare(dense, summary);
  EXPECT_DOUBLE_EQ(cmp.deep_compression_rate, 266610.0 * 32 / double(bits));
  EXPECT_DOUBLE_EQ(cmp.huffman_rate, 266610.0 * 32 / double(huffman));

  auto table = summary_table(summary, cmp);
  EXPECT_NE(table.find("Huffman bits"), std::string::npos) << table;
  EXPECT_NE(table.find("Deep Compression storage"), std::string::npos) << table;
  EXPECT_NE(table.find(std::to_string(summary.layers[0].deep_compression.huffman_bits())), std::string::npos);
  auto j = nlohmann::json::parse(summary_json(summary, cmp));
  EXPECT_EQ(j["layers"][0]["deep_compression"]["index_bits"], 5);
  EXPECT_EQ(j["layers"][0]["deep_compression"]["bits"].get<int64_t>(), storage.layers[0].bits());
  EXPECT_EQ(j["total"]["huffman_bits"].get<int64_t>(), huffman);
  EXPECT_DOUBLE_EQ(j["comparison"]["huffman_rate"].get<double>(), cmp.huffman_rate);
  EXPECT_EQ(j["deep_compression_options"]["conv_index_bits"], 8);
}
