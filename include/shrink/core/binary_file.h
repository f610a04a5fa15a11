#pragma once
// Little-endian binary files built in memory: the Deep Compression file ("SHRINKDC",
// sharing/compressed_model.cpp) and the int8 model file ("SHRINKQ8", quant/int8_model.cpp).
// Reads are bounds-checked and fail with a UserError naming the file, so a truncated or corrupt
// file is a user's mistake, not a crash. Internal to libshrink; no torch here (tensor bytes are
// the callers' business).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shrink {

/// Appends little-endian fields to a byte string.
class ByteWriter {
 public:
  void bytes(const void* data, size_t n) { out_.append(static_cast<const char*>(data), n); }
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v);
  void u64(uint64_t v);
  void f64(double v);  ///< the IEEE-754 bits as a u64
  void str(const std::string& s);  ///< u64 byte count + bytes
  /// u8 ndim + u64 dims; `sizes` is any range of int64_t (at::IntArrayRef, std::vector).
  template <class Sizes>
  void shape(const Sizes& sizes) {
    u8(static_cast<uint8_t>(sizes.size()));
    for (auto d : sizes) u64(static_cast<uint64_t>(d));
  }
  /// `magic` (as is), u32 version, u32 flags.
  void header(std::string_view magic, uint32_t version, uint32_t flags);
  std::string& text() { return out_; }

 private:
  std::string out_;
};

/// Reads little-endian fields from a file's bytes. Every error is a UserError
/// "<kind> '<path>': <what>", e.g. "int8 model 'm.q8': truncated (...)".
class ByteReader {
 public:
  /// `kind` names the file type in errors ("int8 model", "compressed model").
  ByteReader(std::string kind, std::string path, std::string data)
      : kind_(std::move(kind)), path_(std::move(path)), data_(std::move(data)) {}
  /// The whole file at `path`; UserError "cannot read <kind> '<path>'" when it does not open.
  static ByteReader from_file(std::string kind, const std::string& path);

  [[noreturn]] void fail(const std::string& what) const;
  /// Fails unless `n` more bytes are left.
  void need(uint64_t n) const;
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint32_t u32();
  uint64_t u64();
  double f64();
  /// The next `n` bytes, checked, in place (valid while the reader lives).
  const char* take(uint64_t n);
  std::string bytes(uint64_t n);
  std::string str() { return bytes(u64()); }  ///< u64 byte count + bytes
  /// u8 ndim + u64 dims. Fails "<what> has N dimensions" above `max_ndim` and "<what> has a
  /// bad dimension" for a dim outside [0, max_dim], as soon as it is read.
  std::vector<int64_t> shape(const std::string& what, uint8_t max_ndim, int64_t max_dim);
  /// Checks `magic`, then the u32 version (must be `version`); returns the u32 flags.
  /// `bad_magic` is the error for another file type, e.g. "not an int8 model file (bad magic)".
  uint32_t header(std::string_view magic, uint32_t version, const std::string& bad_magic);
  uint64_t remaining() const { return data_.size() - pos_; }
  bool at_end() const { return pos_ == data_.size(); }

 private:
  std::string kind_;
  std::string path_;
  std::string data_;
  uint64_t pos_ = 0;
};

/// Whether the file at `path` opens and starts with `magic` (no other check).
bool file_starts_with(const std::string& path, std::string_view magic);

/// u64 uncompressed size + zlib stream (level 9); "" stays "". Small payloads such as torch
/// archives (zip files of stored entries with padding) shrink a lot.
std::string zlib_compress(const std::string& raw);

/// The inverse of zlib_compress. Errors go through `reader.fail` and call the payload `what`
/// ("truncated <what>", "corrupt <what> size", "corrupt <what> (zlib error N)").
std::string zlib_uncompress(const std::string& packed, const ByteReader& reader, const std::string& what);

}  // namespace shrink
