#pragma once
// Canonical Huffman codes over small integer alphabets (codebook indices, index gaps), as
// Deep Compression (Han et al. 2016) codes its weight indices and relative positions.
//
// A code is described by its code lengths alone (canonical codes: symbols sorted by (length,
// symbol) get consecutive code words), so a stored table is one length per symbol.
//
//   auto code = HuffmanCode::from_frequencies({5, 0, 1, 1});   // symbol 1 never occurs
//   auto bits = huffman_encode(code, {0, 0, 2, 3, 0});
//   auto back = huffman_decode(code, bits, 5);                 // {0, 0, 2, 3, 0}
#include <cstdint>
#include <vector>

namespace shrink::sharing {

/// A packed bit sequence, most significant bit of each byte first.
struct BitStream {
  std::vector<uint8_t> bytes;
  uint64_t bits = 0;  ///< valid bits (the last byte is zero-padded)
};

/// Appends bit fields to a BitStream.
class BitWriter {
 public:
  /// Writes the low `count` bits of `value`, most significant first (count <= 57).
  void write(uint64_t value, int count);
  /// Pads the last byte with zeros and returns the stream.
  BitStream finish();

 private:
  BitStream out_;
  uint64_t acc_ = 0;  ///< pending bits, right-aligned
  int pending_ = 0;
};

/// Reads bit fields from a BitStream; reading past its end throws (c10::Error).
class BitReader {
 public:
  explicit BitReader(const BitStream& stream) : stream_(stream) {}
  uint32_t bit();
  uint64_t read(int count);
  uint64_t position() const { return pos_; }

 private:
  const BitStream& stream_;
  uint64_t pos_ = 0;
};

/// A canonical prefix code over the symbols 0 .. size() - 1.
struct HuffmanCode {
  /// Longest code word built by default. With 5 bits per stored length this keeps tables small;
  /// streams whose optimal code is deeper (very skewed counts over >= 2^24 symbols) lose a
  /// fraction of a bit per rare symbol.
  static constexpr int kMaxLength = 24;
  /// Bits used to store one code length in a table (lengths 0 .. 31).
  static constexpr int kLengthBits = 5;

  std::vector<uint8_t> lengths;  ///< per symbol; 0: the symbol has no code (never occurs)
  std::vector<uint32_t> codes;   ///< per symbol, the code word in its low `lengths[s]` bits

  /// Optimal code for the frequencies (zero-frequency symbols get no code; a single occurring
  /// symbol gets the one-bit code "0"), with lengths limited to `max_length` (<= 31, and
  /// 2^max_length >= the number of occurring symbols).
  static HuffmanCode from_frequencies(const std::vector<uint64_t>& frequencies, int max_length = kMaxLength);
  /// The canonical code with these lengths. TORCH_CHECKs that they satisfy Kraft's inequality.
  static HuffmanCode from_lengths(std::vector<uint8_t> lengths);

  size_t size() const { return lengths.size(); }
  int max_length() const;
  /// Bits of a stream with these symbol counts: sum frequencies[s] * lengths[s]
  /// (TORCH_CHECKs that every counted symbol has a code).
  uint64_t coded_bits(const std::vector<uint64_t>& frequencies) const;
  /// Bits to store the table: a 32-bit count n (symbols up to the last one with a code), then
  /// n lengths of kLengthBits bits. 0 for a code with no symbols.
  uint64_t table_bits() const;
  /// Number of symbols written by write_table (last symbol with a code + 1).
  size_t table_symbols() const;
};

/// Encodes `count` symbols. TORCH_CHECKs that each has a code.
BitStream huffman_encode(const HuffmanCode& code, const uint32_t* symbols, size_t count);
BitStream huffman_encode(const HuffmanCode& code, const std::vector<uint32_t>& symbols);

/// Decodes `count` symbols; throws (c10::Error) on a stream that is not a valid coding.
std::vector<uint32_t> huffman_decode(const HuffmanCode& code, const BitStream& stream, size_t count);

/// Writes / reads a code table in the layout counted by table_bits().
void write_table(BitWriter& out, const HuffmanCode& code);
HuffmanCode read_table(BitReader& in);

}  // namespace shrink::sharing
