// Canonical Huffman codes: round trips, prefix property, optimal lengths against a slow
// reference, canonical code words, the length limit and table storage.
#include <gtest/gtest.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <random>
#include <string>

#include "shrink/sharing/huffman.h"

using namespace shrink::sharing;

namespace {

std::vector<uint64_t> counts_of(const std::vector<uint32_t>& symbols, size_t alphabet) {
  std::vector<uint64_t> c(alphabet, 0);
  for (auto s : symbols) ++c[s];
  return c;
}

/// Slow reference: optimal code lengths by repeatedly merging the two lightest groups.
std::vector<int> reference_lengths(const std::vector<uint64_t>& freq) {
  std::vector<int> len(freq.size(), 0);
  struct Group {
    uint64_t weight;
    std::vector<size_t> members;
  };
  std::vector<Group> groups;
  for (size_t s = 0; s < freq.size(); ++s)
    if (freq[s]) groups.push_back({freq[s], {s}});
  if (groups.size() == 1) len[groups[0].members[0]] = 1;
  while (groups.size() > 1) {
    std::sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) { return a.weight < b.weight; });
    Group merged{groups[0].weight + groups[1].weight, {}};
    for (int g = 0; g < 2; ++g)
      for (auto s : groups[g].members) {
        ++len[s];
        merged.members.push_back(s);
      }
    groups.erase(groups.begin(), groups.begin() + 2);
    groups.push_back(std::move(merged));
  }
  return len;
}

uint64_t cost(const std::vector<uint64_t>& freq, const std::vector<int>& len) {
  uint64_t c = 0;
  for (size_t s = 0; s < freq.size(); ++s) c += freq[s] * static_cast<uint64_t>(len[s]);
  return c;
}

std::string word(const HuffmanCode& code, size_t s) {
  std::string w;
  for (int i = code.lengths[s] - 1; i >= 0; --i) w += ((code.codes[s] >> i) & 1) ? '1' : '0';
  return w;
}

void expect_round_trip(const std::vector<uint32_t>& symbols, size_t alphabet) {
  const auto freq = counts_of(symbols, alphabet);
  const auto code = HuffmanCode::from_frequencies(freq);
  const auto stream = huffman_encode(code, symbols);
  EXPECT_EQ(stream.bits, code.coded_bits(freq));
  EXPECT_EQ(stream.bytes.size(), (stream.bits + 7) / 8);
  EXPECT_EQ(huffman_decode(code, stream, symbols.size()), symbols);
}

}  // namespace

TEST(Huffman, RoundTripUniformAndSkewedStreams) {
  std::mt19937 rng(1);
  std::vector<uint32_t> uniform(5000);
  std::uniform_int_distribution<uint32_t> u(0, 99);
  for (auto& s : uniform) s = u(rng);
  expect_round_trip(uniform, 100);

  std::vector<uint32_t> skewed(20000);
  std::geometric_distribution<uint32_t> g(0.3);
  for (auto& s : skewed) s = std::min<uint32_t>(g(rng), 255);
  expect_round_trip(skewed, 256);
  const auto freq = counts_of(skewed, 256);
  const auto code = HuffmanCode::from_frequencies(freq);
  EXPECT_LT(code.coded_bits(freq), skewed.size() * 8 / 2) << "a skewed stream codes in far fewer than 8 bits/symbol";
  EXPECT_LT(code.lengths[0], code.lengths[10]);
}

TEST(Huffman, OneSymbolAndEmptyCodes) {
  std::vector<uint64_t> freq{0, 0, 7, 0};
  auto code = HuffmanCode::from_frequencies(freq);
  EXPECT_EQ(code.lengths, (std::vector<uint8_t>{0, 0, 1, 0}));
  std::vector<uint32_t> symbols(7, 2);
  auto stream = huffman_encode(code, symbols);
  EXPECT_EQ(stream.bits, 7u);
  EXPECT_EQ(huffman_decode(code, stream, 7), symbols);
  EXPECT_EQ(code.table_symbols(), 3u);
  EXPECT_EQ(code.table_bits(), 32u + 3u * 5u);

  auto empty = HuffmanCode::from_frequencies({0, 0, 0});
  EXPECT_EQ(empty.max_length(), 0);
  EXPECT_EQ(empty.table_bits(), 0u);
  EXPECT_EQ(huffman_encode(empty, std::vector<uint32_t>{}).bits, 0u);
  EXPECT_TRUE(huffman_decode(empty, BitStream{}, 0).empty());
  EXPECT_THROW(huffman_encode(empty, std::vector<uint32_t>{1}), c10::Error);
  EXPECT_THROW(huffman_encode(code, std::vector<uint32_t>{0}), c10::Error);  // zero-frequency symbol
}

TEST(Huffman, CodeIsPrefixFree) {
  std::mt19937 rng(2);
  std::vector<uint64_t> freq(300);
  std::uniform_int_distribution<uint64_t> u(0, 1000);
  for (auto& f : freq) f = u(rng) < 200 ? 0 : u(rng) * u(rng);
  auto code = HuffmanCode::from_frequencies(freq);
  std::vector<std::string> words;
  for (size_t s = 0; s < freq.size(); ++s) {
    EXPECT_EQ(code.lengths[s] > 0, freq[s] > 0) << s;
    if (code.lengths[s]) words.push_back(word(code, s));
  }
  for (size_t i = 0; i < words.size(); ++i)
    for (size_t j = 0; j < words.size(); ++j)
      if (i != j) EXPECT_NE(words[j].rfind(words[i], 0), 0u) << words[i] << " is a prefix of " << words[j];
}

TEST(Huffman, OptimalLengthsAndCanonicalWordsAgainstSlowReference) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint64_t> freq(2 + trial * 7);
    std::uniform_int_distribution<uint64_t> u(0, 50);
    for (auto& f : freq) f = u(rng) < 10 ? 0 : u(rng) * (trial % 3 == 0 ? u(rng) : 1);
    auto code = HuffmanCode::from_frequencies(freq);
    std::vector<int> len(code.lengths.begin(), code.lengths.end());
    // Ties may give other lengths, never another cost.
    EXPECT_EQ(cost(freq, len), cost(freq, reference_lengths(freq))) << "trial " << trial;

    // Canonical words: sorted by (length, symbol), each word is the previous plus one, shifted
    // left to its length; the first is all zeros.
    std::vector<size_t> order;
    for (size_t s = 0; s < freq.size(); ++s)
      if (code.lengths[s]) order.push_back(s);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return code.lengths[a] < code.lengths[b]; });
    uint64_t expected = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      if (i > 0) expected = (expected + 1) << (code.lengths[order[i]] - code.lengths[order[i - 1]]);
      EXPECT_EQ(code.codes[order[i]], expected) << "trial " << trial << " symbol " << order[i];
    }
    // The code is rebuilt from its lengths alone.
    auto rebuilt = HuffmanCode::from_lengths(code.lengths);
    EXPECT_EQ(rebuilt.codes, code.codes);
  }
}

TEST(Huffman, LengthLimitKeepsAValidCode) {
  // Fibonacci counts make the optimal code 29 bits deep.
  std::vector<uint64_t> freq(30);
  freq[0] = freq[1] = 1;
  for (size_t i = 2; i < freq.size(); ++i) freq[i] = freq[i - 1] + freq[i - 2];
  auto optimal = HuffmanCode::from_frequencies(freq, 31);
  EXPECT_EQ(optimal.max_length(), 29);
  auto limited = HuffmanCode::from_frequencies(freq, 8);
  EXPECT_EQ(limited.max_length(), 8);
  double kraft = 0;
  for (auto l : limited.lengths) kraft += l ? std::ldexp(1.0, -l) : 0.0;
  EXPECT_LE(kraft, 1.0);
  EXPECT_GE(limited.coded_bits(freq), optimal.coded_bits(freq));
  std::vector<uint32_t> symbols;
  for (uint32_t s = 0; s < 30; ++s) symbols.insert(symbols.end(), std::min<uint64_t>(freq[s], 50), s);
  std::shuffle(symbols.begin(), symbols.end(), std::mt19937(4));
  EXPECT_EQ(huffman_decode(limited, huffman_encode(limited, symbols), symbols.size()), symbols);
  EXPECT_THROW(HuffmanCode::from_frequencies(freq, 4), c10::Error);  // 30 symbols need 5 bits
}

TEST(Huffman, TableRoundTripAndBitFields) {
  std::vector<uint64_t> freq{3, 0, 9, 1, 1, 0, 0};
  auto code = HuffmanCode::from_frequencies(freq);
  BitWriter w;
  write_table(w, code);
  auto table = w.finish();
  EXPECT_EQ(table.bits, code.table_bits());
  BitReader r(table);
  auto back = read_table(r);
  EXPECT_EQ(back.table_symbols(), 5u);
  for (size_t s = 0; s < 5; ++s) EXPECT_EQ(back.lengths[s], code.lengths[s]);

  BitWriter fields;
  fields.write(0b101, 3);
  fields.write(0xdeadbeef, 32);
  fields.write(1, 1);
  auto stream = fields.finish();
  EXPECT_EQ(stream.bits, 36u);
  BitReader in(stream);
  EXPECT_EQ(in.read(3), 0b101u);
  EXPECT_EQ(in.read(32), 0xdeadbeefu);
  EXPECT_EQ(in.bit(), 1u);
  EXPECT_THROW(in.bit(), c10::Error);  // past the end

  // A stream cut short does not decode.
  std::vector<uint32_t> symbols{0, 2, 3, 4, 2, 2};
  auto coded = huffman_encode(code, symbols);
  coded.bits -= 1;
  EXPECT_THROW(huffman_decode(code, coded, symbols.size()), c10::Error);
}
