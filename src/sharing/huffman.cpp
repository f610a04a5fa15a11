#include "shrink/sharing/huffman.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <queue>
#include <utility>

namespace shrink::sharing {

// --- bits -------------------------------------------------------------------------------------

void BitWriter::write(uint64_t value, int count) {
  TORCH_CHECK(count >= 0 && count <= 57, "BitWriter::write: count ", count, " out of [0, 57]");
  if (count == 0) return;
  acc_ = (acc_ << count) | (value & ((uint64_t(1) << count) - 1));
  pending_ += count;
  out_.bits += static_cast<uint64_t>(count);
  while (pending_ >= 8) {
    pending_ -= 8;
    out_.bytes.push_back(static_cast<uint8_t>((acc_ >> pending_) & 0xff));
  }
}

BitStream BitWriter::finish() {
  if (pending_ > 0) {
    out_.bytes.push_back(static_cast<uint8_t>((acc_ << (8 - pending_)) & 0xff));
    pending_ = 0;
  }
  acc_ = 0;
  BitStream result = std::move(out_);
  out_ = BitStream{};
  return result;
}

uint32_t BitReader::bit() {
  TORCH_CHECK(pos_ < stream_.bits, "bit stream ends after ", stream_.bits, " bits");
  const uint32_t b = (stream_.bytes[pos_ >> 3] >> (7 - (pos_ & 7))) & 1u;
  ++pos_;
  return b;
}

uint64_t BitReader::read(int count) {
  TORCH_CHECK(count >= 0 && count <= 64, "BitReader::read: count ", count, " out of [0, 64]");
  TORCH_CHECK(pos_ + static_cast<uint64_t>(count) <= stream_.bits, "bit stream ends after ", stream_.bits,
              " bits (reading ", count, " bits at ", pos_, ")");
  uint64_t value = 0;
  while (count > 0) {
    const int offset = static_cast<int>(pos_ & 7);
    const int take = std::min(8 - offset, count);
    const uint32_t byte = stream_.bytes[pos_ >> 3];
    value = (value << take) | ((byte >> (8 - offset - take)) & ((1u << take) - 1));
    pos_ += static_cast<uint64_t>(take);
    count -= take;
  }
  return value;
}

// --- codes ------------------------------------------------------------------------------------

namespace {

/// Huffman code lengths (unlimited) of the symbols with nonzero frequency.
std::vector<int> optimal_lengths(const std::vector<uint64_t>& freq, const std::vector<uint32_t>& used) {
  const size_t m = used.size();
  std::vector<int> parent(2 * m - 1, -1);
  using Item = std::pair<uint64_t, int>;  // (weight, node); ties go to the older node
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  for (size_t i = 0; i < m; ++i) heap.push({freq[used[i]], static_cast<int>(i)});
  int next = static_cast<int>(m);
  while (heap.size() > 1) {
    auto a = heap.top();
    heap.pop();
    auto b = heap.top();
    heap.pop();
    parent[a.second] = parent[b.second] = next;
    heap.push({a.first + b.first, next});
    ++next;
  }
  // Parents are created after their children: walk internal nodes from the root down.
  std::vector<int> depth(2 * m - 1, 0);
  for (int n = next - 2; n >= 0; --n) depth[n] = depth[parent[n]] + 1;
  return {depth.begin(), depth.begin() + static_cast<std::ptrdiff_t>(m)};
}

/// Clamps lengths to `limit` and then lengthens the deepest codes still below the limit
/// (rarest first) until Kraft's inequality holds again. Near-optimal and simple; only very
/// skewed distributions ever need it.
void limit_lengths(std::vector<int>& lengths, const std::vector<uint64_t>& weights, int limit) {
  const uint64_t capacity = uint64_t(1) << limit;
  uint64_t kraft = 0;
  std::vector<std::vector<size_t>> bucket(limit + 1);  // symbols by length, rarest last
  for (size_t i = 0; i < lengths.size(); ++i) {
    lengths[i] = std::min(lengths[i], limit);
    kraft += uint64_t(1) << (limit - lengths[i]);
    bucket[lengths[i]].push_back(i);
  }
  for (auto& b : bucket)
    std::sort(b.begin(), b.end(), [&](size_t x, size_t y) { return weights[x] > weights[y] || (weights[x] == weights[y] && x < y); });
  while (kraft > capacity) {
    int l = limit - 1;
    while (l > 0 && bucket[l].empty()) --l;
    TORCH_CHECK(l > 0, "Huffman length limit ", limit, " is too small for ", lengths.size(), " symbols");
    const size_t s = bucket[l].back();
    bucket[l].pop_back();
    kraft -= uint64_t(1) << (limit - l - 1);
    lengths[s] = l + 1;
    bucket[l + 1].push_back(s);  // order within a bucket no longer matters much
  }
}

}  // namespace

HuffmanCode HuffmanCode::from_frequencies(const std::vector<uint64_t>& frequencies, int max_length) {
  TORCH_CHECK(max_length >= 1 && max_length <= 31, "Huffman max_length ", max_length, " out of [1, 31]");
  std::vector<uint32_t> used;
  for (size_t s = 0; s < frequencies.size(); ++s)
    if (frequencies[s] > 0) used.push_back(static_cast<uint32_t>(s));
  std::vector<uint8_t> lengths(frequencies.size(), 0);
  if (used.size() == 1) {
    lengths[used[0]] = 1;
  } else if (used.size() > 1) {
    TORCH_CHECK(used.size() <= (uint64_t(1) << max_length), used.size(), " symbols do not fit codes of at most ",
                max_length, " bits");
    auto l = optimal_lengths(frequencies, used);
    if (*std::max_element(l.begin(), l.end()) > max_length) {
      std::vector<uint64_t> w(used.size());
      for (size_t i = 0; i < used.size(); ++i) w[i] = frequencies[used[i]];
      limit_lengths(l, w, max_length);
    }
    for (size_t i = 0; i < used.size(); ++i) lengths[used[i]] = static_cast<uint8_t>(l[i]);
  }
  return from_lengths(std::move(lengths));
}

HuffmanCode HuffmanCode::from_lengths(std::vector<uint8_t> lengths) {
  HuffmanCode code;
  int max_len = 0;
  for (auto l : lengths) {
    TORCH_CHECK(l <= 31, "Huffman code length ", int(l), " above 31");
    max_len = std::max(max_len, int(l));
  }
  std::vector<uint64_t> count(max_len + 2, 0);
  for (auto l : lengths)
    if (l) ++count[l];
  uint64_t kraft = 0;  // in units of 2^-max_len
  for (int l = 1; l <= max_len; ++l) kraft += count[l] << (max_len - l);
  TORCH_CHECK(kraft <= (uint64_t(1) << max_len), "Huffman code lengths violate Kraft's inequality");
  // Canonical assignment (RFC 1951, 3.2.2).
  std::vector<uint64_t> next(max_len + 2, 0);
  uint64_t c = 0;
  for (int l = 1; l <= max_len; ++l) {
    c = (c + count[l - 1]) << 1;
    next[l] = c;
  }
  code.codes.assign(lengths.size(), 0);
  for (size_t s = 0; s < lengths.size(); ++s)
    if (lengths[s]) code.codes[s] = static_cast<uint32_t>(next[lengths[s]]++);
  code.lengths = std::move(lengths);
  return code;
}

int HuffmanCode::max_length() const {
  int m = 0;
  for (auto l : lengths) m = std::max(m, int(l));
  return m;
}

uint64_t HuffmanCode::coded_bits(const std::vector<uint64_t>& frequencies) const {
  TORCH_CHECK(frequencies.size() <= lengths.size(), "coded_bits: ", frequencies.size(),
              " frequencies for a code of ", lengths.size(), " symbols");
  uint64_t bits = 0;
  for (size_t s = 0; s < frequencies.size(); ++s) {
    if (!frequencies[s]) continue;
    TORCH_CHECK(lengths[s] > 0, "coded_bits: symbol ", s, " occurs but has no code");
    bits += frequencies[s] * lengths[s];
  }
  return bits;
}

size_t HuffmanCode::table_symbols() const {
  size_t n = lengths.size();
  while (n > 0 && lengths[n - 1] == 0) --n;
  return n;
}

uint64_t HuffmanCode::table_bits() const {
  const size_t n = table_symbols();
  return n ? 32 + uint64_t(n) * kLengthBits : 0;
}

BitStream huffman_encode(const HuffmanCode& code, const uint32_t* symbols, size_t count) {
  BitWriter out;
  const size_t n = code.size();
  for (size_t i = 0; i < count; ++i) {
    const uint32_t s = symbols[i];
    TORCH_CHECK(s < n && code.lengths[s] > 0, "huffman_encode: symbol ", s, " has no code");
    out.write(code.codes[s], code.lengths[s]);
  }
  return out.finish();
}

BitStream huffman_encode(const HuffmanCode& code, const std::vector<uint32_t>& symbols) {
  return huffman_encode(code, symbols.data(), symbols.size());
}

std::vector<uint32_t> huffman_decode(const HuffmanCode& code, const BitStream& stream, size_t count) {
  const int max_len = code.max_length();
  // Canonical decoding: code words of length l are first[l] .. first[l] + number[l] - 1, and
  // belong to the symbols sorted by (length, symbol) from offset[l] on.
  std::vector<uint64_t> number(max_len + 1, 0), first(max_len + 1, 0), offset(max_len + 1, 0);
  for (auto l : code.lengths)
    if (l) ++number[l];
  std::vector<uint32_t> sorted;
  sorted.reserve(code.size());
  for (int l = 1; l <= max_len; ++l) {
    offset[l] = sorted.size();
    for (size_t s = 0; s < code.size(); ++s)
      if (code.lengths[s] == l) sorted.push_back(static_cast<uint32_t>(s));
    if (number[l]) first[l] = code.codes[sorted[offset[l]]];
  }
  std::vector<uint32_t> out;
  out.reserve(count);
  BitReader in(stream);
  for (size_t i = 0; i < count; ++i) {
    uint64_t c = 0;
    int l = 0;
    while (true) {
      c = (c << 1) | in.bit();
      ++l;
      TORCH_CHECK(l <= max_len, "huffman_decode: invalid code word at symbol ", i);
      if (number[l] && c >= first[l] && c - first[l] < number[l]) {
        out.push_back(sorted[offset[l] + (c - first[l])]);
        break;
      }
    }
  }
  return out;
}

void write_table(BitWriter& out, const HuffmanCode& code) {
  const size_t n = code.table_symbols();
  if (n == 0) {
    out.write(0, 32);  // an empty code still needs its count in a file
    return;
  }
  out.write(n, 32);
  for (size_t s = 0; s < n; ++s) out.write(code.lengths[s], HuffmanCode::kLengthBits);
}

HuffmanCode read_table(BitReader& in) {
  const uint64_t n = in.read(32);
  TORCH_CHECK(n <= (uint64_t(1) << 24), "Huffman table of ", n, " symbols is too large");
  std::vector<uint8_t> lengths(n);
  for (uint64_t s = 0; s < n; ++s) lengths[s] = static_cast<uint8_t>(in.read(HuffmanCode::kLengthBits));
  return HuffmanCode::from_lengths(std::move(lengths));
}

}  // namespace shrink::sharing
