#include "shrink/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "shrink/core/error.h"

namespace shrink {
namespace {

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

const char* idx_type_name(int type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    default: return nullptr;
  }
}

/// A byte source: a raw file (stdio) or a gzip stream (zlib).
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw UserError("cannot open IDX file '" + path + "': " + std::strerror(errno));
    unsigned char magic[2] = {0, 0};
    size_t n = std::fread(magic, 1, 2, f);
    gzip_ = n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (!gzip_) {
      std::rewind(f);
      file_ = f;
      return;
    }
    std::fclose(f);
    gz_ = gzopen(path.c_str(), "rb");
    if (!gz_) throw UserError("cannot open IDX file '" + path + "': " + std::strerror(errno));
    gzbuffer(gz_, 1 << 17);
  }
  ~Reader() {
    if (file_) std::fclose(file_);
    if (gz_) gzclose(gz_);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  /// Reads up to `size` bytes; returns how many were read (fewer only at the end of the data).
  size_t read(void* out, size_t size) {
    auto* dst = static_cast<unsigned char*>(out);
    size_t total = 0;
    while (total < size) {
      size_t want = std::min<size_t>(size - total, INT_MAX / 2);
      size_t got;
      if (gzip_) {
        int r = gzread(gz_, dst + total, static_cast<unsigned>(want));
        if (r < 0) fail_gz();
        got = static_cast<size_t>(r);
      } else {
        got = std::fread(dst + total, 1, want, file_);
        if (got < want && std::ferror(file_))
          throw UserError("cannot read IDX file '" + path_ + "': " + std::strerror(errno));
      }
      total += got;
      if (got < want) break;
    }
    if (gzip_ && total < size) {
      // A cut-off gzip stream ends early with an error ("unexpected end of file"): it is
      // reported as truncated data by the caller, like a cut-off raw file.
      int errnum = Z_OK;
      gzerror(gz_, &errnum);
      if (errnum != Z_OK && errnum != Z_BUF_ERROR) fail_gz();
    }
    return total;
  }

 private:
  [[noreturn]] void fail_gz() {
    int errnum = Z_OK;
    const char* msg = gzerror(gz_, &errnum);
    if (errnum == Z_ERRNO) msg = std::strerror(errno);
    throw UserError("cannot decompress IDX file '" + path_ + "': " + (msg ? msg : "gzip error"));
  }

  std::string path_;
  bool gzip_ = false;
  FILE* file_ = nullptr;
  gzFile gz_ = nullptr;
};

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  Reader reader(path);
  unsigned char magic[4] = {0, 0, 0, 0};
  size_t got = reader.read(magic, 4);
  uint32_t magic_value = (uint32_t(magic[0]) << 24) | (uint32_t(magic[1]) << 16) |
                         (uint32_t(magic[2]) << 8) | uint32_t(magic[3]);
  const std::string expected = "expected 0x00000801 or 0x00000803 for unsigned bytes";
  if (got < 4)
    throw UserError("'" + path + "' is not an IDX file (only " + std::to_string(got) +
                    " bytes; " + expected + ")");
  int type = magic[2];
  int ndims = magic[3];
  if (magic[0] != 0 || magic[1] != 0 || idx_type_name(type) == nullptr || ndims == 0)
    throw UserError("'" + path + "' is not an IDX file (magic " + hex32(magic_value) + "; " +
                    expected + ")");
  if (type != 0x08)
    throw UserError("'" + path + "' holds IDX data of type " + idx_type_name(type) + " (magic " +
                    hex32(magic_value) + "); only unsigned bytes (type 0x08) are supported");

  std::vector<unsigned char> header(4 * static_cast<size_t>(ndims));
  got = reader.read(header.data(), header.size());
  if (got < header.size())
    throw UserError("'" + path + "' is truncated: header says " + std::to_string(ndims) +
                    " dimensions, found " + std::to_string(got) + " of their " +
                    std::to_string(header.size()) + " bytes");
  std::vector<int64_t> dims(ndims);
  int64_t count = 1;
  for (int i = 0; i < ndims; ++i) {
    const unsigned char* b = &header[4 * i];
    uint32_t d = (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
    if (d > uint32_t(INT32_MAX))
      throw UserError("'" + path + "' is not an IDX file (dimension " + std::to_string(i) +
                      " is " + std::to_string(d) + ")");
    dims[i] = static_cast<int64_t>(d);
    if (dims[i] != 0 && count > (int64_t(1) << 40) / dims[i])
      throw UserError("'" + path + "' is not an IDX file (dimensions too large)");
    count *= dims[i];
  }

  auto data = torch::empty(dims, torch::kUInt8);
  got = reader.read(data.data_ptr<uint8_t>(), static_cast<size_t>(count));
  if (static_cast<int64_t>(got) < count)
    throw UserError("'" + path + "' is truncated: header says " + std::to_string(count) +
                    " bytes of data, found " + std::to_string(got));
  return data;
}

std::string resolve_idx(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  fs::path plain = fs::path(dir) / stem;
  fs::path gz = fs::path(dir) / (stem + ".gz");
  std::error_code ec;
  if (fs::is_regular_file(plain, ec)) return plain.string();
  if (fs::is_regular_file(gz, ec)) return gz.string();
  throw UserError("cannot find IDX file '" + plain.string() + "' (nor '" + gz.string() + "')");
}

}  // namespace shrink
