#include "shrink/data/convert.h"

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "shrink/data/cifar.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kChunk = 256;  // examples fetched per get_batch call

void write_bytes(const fs::path& path, const void* data, size_t size) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file) throw UserError(fmt::format("cannot create '{}': {}", path.string(), std::strerror(errno)));
  if (size > 0 && std::fwrite(data, 1, size, file.get()) != size)
    throw UserError(fmt::format("cannot write '{}': {}", path.string(), std::strerror(errno)));
  if (std::fclose(file.release()) != 0)
    throw UserError(fmt::format("cannot write '{}': {}", path.string(), std::strerror(errno)));
}

/// Writes `size` bytes to `path` through `path.tmp` and a rename.
void write_atomic(const fs::path& path, const void* data, size_t size) {
  const fs::path tmp = path.string() + ".tmp";
  write_bytes(tmp, data, size);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw UserError(fmt::format("cannot rename '{}' to '{}': {}", tmp.string(), path.string(), ec.message()));
}

void write_text_atomic(const fs::path& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  write_atomic(path, text.data(), text.size());
}

/// Creates `out_dir`; refuses one that is not empty unless `overwrite`.
void prepare_out_dir(const std::string& out_dir, bool overwrite) {
  std::error_code ec;
  if (out_dir.empty()) throw UserError("no output folder given");
  if (fs::exists(out_dir, ec)) {
    if (!fs::is_directory(out_dir, ec))
      throw UserError(fmt::format("output '{}' exists and is not a folder", out_dir));
    if (!overwrite && !fs::is_empty(out_dir, ec))
      throw UserError(fmt::format("output folder '{}' is not empty; choose an empty or new folder, or set "
                                  "overwrite",
                                  out_dir));
  }
  fs::create_directories(out_dir, ec);
  if (ec) throw UserError(fmt::format("cannot create output folder '{}': {}", out_dir, ec.message()));
}

int64_t digits(int64_t v) {
  int64_t d = 1;
  while (v >= 10) {
    v /= 10;
    ++d;
  }
  return d;
}

/// Class names for the names files: the dataset's, or the label numbers.
std::vector<std::string> names_or_numbers(const Dataset& ds, int64_t num_classes) {
  auto names = ds.class_names();
  if (static_cast<int64_t>(names.size()) == num_classes) return names;
  names.clear();
  for (int64_t i = 0; i < num_classes; ++i) names.push_back(std::to_string(i));
  return names;
}

int64_t checked_num_classes(const Dataset& train, const Dataset& test, int64_t limit) {
  const int64_t k = train.num_classes();
  if (k < 1) throw UserError("the training split has no classes");
  if (test.size() > 0 && test.num_classes() != k)
    throw UserError(fmt::format("the training split has {} classes but the test split {}", k, test.num_classes()));
  if (k > limit) throw UserError(fmt::format("{} classes do not fit this format (at most {})", k, limit));
  return k;
}

/// Calls fn(first_index, images [B, C, H, W] float, labels [B] int64) over examples
/// [begin, end) of `ds`, in order: get_batch chunks when the sizes are fixed, else one by one.
template <class Fn>
void for_each_chunk(const Dataset& ds, int64_t begin, int64_t end, const std::string& split,
                    const ConvertProgress& progress, int64_t& done, int64_t total, Fn&& fn) {
  const bool fixed = !ds.sample_shape().empty();
  for (int64_t start = begin; start < end;) {
    const int64_t stop = fixed ? std::min(end, start + kChunk) : start + 1;
    Batch batch;
    if (fixed) {
      std::vector<int64_t> indices(stop - start);
      for (int64_t i = start; i < stop; ++i) indices[i - start] = i;
      batch = ds.get_batch(indices);
    } else {
      auto example = ds.get(start);
      batch = {example.image.unsqueeze(0), torch::tensor({example.label}, torch::kInt64)};
    }
    fn(start, batch.inputs, batch.targets.to(torch::kInt64).contiguous());
    done += stop - start;
    if (progress && (fixed || done % kChunk == 0 || done == total)) progress(split, done, total);
    start = stop;
  }
}

/// round(x * 255) (half to even, as torch::round) clamped to [0, 255], as contiguous uint8. A plain
/// loop: one pass, no temporaries and no thread-pool round trip per batch.
torch::Tensor quantize(const torch::Tensor& images) {
  auto x = images.to(torch::kFloat32).contiguous();
  auto out = torch::empty(x.sizes(), torch::kUInt8);
  const float* src = x.data_ptr<float>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) {
    const float v = std::nearbyint(src[i] * 255.0f);
    dst[i] = static_cast<uint8_t>(!(v > 0) ? 0 : v > 255 ? 255 : v);  // NaN -> 0
  }
  return out;
}

/// [B, C, H, W] float in [0, 1] -> uint8 [B, C, h, w] with h, w <= 32 (resized when larger and
/// `resize`), contiguous.
torch::Tensor cifar_pixels(const torch::Tensor& images, bool resize) {
  if (images.dim() != 4)
    throw UserError(fmt::format("expected images [C, H, W], got {} dimensions", images.dim() - 1));
  const int64_t b = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  if (c != 1 && c != 3)
    throw UserError(fmt::format("images have {} channels; CIFAR needs 1 (grey, replicated) or 3 (RGB)", c));
  if (h <= 32 && w <= 32) return quantize(images);
  if (!resize)
    throw UserError(fmt::format("images of {}x{} are larger than CIFAR's 32x32; set resize to shrink them", h, w));
  auto x = images.to(torch::kFloat32);
  std::vector<torch::Tensor> resized;
  for (int64_t i = 0; i < b; ++i) {
    auto hwc = x[i].permute({1, 2, 0}).contiguous();
    cv::Mat src(static_cast<int>(h), static_cast<int>(w), CV_32FC(static_cast<int>(c)), hwc.data_ptr<float>());
    cv::Mat dst;
    cv::resize(src, dst, cv::Size(32, 32), 0, 0, cv::INTER_AREA);
    if (!dst.isContinuous()) dst = dst.clone();
    resized.push_back(torch::from_blob(dst.data, {32, 32, c}, torch::kFloat32).permute({2, 0, 1}).clone());
  }
  return quantize(torch::stack(resized));
}

/// Writes image i of `q` (from cifar_pixels) at dst + i * stride as CIFAR's 3 planes of 32x32:
/// grey replicated, centred, the margins zero.
void pack_cifar(const torch::Tensor& q, uint8_t* dst, int64_t stride) {
  const int64_t b = q.size(0), c = q.size(1), h = q.size(2), w = q.size(3);
  const int64_t top = (32 - h) / 2, left = (32 - w) / 2;
  const uint8_t* src = q.data_ptr<uint8_t>();
  for (int64_t i = 0; i < b; ++i) {
    uint8_t* image = dst + i * stride;
    if (h < 32 || w < 32) std::memset(image, 0, kCifarImageBytes);
    for (int64_t plane = 0; plane < 3; ++plane) {
      const uint8_t* from = src + (i * c + (c == 1 ? 0 : plane)) * h * w;
      for (int64_t y = 0; y < h; ++y) std::memcpy(image + (plane * 32 + top + y) * 32 + left, from + y * w, w);
    }
  }
}

std::string sanitize(const std::string& name) {
  std::string out;
  for (unsigned char ch : name) out += (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.') ? char(ch) : '_';
  return out;
}

void check_labels(const torch::Tensor& labels, int64_t num_classes, const std::string& split, int64_t first) {
  const int64_t* l = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.size(0); ++i)
    if (l[i] < 0 || l[i] >= num_classes)
      throw UserError(fmt::format("{} example {} has label {}, outside 0..{}", split, first + i, l[i], num_classes - 1));
}

}  // namespace

OptionSchema<CifarWriteOptions> CifarWriteOptions::schema() {
  using O = CifarWriteOptions;
  OptionSchema<O> s;
  s.add("layout", &O::layout,
        "cifar10: data_batch_1..5.bin + test_batch.bin + batches.meta.txt; cifar100: train.bin + test.bin "
        "(coarse, fine labels) + fine/coarse_label_names.txt.")
      .choices({"cifar10", "cifar100"});
  s.add("resize", &O::resize, "Resize images larger than 32x32 to 32x32 (else they are an error).");
  s.add("overwrite", &O::overwrite, "Write into a folder that is not empty.");
  return s;
}

OptionSchema<ImageFolderWriteOptions> ImageFolderWriteOptions::schema() {
  using O = ImageFolderWriteOptions;
  OptionSchema<O> s;
  s.add("format", &O::format, "Image file format: jpeg (.JPEG) or png (.png, lossless).").choices({"jpeg", "png"});
  s.add("quality", &O::quality, "JPEG quality.").range(1, 100);
  s.add("channels", &O::channels, "0: keep the dataset's channels (grey stays grey), 1: grey, 3: RGB.").range(0, 3);
  s.add("train_dir", &O::train_dir, "Sub-folder for the training split.");
  s.add("test_dir", &O::test_dir, "Sub-folder for the test split.");
  s.add("overwrite", &O::overwrite,
        "Write into a folder that is not empty (its train_dir and test_dir sub-folders are deleted first).");
  return s;
}

torch::Tensor to_cifar_image(const torch::Tensor& image, bool resize) {
  if (image.dim() != 3) throw UserError(fmt::format("expected an image [C, H, W], got {} dimensions", image.dim()));
  auto out = torch::empty({3, 32, 32}, torch::kUInt8);
  pack_cifar(cifar_pixels(image.unsqueeze(0), resize), out.data_ptr<uint8_t>(), kCifarImageBytes);
  return out;
}

ConvertSummary write_cifar_binary(const Dataset& train, const Dataset& test, const std::string& out_dir,
                                  const CifarWriteOptions& options) {
  if (options.layout != "cifar10" && options.layout != "cifar100")
    throw UserError(fmt::format("CIFAR layout must be cifar10 or cifar100 (got '{}')", options.layout));
  const bool cifar100 = options.layout == "cifar100";
  const int64_t k = checked_num_classes(train, test, 256);
  const auto names = names_or_numbers(train, k);

  // Coarse labels (cifar100): the given mapping or the fine label itself.
  std::vector<int64_t> coarse_of_fine = options.coarse_of_fine;
  std::vector<std::string> coarse_names = options.coarse_names;
  if (coarse_of_fine.empty()) {
    for (int64_t i = 0; i < k; ++i) coarse_of_fine.push_back(i);
    if (coarse_names.empty()) coarse_names = names;
  } else if (static_cast<int64_t>(coarse_of_fine.size()) != k) {
    throw UserError(fmt::format("coarse_of_fine has {} entries but there are {} classes", coarse_of_fine.size(), k));
  }
  const int64_t coarse_classes =
      coarse_names.empty() ? *std::max_element(coarse_of_fine.begin(), coarse_of_fine.end()) + 1
                           : static_cast<int64_t>(coarse_names.size());
  for (int64_t c : coarse_of_fine)
    if (c < 0 || c >= coarse_classes || c > 255)
      throw UserError(fmt::format("coarse label {} is outside 0..{}", c, std::min<int64_t>(coarse_classes, 256) - 1));
  if (coarse_names.empty())
    for (int64_t i = 0; i < coarse_classes; ++i) coarse_names.push_back(std::to_string(i));

  prepare_out_dir(out_dir, options.overwrite);
  const fs::path out(out_dir);
  const int64_t label_bytes = cifar100 ? 2 : 1;
  const int64_t record = label_bytes + kCifarImageBytes;
  ConvertSummary summary;
  summary.num_classes = k;

  auto write_records = [&](const Dataset& ds, const std::string& split, const std::vector<std::string>& files) {
    const int64_t n = ds.size();
    int64_t done = 0;
    for (size_t f = 0; f < files.size(); ++f) {
      const int64_t begin = n * static_cast<int64_t>(f) / static_cast<int64_t>(files.size());
      const int64_t end = n * static_cast<int64_t>(f + 1) / static_cast<int64_t>(files.size());
      std::vector<uint8_t> bytes(static_cast<size_t>((end - begin) * record));
      for_each_chunk(ds, begin, end, split, options.progress, done, n,
                     [&](int64_t first, const torch::Tensor& images, const torch::Tensor& labels) {
                       check_labels(labels, k, split, first);
                       torch::Tensor pixels;
                       try {
                         pixels = cifar_pixels(images, options.resize);
                       } catch (const UserError& e) {
                         throw UserError(fmt::format("{} example {}: {}", split, first, e.what()));
                       }
                       uint8_t* dst = bytes.data() + (first - begin) * record;
                       pack_cifar(pixels, dst + label_bytes, record);
                       const int64_t* l = labels.data_ptr<int64_t>();
                       for (int64_t i = 0; i < labels.size(0); ++i) {
                         if (cifar100) {
                           dst[i * record] = static_cast<uint8_t>(coarse_of_fine[l[i]]);
                           dst[i * record + 1] = static_cast<uint8_t>(l[i]);
                         } else {
                           dst[i * record] = static_cast<uint8_t>(l[i]);
                         }
                       }
                     });
      write_atomic(out / files[f], bytes.data(), bytes.size());
      summary.files.push_back((out / files[f]).string());
    }
    return n;
  };

  if (cifar100) {
    summary.train = write_records(train, "train", {"train.bin"});
    summary.test = write_records(test, "test", {"test.bin"});
    write_text_atomic(out / "fine_label_names.txt", names);
    write_text_atomic(out / "coarse_label_names.txt", coarse_names);
    summary.files.push_back((out / "fine_label_names.txt").string());
    summary.files.push_back((out / "coarse_label_names.txt").string());
  } else {
    summary.train = write_records(
        train, "train",
        {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"});
    summary.test = write_records(test, "test", {"test_batch.bin"});
    write_text_atomic(out / "batches.meta.txt", names);
    summary.files.push_back((out / "batches.meta.txt").string());
  }
  return summary;
}

std::string class_folder_name(int64_t label, int64_t num_classes, const std::string& name) {
  auto folder = fmt::format("{:0{}d}", label, digits(std::max<int64_t>(num_classes - 1, 0)));
  if (!name.empty()) folder += "_" + sanitize(name);
  return folder;
}

ConvertSummary write_image_folder(const Dataset& train, const Dataset& test, const std::string& out_dir,
                                  const ImageFolderWriteOptions& options) {
  if (options.format != "jpeg" && options.format != "png")
    throw UserError(fmt::format("image format must be jpeg or png (got '{}')", options.format));
  if (options.channels != 0 && options.channels != 1 && options.channels != 3)
    throw UserError(fmt::format("channels must be 0 (keep), 1 or 3 (got {})", options.channels));
  if (options.quality < 1 || options.quality > 100)
    throw UserError(fmt::format("JPEG quality must be in 1..100 (got {})", options.quality));
  if (options.train_dir.empty() || options.test_dir.empty() || options.train_dir == options.test_dir)
    throw UserError("train_dir and test_dir must be two different non-empty names");
  const int64_t k = checked_num_classes(train, test, INT64_MAX);
  auto names = train.class_names();
  if (static_cast<int64_t>(names.size()) != k) names.assign(k, "");
  std::vector<std::string> folders;
  for (int64_t i = 0; i < k; ++i) folders.push_back(class_folder_name(i, k, names[i]));

  prepare_out_dir(out_dir, options.overwrite);
  const fs::path out(out_dir);
  // Each split is written into `<sub>.tmp` and renamed when complete (one rename, rather than one
  // per image file).
  auto staging = [&](const std::string& sub) { return out / (sub + ".tmp"); };
  for (const auto& sub : {options.train_dir, options.test_dir}) {
    std::error_code ec;
    if (options.overwrite) fs::remove_all(out / sub, ec);
    fs::remove_all(staging(sub), ec);
  }
  const bool jpeg = options.format == "jpeg";
  const std::string ext = jpeg ? ".JPEG" : ".png";
  const std::vector<int> params =
      jpeg ? std::vector<int>{cv::IMWRITE_JPEG_QUALITY, static_cast<int>(options.quality)} : std::vector<int>{};
  ConvertSummary summary;
  summary.num_classes = k;

  auto write_split = [&](const Dataset& ds, const std::string& split, const fs::path& root) {
    const int64_t n = ds.size();
    const int64_t width = digits(std::max<int64_t>(n - 1, 0));
    std::vector<bool> created(k, false);
    std::vector<int64_t> per_class(k, 0);
    int64_t done = 0;
    std::vector<uchar> encoded;
    for_each_chunk(ds, 0, n, split, options.progress, done, n,
                   [&](int64_t first, const torch::Tensor& images, const torch::Tensor& labels) {
                     check_labels(labels, k, split, first);
                     if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3))
                       throw UserError(fmt::format("{} example {}: images must be [1 or 3, H, W], got {}", split,
                                                   first, fmt::join(images.sizes().slice(1), "x")));
                     auto q = quantize(images);  // [B, C, H, W]
                     const int64_t c = q.size(1);
                     const int h = static_cast<int>(q.size(2)), w = static_cast<int>(q.size(3));
                     const int64_t target = options.channels == 0 ? c : options.channels;
                     for (int64_t i = 0; i < q.size(0); ++i) {
                       const int64_t label = labels.data_ptr<int64_t>()[i];
                       uint8_t* planes = q.data_ptr<uint8_t>() + i * c * h * w;
                       cv::Mat image;  // OpenCV's channel order: BGR
                       if (c == 3) {
                         const int64_t hw = static_cast<int64_t>(h) * w;
                         std::vector<cv::Mat> bgr = {cv::Mat(h, w, CV_8UC1, planes + 2 * hw),
                                                     cv::Mat(h, w, CV_8UC1, planes + hw),
                                                     cv::Mat(h, w, CV_8UC1, planes)};
                         cv::merge(bgr, image);
                         if (target == 1) cv::cvtColor(image, image, cv::COLOR_BGR2GRAY);
                       } else {
                         image = cv::Mat(h, w, CV_8UC1, planes);
                         if (target == 3) cv::cvtColor(image, image, cv::COLOR_GRAY2BGR);
                       }
                       if (!cv::imencode(ext, image, encoded, params))
                         throw UserError(fmt::format("cannot encode {} example {} as {}", split, first + i, ext));
                       const fs::path dir = root / folders[label];
                       if (!created[label]) {
                         std::error_code ec;
                         fs::create_directories(dir, ec);
                         if (ec) throw UserError(fmt::format("cannot create '{}': {}", dir.string(), ec.message()));
                         created[label] = true;
                       }
                       write_bytes(dir / (fmt::format("{:0{}d}", first + i, width) + ext), encoded.data(),
                                   encoded.size());
                       ++per_class[label];
                     }
                   });
    return per_class;
  };
  auto publish = [&](const std::string& sub) {
    std::error_code ec;
    fs::rename(staging(sub), out / sub, ec);
    if (ec)
      throw UserError(fmt::format("cannot rename '{}' to '{}': {}", staging(sub).string(), (out / sub).string(),
                                  ec.message()));
  };

  const auto train_counts = write_split(train, "train", staging(options.train_dir));
  std::vector<std::string> missing;
  for (int64_t i = 0; i < k; ++i)
    if (train_counts[i] == 0) missing.push_back(folders[i]);
  if (!missing.empty()) {
    std::error_code ec;
    fs::remove_all(staging(options.train_dir), ec);
    throw UserError(fmt::format("the training split has no examples of class{} {}: the image_folder reader takes "
                                "the classes from the training folders and would renumber the labels",
                                missing.size() == 1 ? "" : "es", fmt::join(missing, ", ")));
  }
  publish(options.train_dir);
  summary.train = train.size();
  if (test.size() > 0) {
    write_split(test, "test", staging(options.test_dir));
    publish(options.test_dir);
  }
  summary.test = test.size();
  for (const auto& folder : folders) summary.files.push_back((out / options.train_dir / folder).string());
  return summary;
}

}  // namespace shrink
