#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shrink/core/error.h"
#include "shrink/data/idx.h"
#include "test_util.h"

namespace {

using shrink::test::TempDir;

std::string idx_bytes(std::vector<uint32_t> dims, const std::vector<uint8_t>& data, uint8_t type = 0x08) {
  std::string out;
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(dims.size()));
  for (uint32_t d : dims) {
    out.push_back(static_cast<char>(d >> 24));
    out.push_back(static_cast<char>(d >> 16));
    out.push_back(static_cast<char>(d >> 8));
    out.push_back(static_cast<char>(d));
  }
  out.append(data.begin(), data.end());
  return out;
}

// Compresses with the gzip tool (the test binaries do not link zlib themselves).
void write_gz(const std::string& path, const std::string& bytes) {
  const std::string plain = path + ".plain";
  shrink::test::write_file(plain, bytes);
  auto r = shrink::test::run_command("gzip -c -n '" + plain + "' > '" + path + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  std::filesystem::remove(plain);
}

std::string error_of(const std::string& path) {
  try {
    shrink::read_idx(path);
  } catch (const shrink::UserError& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 37 + 5) % 256);
  return v;
}

void expect_values(const torch::Tensor& t, const std::vector<int64_t>& dims, const std::vector<uint8_t>& data) {
  ASSERT_EQ(t.scalar_type(), torch::kUInt8);
  ASSERT_EQ(t.sizes().vec(), dims);
  ASSERT_TRUE(t.is_contiguous());
  const uint8_t* p = t.data_ptr<uint8_t>();
  for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(p[i], data[i]) << "at " << i;
}

TEST(Idx, ReadsRawImages) {
  TempDir dir;
  auto data = iota_bytes(3 * 4 * 5);
  auto path = dir.file("images-idx3-ubyte");
  shrink::test::write_file(path, idx_bytes({3, 4, 5}, data));
  expect_values(shrink::read_idx(path), {3, 4, 5}, data);
}

TEST(Idx, ReadsRawLabels) {
  TempDir dir;
  std::vector<uint8_t> data{7, 0, 9, 3, 3};
  auto path = dir.file("labels-idx1-ubyte");
  shrink::test::write_file(path, idx_bytes({5}, data));
  auto t = shrink::read_idx(path);
  expect_values(t, {5}, data);
  EXPECT_EQ(t[2].item<int64_t>(), 9);
}

TEST(Idx, ReadsGzipByMagicNotName) {
  TempDir dir;
  auto data = iota_bytes(2 * 3 * 7);
  auto gz = dir.file("images-idx3-ubyte.gz");
  write_gz(gz, idx_bytes({2, 3, 7}, data));
  expect_values(shrink::read_idx(gz), {2, 3, 7}, data);
  // gzip content under a plain name is still decompressed
  auto hidden = dir.file("plain-name");
  write_gz(hidden, idx_bytes({2, 3, 7}, data));
  expect_values(shrink::read_idx(hidden), {2, 3, 7}, data);
}

TEST(Idx, EmptyDimension) {
  TempDir dir;
  auto path = dir.file("empty");
  shrink::test::write_file(path, idx_bytes({0, 28, 28}, {}));
  EXPECT_EQ(shrink::read_idx(path).sizes().vec(), (std::vector<int64_t>{0, 28, 28}));
}

TEST(Idx, MissingFile) {
  TempDir dir;
  auto path = dir.file("nope-idx1-ubyte");
  EXPECT_EQ(error_of(path), "cannot open IDX file '" + path + "': No such file or directory");
}

TEST(Idx, WrongMagic) {
  TempDir dir;
  auto path = dir.file("text");
  shrink::test::write_file(path, "hello world, not IDX");
  EXPECT_EQ(error_of(path), "'" + path +
                                "' is not an IDX file (magic 0x68656c6c; expected 0x00000801 or 0x00000803 "
                                "for unsigned bytes)");
  auto short_path = dir.file("short");
  shrink::test::write_file(short_path, "ab");
  EXPECT_EQ(error_of(short_path), "'" + short_path +
                                      "' is not an IDX file (only 2 bytes; expected 0x00000801 or 0x00000803 "
                                      "for unsigned bytes)");
}

TEST(Idx, OtherDataTypeIsRefused) {
  TempDir dir;
  auto path = dir.file("floats");
  shrink::test::write_file(path, idx_bytes({2}, {0, 0, 0, 0, 0, 0, 0, 0}, 0x0D));
  EXPECT_EQ(error_of(path), "'" + path +
                                "' holds IDX data of type float (magic 0x00000d01); only unsigned bytes "
                                "(type 0x08) are supported");
}

TEST(Idx, TruncatedData) {
  TempDir dir;
  auto data = iota_bytes(10 * 4 * 4);
  auto bytes = idx_bytes({10, 4, 4}, data);
  bytes.resize(bytes.size() - 7);
  auto path = dir.file("cut-idx3-ubyte");
  shrink::test::write_file(path, bytes);
  EXPECT_EQ(error_of(path), "'" + path + "' is truncated: header says 160 bytes of data, found 153");
  auto gz = dir.file("cut-idx3-ubyte.gz");
  write_gz(gz, bytes);
  EXPECT_EQ(error_of(gz), "'" + gz + "' is truncated: header says 160 bytes of data, found 153");
}

TEST(Idx, TruncatedGzipStream) {
  TempDir dir;
  auto data = iota_bytes(1000);
  auto full = dir.file("full.gz");
  write_gz(full, idx_bytes({1000}, data));
  auto bytes = shrink::test::read_file(full);
  auto cut = dir.file("cut.gz");
  shrink::test::write_file(cut, bytes.substr(0, bytes.size() / 2));
  std::string msg = error_of(cut);
  EXPECT_NE(msg.find("'" + cut + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST(Idx, TruncatedHeader) {
  TempDir dir;
  auto path = dir.file("cut-header");
  auto bytes = idx_bytes({60000, 28, 28}, {});
  shrink::test::write_file(path, bytes.substr(0, 9));
  EXPECT_EQ(error_of(path), "'" + path + "' is truncated: header says 3 dimensions, found 5 of their 12 bytes");
}

TEST(Idx, ResolvePrefersRawThenGz) {
  TempDir dir;
  shrink::test::write_file(dir.file("a-idx1-ubyte.gz"), "x");
  EXPECT_EQ(shrink::resolve_idx(dir.path().string(), "a-idx1-ubyte"), dir.file("a-idx1-ubyte.gz"));
  shrink::test::write_file(dir.file("a-idx1-ubyte"), "x");
  EXPECT_EQ(shrink::resolve_idx(dir.path().string(), "a-idx1-ubyte"), dir.file("a-idx1-ubyte"));
  try {
    shrink::resolve_idx(dir.path().string(), "b-idx1-ubyte");
    FAIL() << "expected UserError";
  } catch (const shrink::UserError& e) {
    EXPECT_EQ(std::string(e.what()), "cannot find IDX file '" + dir.file("b-idx1-ubyte") + "' (nor '" +
                                         dir.file("b-idx1-ubyte.gz") + "')");
  }
}

TEST(Idx, RealFashionMnist) {
  const auto dir = shrink::test::fashion_mnist_dir();
  auto labels = shrink::read_idx(shrink::resolve_idx(dir, "train-labels-idx1-ubyte"));
  ASSERT_EQ(labels.sizes().vec(), (std::vector<int64_t>{60000}));
  EXPECT_EQ(labels.min().item<int64_t>(), 0);
  EXPECT_EQ(labels.max().item<int64_t>(), 9);
  auto counts = torch::bincount(labels.to(torch::kInt64));
  ASSERT_EQ(counts.numel(), 10);
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 6000) << "class " << c;

  auto images = shrink::read_idx(shrink::resolve_idx(dir, "t10k-images-idx3-ubyte"));
  EXPECT_EQ(images.sizes().vec(), (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_GT(images.max().item<int64_t>(), 200);
}

TEST(Idx, RealFashionMnistGzipMatchesRaw) {
  const std::string gz = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  if (!std::filesystem::exists(gz)) GTEST_SKIP() << gz << " not present";
  auto from_gz = shrink::read_idx(gz);
  auto raw = shrink::read_idx(shrink::test::fashion_mnist_dir() + "/t10k-labels-idx1-ubyte");
  EXPECT_TRUE(torch::equal(from_gz, raw));
}

}  // namespace
