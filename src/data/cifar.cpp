#include "shrink/data/cifar.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "shrink/data/data_errors.h"

namespace shrink {

namespace detail {
// Defined next to their datasets (image_folder.cpp, synthetic.cpp).
void register_image_folder_dataset(Registry<DatasetFactory>& registry);
void register_synthetic_datasets(Registry<DatasetFactory>& registry);
}  // namespace detail

namespace {

namespace fs = std::filesystem;

const char* const kCifarSource =
    "CIFAR binaries come from https://www.cs.toronto.edu/~kriz/cifar.html (the \"binary version\"), "
    "or from `shrink data convert`";

std::vector<std::string> cifar10_classes() {
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

std::string join_path(const std::string& root, const std::string& name) { return (fs::path(root) / name).string(); }

/// Checks the folder and every file before reading, so a missing file is reported at data.root
/// with where CIFAR comes from.
void check_files(const std::string& root, const std::vector<std::string>& paths, const char* dataset,
                 const ConfigNode& data) {
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    fail_at_key(data, "root",
            fmt::format("{} folder '{}' does not exist; {}; set data.root to the folder holding them", dataset,
                        root, kCifarSource));
  for (const auto& path : paths)
    if (!fs::is_regular_file(path, ec))
      fail_at_key(data, "root", fmt::format("{} file '{}' is missing; {}", dataset, path, kCifarSource));
}

/// Class names from `path` when it exists (it must then name exactly `expected` classes
/// unless expected is 0), else `fallback`.
std::vector<std::string> class_names_from(const std::string& path, int64_t expected,
                                          std::vector<std::string> fallback) {
  auto names = read_class_names(path);
  if (names.empty()) return fallback;
  if (expected > 0 && static_cast<int64_t>(names.size()) != expected)
    throw UserError(fmt::format("'{}' names {} classes but the data has {}", path, names.size(), expected));
  return names;
}

DatasetPtr make_cifar_dataset(const std::vector<std::string>& paths, const std::vector<CifarLabel>& labels,
                              int64_t label_index, int64_t num_classes, std::optional<Normalization> normalization,
                              std::vector<std::string> class_names) {
  auto records = read_cifar_binary(paths, labels);
  return std::make_shared<TensorDataset>(records.images, records.labels.select(1, label_index).contiguous(),
                                         num_classes, std::move(normalization), std::move(class_names));
}

std::vector<std::string> cifar10_layout_files(const std::string& root, Split split) {
  if (split != Split::Train) return {join_path(root, "test_batch.bin")};
  std::vector<std::string> paths;
  for (int i = 1; i <= 5; ++i) paths.push_back(join_path(root, fmt::format("data_batch_{}.bin", i)));
  return paths;
}

std::vector<std::string> cifar100_layout_files(const std::string& root, Split split) {
  return {join_path(root, split == Split::Train ? "train.bin" : "test.bin")};
}

}  // namespace

CifarRecords read_cifar_binary(const std::vector<std::string>& paths, const std::vector<CifarLabel>& labels) {
  const int64_t label_bytes = static_cast<int64_t>(labels.size());
  const int64_t record = label_bytes + kCifarImageBytes;
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (const auto& path : paths) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) throw UserError(fmt::format("cannot read CIFAR file '{}': {}; {}", path, ec.message(), kCifarSource));
    if (size % record != 0)
      throw UserError(fmt::format("'{}' has {} bytes, not a multiple of the {}-byte record ({} label byte{} + "
                                  "{} pixels): the file is truncated or not in CIFAR binary format",
                                  path, size, record, label_bytes, label_bytes == 1 ? "" : "s", kCifarImageBytes));
    counts.push_back(static_cast<int64_t>(size) / record);
    total += counts.back();
  }

  auto images = torch::empty({total, kCifarImageBytes}, torch::kUInt8);
  auto all_labels = torch::empty({total, label_bytes}, torch::kInt64);
  int64_t first = 0;
  for (size_t f = 0; f < paths.size(); ++f) {
    const auto& path = paths[f];
    const int64_t n = counts[f];
    // One read per file into a [n, record] buffer.
    auto buffer = torch::empty({n, record}, torch::kUInt8);
    std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) throw UserError(fmt::format("cannot open CIFAR file '{}': {}", path, std::strerror(errno)));
    const size_t want = static_cast<size_t>(n * record);
    if (want > 0 && std::fread(buffer.data_ptr<uint8_t>(), 1, want, file.get()) != want)
      throw UserError(fmt::format("cannot read CIFAR file '{}': it ended before its {} bytes (changed while reading?)",
                                  path, want));
    // One memcpy per record (a strided tensor copy of uint8 is several times slower).
    const uint8_t* src = buffer.data_ptr<uint8_t>();
    uint8_t* image_dst = images.data_ptr<uint8_t>() + first * kCifarImageBytes;
    int64_t* label_dst = all_labels.data_ptr<int64_t>() + first * label_bytes;
    for (int64_t i = 0; i < n; ++i, src += record) {
      for (int64_t k = 0; k < label_bytes; ++k) {
        const int64_t value = src[k], limit = labels[k].num_classes;
        if (limit > 0 && value >= limit)
          throw UserError(fmt::format("'{}' record {}: {} {} is out of range (expected 0..{})", path, i,
                                      labels[k].name, value, limit - 1));
        label_dst[i * label_bytes + k] = value;
      }
      std::memcpy(image_dst + i * kCifarImageBytes, src + label_bytes, kCifarImageBytes);
    }
    first += n;
  }
  return {images.view({total, 3, 32, 32}), all_labels};
}

std::vector<std::string> read_class_names(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> names;
  if (!in) return names;
  std::string line;
  while (std::getline(in, line)) {
    const auto begin = line.find_first_not_of(" \t\r\n");
    if (begin == std::string::npos) continue;
    const auto end = line.find_last_not_of(" \t\r\n");
    names.push_back(line.substr(begin, end - begin + 1));
  }
  return names;
}

OptionSchema<Cifar10Options> Cifar10Options::schema() {
  using O = Cifar10Options;
  OptionSchema<O> s;
  s.add("root", &O::root,
        "Folder with data_batch_1.bin .. data_batch_5.bin and test_batch.bin (CIFAR-10 binary version).");
  s.add("normalize", &O::normalize, "Subtract `mean` and divide by `std` per channel after the transforms.");
  s.add("mean", &O::mean, "Per-channel mean (R, G, B) used by `normalize` (pixels in [0, 1]).");
  s.add("std", &O::std, "Per-channel standard deviation used by `normalize` (> 0).");
  return s;
}

OptionSchema<Cifar100Options> Cifar100Options::schema() {
  using O = Cifar100Options;
  OptionSchema<O> s;
  s.add("root", &O::root, "Folder with train.bin and test.bin (CIFAR-100 binary version).");
  s.add("labels", &O::labels, "Which label to learn: fine (100 classes) or coarse (20 superclasses).")
      .choices({"fine", "coarse"});
  s.add("normalize", &O::normalize, "Subtract `mean` and divide by `std` per channel after the transforms.");
  s.add("mean", &O::mean, "Per-channel mean (R, G, B) used by `normalize` (pixels in [0, 1]).");
  s.add("std", &O::std, "Per-channel standard deviation used by `normalize` (> 0).");
  return s;
}

OptionSchema<CifarFormatOptions> CifarFormatOptions::schema() {
  using O = CifarFormatOptions;
  OptionSchema<O> s;
  s.add("root", &O::root, "Folder with the CIFAR-format files (as written by `shrink data convert`).");
  s.add("layout", &O::layout,
        "cifar10: data_batch_1..5.bin + test_batch.bin, 1 label byte, names in batches.meta.txt; cifar100: "
        "train.bin + test.bin, 2 label bytes (coarse, fine), names in fine_label_names.txt / "
        "coarse_label_names.txt.")
      .choices({"cifar10", "cifar100"});
  s.add("labels", &O::labels, "Layout cifar100: which label byte to learn (fine or coarse).").choices({"fine", "coarse"});
  s.add("num_classes", &O::num_classes, "Number of classes (0 = the number of names in the class-names file).")
      .range(0, 256);
  s.add("normalize", &O::normalize, "Subtract `mean` and divide by `std` per channel after the transforms.");
  s.add("mean", &O::mean, "Per-channel mean used by `normalize` (one value, or one per channel).");
  s.add("std", &O::std, "Per-channel standard deviation used by `normalize` (> 0).");
  return s;
}

DatasetPtr load_cifar10(const Cifar10Options& options, Split split, const ConfigNode& data) {
  auto normalization = make_normalization(options.normalize, options.mean, options.std, 3, data);
  auto paths = cifar10_layout_files(options.root, split);
  check_files(options.root, paths, "CIFAR-10", data);
  auto names = class_names_from(join_path(options.root, "batches.meta.txt"), 10, cifar10_classes());
  return make_cifar_dataset(paths, {{"label", 10}}, 0, 10, std::move(normalization), std::move(names));
}

DatasetPtr load_cifar100(const Cifar100Options& options, Split split, const ConfigNode& data) {
  auto normalization = make_normalization(options.normalize, options.mean, options.std, 3, data);
  auto paths = cifar100_layout_files(options.root, split);
  check_files(options.root, paths, "CIFAR-100", data);
  const bool fine = options.labels != "coarse";
  const int64_t classes = fine ? 100 : 20;
  auto names = class_names_from(join_path(options.root, fine ? "fine_label_names.txt" : "coarse_label_names.txt"),
                                classes, {});
  return make_cifar_dataset(paths, {{"coarse label", 20}, {"fine label", 100}}, fine ? 1 : 0, classes,
                            std::move(normalization), std::move(names));
}

DatasetPtr load_cifar_format(const CifarFormatOptions& options, Split split, const ConfigNode& data) {
  if (options.root.empty()) fail_at_key(data, "root", "cifar_format needs data.root: the folder with the files");
  auto normalization = make_normalization(options.normalize, options.mean, options.std, 3, data);
  const bool cifar100 = options.layout == "cifar100";
  auto paths = cifar100 ? cifar100_layout_files(options.root, split) : cifar10_layout_files(options.root, split);
  check_files(options.root, paths, "CIFAR-format", data);
  const bool fine = options.labels != "coarse";
  const std::string names_path = join_path(
      options.root, !cifar100 ? "batches.meta.txt" : fine ? "fine_label_names.txt" : "coarse_label_names.txt");
  auto names = read_class_names(names_path);
  int64_t classes = options.num_classes;
  if (classes == 0) {
    if (names.empty())
      fail_at_key(data, "num_classes",
              fmt::format("the number of classes is unknown: '{}' is missing or empty; set data.num_classes",
                          names_path));
    classes = static_cast<int64_t>(names.size());
  } else if (!names.empty() && static_cast<int64_t>(names.size()) != classes) {
    fail_at_key(data, "num_classes",
            fmt::format("is {} but '{}' names {} classes", classes, names_path, names.size()));
  }
  std::vector<CifarLabel> labels;
  if (cifar100)
    labels = {{"coarse label", fine ? 0 : classes}, {"fine label", fine ? classes : 0}};
  else
    labels = {{"label", classes}};
  return make_cifar_dataset(paths, labels, cifar100 && fine ? 1 : 0, classes, std::move(normalization),
                            std::move(names));
}

namespace detail {

void register_file_datasets(Registry<DatasetFactory>& registry) {
  registry.add({"cifar10", "CIFAR-10: 32x32 colour images, 10 classes, 50000 train / 10000 test (binary version)",
                [](const ConfigNode& data, Split split) {
                  return load_cifar10(Cifar10Options::schema().parse(data, dataset_common_keys()), split, data);
                },
                Cifar10Options::schema().docs()});
  registry.add({"cifar100",
                "CIFAR-100: 32x32 colour images, 100 classes (or 20 superclasses), 50000 train / 10000 test",
                [](const ConfigNode& data, Split split) {
                  return load_cifar100(Cifar100Options::schema().parse(data, dataset_common_keys()), split, data);
                },
                Cifar100Options::schema().docs()});
  registry.add({"cifar_format", "Any 3x32x32 dataset in CIFAR binary layout (what `shrink data convert` writes)",
                [](const ConfigNode& data, Split split) {
                  return load_cifar_format(CifarFormatOptions::schema().parse(data, dataset_common_keys()), split,
                                           data);
                },
                CifarFormatOptions::schema().docs()});
  register_image_folder_dataset(registry);
  register_synthetic_datasets(registry);
}

}  // namespace detail
}  // namespace shrink
