#include "shrink/sharing/compressed_model.h"

#include <cstring>
#include <map>
#include <set>
#include <string_view>

#include "shrink/config/recipe_file.h"
#include "shrink/core/binary_file.h"
#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/sharing/huffman.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/method_state.h"

namespace shrink::sharing {
namespace {

constexpr std::string_view kMagic = "SHRINKDC";
const std::string kKind = "compressed model";  // errors read "compressed model '<path>': ..."
constexpr uint32_t kVersion = 1;
constexpr uint8_t kRaw = 0, kCoded = 1;
constexpr uint8_t kModeCodebook = 0, kModeRawValues = 1;
constexpr uint32_t kFlagStateZlib = 1;  // method_state is zlib-compressed: u64 size + deflate stream
const std::string kMaskSuffix = "weight_mask";

// --- writing ----------------------------------------------------------------------------------

/// u64 bit count + the stream's bytes.
void write_bits(ByteWriter& w, const BitStream& b) {
  w.u64(b.bits);
  w.bytes(b.bytes.data(), b.bytes.size());
}

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

void write_coded(ByteWriter& w, const SparseWeight& s, bool has_mask) {
  w.u8(static_cast<uint8_t>(s.index_bits));
  w.u8(s.codebook ? kModeCodebook : kModeRawValues);
  w.u8(has_mask ? 1 : 0);
  w.u64(s.gaps.size());
  w.u64(static_cast<uint64_t>(s.filler));
  w.u32(static_cast<uint32_t>(s.codebook_values.size()));
  for (auto v : s.codebook_values) w.u32(v);
  const size_t max_gap = (size_t(1) << s.index_bits) - 1;
  const auto gap_code = HuffmanCode::from_frequencies(histogram(s.gaps, max_gap + 1));
  write_bits(w, table_stream(gap_code));
  write_bits(w, huffman_encode(gap_code, s.gaps));
  if (s.codebook) {
    const auto value_code = HuffmanCode::from_frequencies(histogram(s.values, s.codebook_values.size() + 1));
    write_bits(w, table_stream(value_code));
    write_bits(w, huffman_encode(value_code, s.values));
  } else {
    BitWriter raw;
    for (auto v : s.values) raw.write(v, 32);
    write_bits(w, raw.finish());
  }
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

/// u64 bit count + (bits + 7) / 8 bytes.
BitStream read_bits(ByteReader& r) {
  BitStream b;
  b.bits = r.u64();
  const uint64_t n = (b.bits + 7) / 8;
  const auto* p = reinterpret_cast<const uint8_t*>(r.take(n));
  b.bytes.assign(p, p + n);
  return b;
}

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

Record read_record(ByteReader& r) {
  Record rec;
  const uint8_t kind = r.u8();
  if (kind != kRaw && kind != kCoded) r.fail("unknown tensor kind " + std::to_string(kind));
  rec.name = r.bytes(r.u32());
  rec.shape = r.shape("tensor '" + rec.name + "'", 255, int64_t(1) << 40);  // any ndim a u8 holds
  int64_t numel = 1;
  for (auto d : rec.shape) numel *= d;
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
    auto gap_table = read_bits(r);
    BitReader gap_table_in(gap_table);
    const auto gap_code = read_table(gap_table_in);
    s.gaps = huffman_decode(gap_code, read_bits(r), entries);
    if (s.codebook) {
      auto value_table = read_bits(r);
      BitReader value_table_in(value_table);
      const auto value_code = read_table(value_table_in);
      s.values = huffman_decode(value_code, read_bits(r), entries);
    } else {
      auto raw = read_bits(r);
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
  auto r = ByteReader::from_file(kKind, path);
  const uint32_t flags = r.header(kMagic, kVersion, "not a compressed model file (bad magic)");
  if (flags & ~kFlagStateZlib) r.fail("unknown flags " + std::to_string(flags));
  FileContents c;
  c.recipe = r.str();
  if (recipe_only) return c;
  c.method_state = r.str();
  if (flags & kFlagStateZlib) c.method_state = zlib_uncompress(c.method_state, r, "method state");
  const uint32_t count = r.u32();
  for (uint32_t i = 0; i < count; ++i) c.records.push_back(read_record(r));
  if (!r.at_end()) r.fail("has trailing bytes after its " + std::to_string(count) + " tensors");
  return c;
}

ConfigNode recipe_with_overrides(const std::string& text, const std::string& source,
                                 const std::vector<std::string>& overrides) {
  auto root = read_yaml_string(text, source + " (recipe)");
  for (size_t i = 0; i < overrides.size(); ++i) apply_override(root, overrides[i], static_cast<int>(i));
  return ConfigNode(root, "");
}

}  // namespace

std::string serialize_method_state(const Experiment& e, const std::vector<bool>& include) {
  return save_method_state(e, include);
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

  ByteWriter w;
  w.header(kMagic, kVersion, kFlagStateZlib);
  w.str(to_yaml(e.recipe.root.value()));
  // Torch archives are zip files of stored entries with padding, a few KiB even for a handful
  // of integers.
  const auto packed_state = zlib_compress(method_state);
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
    w.shape(t.sizes());
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
  for (size_t i = 0; i < cbs.size(); ++i) states[i] = callback_state_bytes(*cbs[i]);
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

bool is_compressed_model(const std::string& path) { return file_starts_with(path, kMagic); }

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
