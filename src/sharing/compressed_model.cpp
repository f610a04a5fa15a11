#include "shrink/sharing/compressed_model.h"

#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <zlib.h>

#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/sharing/huffman.h"
#include "shrink/train/checkpoint.h"

namespace shrink::sharing {
namespace {

constexpr char kMagic[8] = {'S', 'H', 'R', 'I', 'N', 'K', 'D', 'C'};
constexpr uint32_t kVersion = 1;
constexpr uint8_t kRaw = 0, kCoded = 1;
constexpr uint8_t kModeCodebook = 0, kModeRawValues = 1;
constexpr uint32_t kFlagStateZlib = 1;  // method_state is zlib-compressed: u64 size + deflate stream
const std::string kMaskSuffix = "weight_mask";

// --- writing ----------------------------------------------------------------------------------

class Writer {
 public:
  void bytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void str(const std::string& s) {
    u64(s.size());
    out_ += s;
  }
  void bits(const BitStream& b) {
    u64(b.bits);
    bytes(b.bytes.data(), b.bytes.size());
  }
  std::string& text() { return out_; }

 private:
  std::string out_;
};

std::vector<uint64_t> histogram(const std::vector<uint32_t>& symbols, size_t alphabet) {
  std::vector<uint64_t> h(alphabet, 0);
  for (auto s : symbols) ++h[s];
  return h;
}

BitStream table_stream(const HuffmanCode& code) {
  BitWriter w;
  write_table(w, code);
  return w.finish();
}

void write_coded(Writer& w, const SparseWeight& s, bool has_mask) {
  w.u8(static_cast<uint8_t>(s.index_bits));
  w.u8(s.codebook ? kModeCodebook : kModeRawValues);
  w.u8(has_mask ? 1 : 0);
  w.u64(s.gaps.size());
  w.u64(static_cast<uint64_t>(s.filler));
  w.u32(static_cast<uint32_t>(s.codebook_values.size()));
  for (auto v : s.codebook_values) w.u32(v);
  const size_t max_gap = (size_t(1) << s.index_bits) - 1;
  const auto gap_code = HuffmanCode::from_frequencies(histogram(s.gaps, max_gap + 1));
  w.bits(table_stream(gap_code));
  w.bits(huffman_encode(gap_code, s.gaps));
  if (s.codebook) {
    const auto value_code = HuffmanCode::from_frequencies(histogram(s.values, s.codebook_values.size() + 1));
    w.bits(table_stream(value_code));
    w.bits(huffman_encode(value_code, s.values));
  } else {
    BitWriter raw;
    for (auto v : s.values) raw.write(v, 32);
    w.bits(raw.finish());
  }
}

/// u64 size + zlib stream ("" stays ""): torch archives are zip files of stored entries with
/// padding, a few KiB even for a handful of integers.
std::string deflate_bytes(const std::string& raw) {
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

void write_shape(Writer& w, at::IntArrayRef sizes) {
  w.u8(static_cast<uint8_t>(sizes.size()));
  for (auto d : sizes) w.u64(static_cast<uint64_t>(d));
}

/// "a.b.weight" -> "a.b." ("" for a top-level name); the module path with its dot.
std::string prefix_of(const std::string& name) {
  auto dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot + 1);
}
std::string leaf_of(const std::string& name) {
  auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}
bool is_mask_name(const std::string& name) { return leaf_of(name) == kMaskSuffix; }

/// Names and shapes of parameters and buffers, masks left out (they follow the weights).
std::map<std::string, std::vector<int64_t>> tensor_shapes(const torch::nn::Module& model) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : model.named_parameters())
    if (p.value().defined()) shapes[p.key()] = p.value().sizes().vec();
  for (const auto& b : model.named_buffers())
    if (b.value().defined() && !is_mask_name(b.key())) shapes[b.key()] = b.value().sizes().vec();
  return shapes;
}

std::string shape_text(const std::vector<int64_t>& sizes) {
  std::string s;
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "x" : "") + std::to_string(sizes[i]);
  return s.empty() ? "scalar" : s;
}

// --- reading ----------------------------------------------------------------------------------

class Reader {
 public:
  Reader(std::string path, std::string data) : path_(std::move(path)), data_(std::move(data)) {}
  [[noreturn]] void fail(const std::string& what) const {
    throw UserError("compressed model '" + path_ + "': " + what);
  }
  void need(uint64_t n) const {
    if (data_.size() - pos_ < n)
      fail("truncated (needs " + std::to_string(n) + " more bytes at byte " + std::to_string(pos_) + ")");
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(u8()) << (8 * i);
    return v;
  }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(u8()) << (8 * i);
    return v;
  }
  std::string bytes(uint64_t n) {
    need(n);
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string str() { return bytes(u64()); }
  BitStream bits() {
    BitStream b;
    b.bits = u64();
    const uint64_t n = (b.bits + 7) / 8;
    need(n);
    b.bytes.assign(data_.begin() + static_cast<std::ptrdiff_t>(pos_),
                   data_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return b;
  }
  bool at_end() const { return pos_ == data_.size(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string data_;
  uint64_t pos_ = 0;
};

struct Record {
  std::string name;
  std::vector<int64_t> shape;
  bool coded = false;
  bool has_mask = false;
  torch::Tensor tensor;  ///< decoded, CPU
};

struct FileContents {
  std::string recipe;
  std::string method_state;
  std::vector<Record> records;
};

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read compressed model '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint32_t read_header(Reader& r) {
  auto magic = r.bytes(sizeof kMagic);
  if (std::memcmp(magic.data(), kMagic, sizeof kMagic) != 0) r.fail("not a compressed model file (bad magic)");
  const uint32_t version = r.u32();
  if (version != kVersion)
    r.fail("format version " + std::to_string(version) + " is not supported (this build reads " +
           std::to_string(kVersion) + ")");
  const uint32_t flags = r.u32();
  if (flags & ~kFlagStateZlib) r.fail("unknown flags " + std::to_string(flags));
  return flags;
}

std::string inflate_bytes(const Reader& r, const std::string& packed) {
  if (packed.empty()) return packed;
  if (packed.size() < 8) r.fail("truncated method state");
  uint64_t size = 0;
  for (int i = 0; i < 8; ++i) size |= uint64_t(static_cast<uint8_t>(packed[i])) << (8 * i);
  if (size > (uint64_t(1) << 36)) r.fail("corrupt method state size");
  std::string out(size, '\0');
  uLongf out_size = static_cast<uLongf>(size);
  const int rc = uncompress(reinterpret_cast<Bytef*>(&out[0]), &out_size,
                            reinterpret_cast<const Bytef*>(packed.data() + 8), static_cast<uLong>(packed.size() - 8));
  if (rc != Z_OK || out_size != size) r.fail("corrupt method state (zlib error " + std::to_string(rc) + ")");
  return out;
}

Record read_record(Reader& r) {
  Record rec;
  const uint8_t kind = r.u8();
  if (kind != kRaw && kind != kCoded) r.fail("unknown tensor kind " + std::to_string(kind));
  rec.name = r.bytes(r.u32());
  const uint8_t ndim = r.u8();
  int64_t numel = 1;
  for (int i = 0; i < ndim; ++i) {
    const auto d = static_cast<int64_t>(r.u64());
    if (d < 0 || d > (int64_t(1) << 40)) r.fail("tensor '" + rec.name + "' has a bad dimension");
    rec.shape.push_back(d);
    numel *= d;
  }
  if (kind == kRaw) {
    const auto dtype_code = static_cast<int8_t>(r.u8());
    if (dtype_code < 0 || dtype_code >= static_cast<int8_t>(c10::ScalarType::NumOptions))
      r.fail("tensor '" + rec.name + "' has an unknown dtype");
    const auto dtype = static_cast<c10::ScalarType>(dtype_code);
    const auto data = r.str();
    rec.tensor = torch::empty(rec.shape, torch::TensorOptions().dtype(dtype));
    if (data.size() != static_cast<size_t>(rec.tensor.nbytes()))
      r.fail("tensor '" + rec.name + "' holds " + std::to_string(data.size()) + " bytes, expected " +
             std::to_string(rec.tensor.nbytes()));
    if (!data.empty()) std::memcpy(rec.tensor.data_ptr(), data.data(), data.size());
    return rec;
  }
  rec.coded = true;
  SparseWeight s;
  s.shape = rec.shape;
  s.index_bits = r.u8();
  const uint8_t mode = r.u8();
  rec.has_mask = r.u8() != 0;
  const uint64_t entries = r.u64();
  s.filler = static_cast<int64_t>(r.u64());
  const uint32_t k = r.u32();
  if (s.index_bits < 1 || s.index_bits > 16 || mode > kModeRawValues || entries > static_cast<uint64_t>(numel) * 2 + 1 ||
      k > (1u << 24))
    r.fail("tensor '" + rec.name + "' has a corrupt header");
  s.codebook = mode == kModeCodebook;
  for (uint32_t i = 0; i < k; ++i) s.codebook_values.push_back(r.u32());
  try {
    auto gap_table = r.bits();
    BitReader gap_table_in(gap_table);
    const auto gap_code = read_table(gap_table_in);
    s.gaps = huffman_decode(gap_code, r.bits(), entries);
    if (s.codebook) {
      auto value_table = r.bits();
      BitReader value_table_in(value_table);
      const auto value_code = read_table(value_table_in);
      s.values = huffman_decode(value_code, r.bits(), entries);
    } else {
      auto raw = r.bits();
      BitReader in(raw);
      s.values.reserve(entries);
      for (uint64_t i = 0; i < entries; ++i) s.values.push_back(static_cast<uint32_t>(in.read(32)));
    }
    rec.tensor = dense_weight(s);
  } catch (const c10::Error& e) {
    r.fail("tensor '" + rec.name + "' does not decode: " + std::string(e.what_without_backtrace()));
  }
  return rec;
}

FileContents read_contents(const std::string& path, bool recipe_only) {
  Reader r(path, read_whole_file(path));
  const uint32_t flags = read_header(r);
  FileContents c;
  c.recipe = r.str();
  if (recipe_only) return c;
  c.method_state = r.str();
  if (flags & kFlagStateZlib) c.method_state = inflate_bytes(r, c.method_state);
  const uint32_t count = r.u32();
  for (uint32_t i = 0; i < count; ++i) c.records.push_back(read_record(r));
  if (!r.at_end()) r.fail("has trailing bytes after its " + std::to_string(count) + " tensors");
  return c;
}

std::string callback_key(size_t index, const Callback& cb) { return "cb" + std::to_string(index) + "_" + cb.name(); }

std::string archive_bytes(torch::serialize::OutputArchive& archive) {
  std::string out;
  archive.save_to([&out](const void* data, size_t size) -> size_t {
    out.append(static_cast<const char*>(data), size);
    return size;
  });
  return out;
}

/// Loads the entries of `state` into the experiment's callbacks; callbacks without an entry
/// keep their fresh state. An entry that fits no callback is an error naming `source`.
void load_method_state(const std::string& state, Experiment& e, const std::string& source) {
  if (state.empty()) return;
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(state.data(), state.size());
  } catch (const c10::Error& err) {
    throw UserError(source + ": unreadable method state (" + std::string(err.what_without_backtrace()) + ")");
  }
  auto cbs = e.all_callbacks();
  std::set<std::string> known;
  for (size_t i = 0; i < cbs.size(); ++i) {
    known.insert(callback_key(i, *cbs[i]));
    torch::serialize::InputArchive cb_archive;
    if (archive.try_read(callback_key(i, *cbs[i]), cb_archive)) cbs[i]->load_state(cb_archive);
  }
  for (const auto& key : archive.keys())
    if (key.rfind("cb", 0) == 0 && !known.count(key))
      throw UserError(source + " holds state for '" + key +
                      "', which is not a compression entry/callback of the recipe (written for another recipe?)");
}

ConfigNode recipe_with_overrides(const std::string& text, const std::string& source,
                                 const std::vector<std::string>& overrides) {
  auto root = read_yaml_string(text, source + " (recipe)");
  for (size_t i = 0; i < overrides.size(); ++i) apply_override(root, overrides[i], static_cast<int>(i));
  return ConfigNode(root, "");
}

}  // namespace

std::string serialize_method_state(const Experiment& e, const std::vector<bool>& include) {
  torch::serialize::OutputArchive archive;
  auto cbs = e.all_callbacks();
  for (size_t i = 0; i < cbs.size(); ++i) {
    if (!include.empty() && (i >= include.size() || !include[i])) continue;
    torch::serialize::OutputArchive cb_archive;
    cbs[i]->save_state(cb_archive);
    archive.write(callback_key(i, *cbs[i]), cb_archive);
  }
  return archive_bytes(archive);
}

CompressedExport write_compressed_model(const std::string& path, const Experiment& e,
                                        const std::string& method_state, const DeepCompressionOptions& options) {
  TORCH_CHECK(e.model, "write_compressed_model: experiment without a model");
  torch::NoGradGuard no_grad;
  CompressedExport result;
  result.path = path;

  // Which weights are coded, and which masks follow them.
  const auto params = e.model->named_parameters();
  const auto buffers = e.model->named_buffers();
  std::set<std::string> coded;
  for (const auto& p : params) {
    const auto& t = p.value();
    if (!t.defined()) continue;
    result.parameters += t.numel();
    if (t.scalar_type() == torch::kFloat32 && coded_index_bits(leaf_of(p.key()), t, options)) coded.insert(p.key());
  }
  std::set<std::string> masked;  // coded weights whose mask is left out
  for (const auto& b : buffers)
    if (b.value().defined() && is_mask_name(b.key()) && coded.count(prefix_of(b.key()) + "weight"))
      masked.insert(prefix_of(b.key()) + "weight");

  Writer w;
  w.bytes(kMagic, sizeof kMagic);
  w.u32(kVersion);
  w.u32(kFlagStateZlib);
  w.str(to_yaml(e.recipe.root.value()));
  const auto packed_state = deflate_bytes(method_state);
  w.str(packed_state);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : params)
    if (p.value().defined()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : buffers)
    if (b.value().defined() && !(is_mask_name(b.key()) && masked.count(prefix_of(b.key()) + "weight")))
      tensors.emplace_back(b.key(), b.value());
  w.u32(static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, t] : tensors) {
    const bool is_coded = coded.count(name) > 0;
    w.u8(is_coded ? kCoded : kRaw);
    w.u32(static_cast<uint32_t>(name.size()));
    w.bytes(name.data(), name.size());
    write_shape(w, t.sizes());
    if (is_coded) {
      const int bits = coded_index_bits(leaf_of(name), t, options);
      write_coded(w, sparse_weight(t, bits, options.max_codebook), masked.count(name) > 0);
      ++result.coded_tensors;
    } else {
      const auto cpu = t.detach().to(torch::kCPU).contiguous();
      w.u8(static_cast<uint8_t>(static_cast<int8_t>(cpu.scalar_type())));
      w.u64(static_cast<uint64_t>(cpu.nbytes()));
      w.bytes(cpu.data_ptr(), cpu.nbytes());
      ++result.raw_tensors;
    }
  }
  write_file_atomic(path, w.text());
  result.file_bytes = w.text().size();
  result.dense_bytes = static_cast<uint64_t>(result.parameters) * 4;
  result.method_state_bytes = packed_state.size();
  result.original_parameters = result.parameters;
  result.storage = model_storage(*e.model, options);
  return result;
}

CompressedExport export_compressed_model(const std::string& checkpoint, const std::string& output,
                                         const std::vector<std::string>& overrides,
                                         const DeepCompressionOptions& options) {
  // Check the options before the (slow) build.
  coded_index_bits("weight", torch::Tensor(), options);
  const auto text = read_checkpoint_recipe(checkpoint);
  auto e = build_experiment(recipe_with_overrides(text, checkpoint, overrides), DataNeeds::TestOnly);
  apply_runtime_settings(e.recipe);
  load_checkpoint_methods(checkpoint, e);
  prepare_experiment(e);
  load_checkpoint_model(checkpoint, e);

  // A method's state is stored only when the model's structure needs it (e.g. removed
  // channels): other states can be large (k-means assignments, rewinding snapshots). Starting
  // from every state, drop each one whose absence leaves the same tensor names and shapes.
  const auto cbs = e.all_callbacks();
  std::vector<bool> keep(cbs.size(), true);
  std::vector<std::string> states(cbs.size());
  for (size_t i = 0; i < cbs.size(); ++i) {
    torch::serialize::OutputArchive a;
    cbs[i]->save_state(a);
    states[i] = archive_bytes(a);
  }
  const auto target = tensor_shapes(*e.model);
  auto same_structure = [&](const std::vector<bool>& with) {
    try {
      auto f = build_experiment(recipe_with_overrides(text, checkpoint, overrides), DataNeeds::TestOnly);
      apply_runtime_settings(f.recipe);
      auto fcbs = f.all_callbacks();
      for (size_t i = 0; i < fcbs.size(); ++i) {
        if (!with[i]) continue;
        torch::serialize::InputArchive a;
        a.load_from(states[i].data(), states[i].size());
        fcbs[i]->load_state(a);
      }
      prepare_experiment(f);
      return tensor_shapes(*f.model) == target;
    } catch (const std::exception&) {
      return false;  // a state that cannot stand without the others is kept
    }
  };
  if (!cbs.empty() && same_structure(std::vector<bool>(cbs.size(), false))) keep.assign(cbs.size(), false);
  for (size_t i = 0; i < cbs.size(); ++i) {
    if (!keep[i]) continue;
    auto without = keep;
    without[i] = false;
    if (same_structure(without)) keep = without;
  }
  std::string state;
  std::vector<std::string> kept_names;
  for (size_t i = 0; i < cbs.size(); ++i)
    if (keep[i]) kept_names.push_back(cbs[i]->name());
  if (!kept_names.empty()) state = serialize_method_state(e, keep);
  auto result = write_compressed_model(output, e, state, options);
  result.method_state_of = kept_names;
  result.original_parameters = 0;
  for (const auto& p : build_dense_model(e)->parameters()) result.original_parameters += p.numel();
  return result;
}

bool is_compressed_model(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  char magic[sizeof kMagic];
  if (!in.read(magic, sizeof magic)) return false;
  return std::memcmp(magic, kMagic, sizeof kMagic) == 0;
}

std::string read_compressed_recipe(const std::string& path) { return read_contents(path, true).recipe; }

Experiment load_compressed_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  auto contents = read_contents(path, false);
  auto e = build_experiment(recipe_with_overrides(contents.recipe, path, overrides), DataNeeds::TestOnly);
  apply_runtime_settings(e.recipe);
  load_method_state(contents.method_state, e, "compressed model '" + path + "'");
  prepare_experiment(e);

  torch::NoGradGuard no_grad;
  auto& model = *e.model;
  auto find_tensor = [&](const std::string& name) -> torch::Tensor {
    if (auto* p = model.named_parameters().find(name)) return *p;
    if (auto* b = model.named_buffers().find(name)) return *b;
    return {};
  };
  std::set<std::string> assigned;
  std::vector<std::string> masks_to_derive;
  for (const auto& rec : contents.records) {
    auto target = find_tensor(rec.name);
    if (!target.defined())
      throw UserError("compressed model '" + path + "': tensor '" + rec.name +
                      "' is not in the recipe's model (was the file written for another recipe?)");
    if (target.sizes().vec() != rec.shape)
      throw UserError("compressed model '" + path + "': tensor '" + rec.name + "' is " + shape_text(rec.shape) +
                      " in the file but " + shape_text(target.sizes().vec()) + " in the recipe's model");
    if (target.scalar_type() != rec.tensor.scalar_type())
      throw UserError("compressed model '" + path + "': tensor '" + rec.name + "' is " +
                      std::string(c10::toString(rec.tensor.scalar_type())) + " in the file but " +
                      std::string(c10::toString(target.scalar_type())) + " in the recipe's model");
    target.copy_(rec.tensor);
    assigned.insert(rec.name);
    if (rec.coded && rec.has_mask) {
      const auto mask_name = prefix_of(rec.name) + kMaskSuffix;
      if (!find_tensor(mask_name).defined()) {
        // The fresh model's layer has no mask yet: give it one (Shrink's layers only).
        const auto module_path = prefix_of(rec.name).empty() ? std::string() : prefix_of(rec.name).substr(0, prefix_of(rec.name).size() - 1);
        auto* module = model.named_modules().find(module_path);
        if (module) {
          if (auto* conv = dynamic_cast<nn::Conv2dImpl*>(module->get())) conv->enable_mask();
          if (auto* linear = dynamic_cast<nn::LinearImpl*>(module->get())) linear->enable_mask();
        }
      }
    }
  }
  // Masks follow the weights' zeros; anything else missing is an error.
  for (const auto& item : model.named_buffers()) {
    const auto& name = item.key();
    if (assigned.count(name) || !item.value().defined()) continue;
    const auto weight_name = prefix_of(name) + "weight";
    if (is_mask_name(name) && assigned.count(weight_name)) {
      auto weight = find_tensor(weight_name);
      item.value().copy_((weight != 0).to(item.value().scalar_type()));
      continue;
    }
    throw UserError("compressed model '" + path + "' has no tensor '" + name + "' of the recipe's model");
  }
  for (const auto& item : model.named_parameters())
    if (item.value().defined() && !assigned.count(item.key()))
      throw UserError("compressed model '" + path + "' has no tensor '" + item.key() + "' of the recipe's model");
  return e;
}

}  // namespace shrink::sharing
