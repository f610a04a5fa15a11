#include "shrink/core/binary_file.h"

#include <c10/util/Exception.h>
#include <zlib.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "shrink/core/error.h"

namespace shrink {

void ByteWriter::u32(uint32_t v) {
  for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
}

void ByteWriter::u64(uint64_t v) {
  for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
}

void ByteWriter::f64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  u64(bits);
}

void ByteWriter::str(const std::string& s) {
  u64(s.size());
  out_ += s;
}

void ByteWriter::header(std::string_view magic, uint32_t version, uint32_t flags) {
  bytes(magic.data(), magic.size());
  u32(version);
  u32(flags);
}

ByteReader ByteReader::from_file(std::string kind, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read " + kind + " '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ByteReader(std::move(kind), path, ss.str());
}

void ByteReader::fail(const std::string& what) const { throw UserError(kind_ + " '" + path_ + "': " + what); }

void ByteReader::need(uint64_t n) const {
  if (data_.size() - pos_ < n)
    fail("truncated (needs " + std::to_string(n) + " more bytes at byte " + std::to_string(pos_) + ")");
}

uint32_t ByteReader::u32() {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(u8()) << (8 * i);
  return v;
}

uint64_t ByteReader::u64() {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(u8()) << (8 * i);
  return v;
}

double ByteReader::f64() {
  const uint64_t bits = u64();
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

const char* ByteReader::take(uint64_t n) {
  need(n);
  const char* p = data_.data() + pos_;
  pos_ += n;
  return p;
}

std::string ByteReader::bytes(uint64_t n) {
  const char* p = take(n);
  return std::string(p, n);
}

std::vector<int64_t> ByteReader::shape(const std::string& what, uint8_t max_ndim, int64_t max_dim) {
  const uint8_t ndim = u8();
  if (ndim > max_ndim) fail(what + " has " + std::to_string(ndim) + " dimensions");
  std::vector<int64_t> dims;
  for (int i = 0; i < ndim; ++i) {
    const auto d = static_cast<int64_t>(u64());
    if (d < 0 || d > max_dim) fail(what + " has a bad dimension");
    dims.push_back(d);
  }
  return dims;
}

uint32_t ByteReader::header(std::string_view magic, uint32_t version, const std::string& bad_magic) {
  const auto found = bytes(magic.size());
  if (found != magic) fail(bad_magic);
  const uint32_t v = u32();
  if (v != version)
    fail("format version " + std::to_string(v) + " is not supported (this build reads " + std::to_string(version) +
         ")");
  return u32();
}

bool file_starts_with(const std::string& path, std::string_view magic) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string found(magic.size(), '\0');
  if (!in.read(&found[0], static_cast<std::streamsize>(found.size()))) return false;
  return found == magic;
}

std::string zlib_compress(const std::string& raw) {
  if (raw.empty()) return raw;
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string out(8 + size, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t(raw.size()) >> (8 * i)) & 0xff);
  const int rc = compress2(reinterpret_cast<Bytef*>(&out[8]), &size, reinterpret_cast<const Bytef*>(raw.data()),
                           static_cast<uLong>(raw.size()), 9);
  TORCH_CHECK(rc == Z_OK, "zlib compress2 failed (", rc, ")");
  out.resize(8 + size);
  return out;
}

std::string zlib_uncompress(const std::string& packed, const ByteReader& reader, const std::string& what) {
  if (packed.empty()) return packed;
  if (packed.size() < 8) reader.fail("truncated " + what);
  uint64_t size = 0;
  for (int i = 0; i < 8; ++i) size |= uint64_t(static_cast<uint8_t>(packed[i])) << (8 * i);
  // A corrupt size must not become a huge allocation.
  if (size > (uint64_t(1) << 36)) reader.fail("corrupt " + what + " size");
  std::string out(size, '\0');
  uLongf out_size = static_cast<uLongf>(size);
  const int rc = uncompress(reinterpret_cast<Bytef*>(&out[0]), &out_size,
                            reinterpret_cast<const Bytef*>(packed.data() + 8), static_cast<uLong>(packed.size() - 8));
  if (rc != Z_OK || out_size != size) reader.fail("corrupt " + what + " (zlib error " + std::to_string(rc) + ")");
  return out;
}

}  // namespace shrink
