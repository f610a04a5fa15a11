#include "shrink/models/weights.h"

#include "shrink/pruning/mask.h"

#include <caffe2/serialize/inline_container.h>
#include <fnmatch.h>
#include <torch/csrc/jit/serialization/unpickler.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

namespace shrink {

namespace fs = std::filesystem;

namespace {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

constexpr size_t kMaxListed = 20;

/// First line of a LibTorch error, without backtrace, cut to a readable length.
std::string short_reason(std::string s) {
  auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  if (s.size() > 200) s = s.substr(0, 197) + "...";
  return s;
}
std::string short_reason(const c10::Error& e) { return short_reason(std::string(e.what_without_backtrace())); }

std::string shape_text(torch::IntArrayRef shape) {
  if (shape.empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

/// "a, b, c" with at most kMaxListed entries, then "... and N more".
std::string join_capped(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < kMaxListed; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > kMaxListed) out += ", ... and " + std::to_string(items.size() - kMaxListed) + " more";
  return out;
}

/// Why a file could not be read in one format (collected to explain an Auto failure).
struct FormatFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

NamedTensors tensors_of(const torch::jit::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace_back(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace_back(b.name, b.value);
  return out;
}

/// checkpoint.cpp writes an OutputArchive (a TorchScript module underneath) with an int
/// "format" and the model's own archive as the submodule "model".
bool is_shrink_checkpoint(const torch::jit::Module& m) {
  return m.hasattr("format") && m.attr("format").isInt() && m.hasattr("model") && m.attr("model").isModule();
}

torch::jit::Module load_script(const std::string& path) {
  try {
    return torch::jit::load(path, torch::Device(torch::kCPU));
  } catch (const c10::Error& e) {
    throw FormatFailure(short_reason(e));
  } catch (const std::exception& e) {  // e.g. torch::jit::ErrorReport from code in the file
    throw FormatFailure(short_reason(e.what()));
  }
}

// --- state_dict ------------------------------------------------------------------------------

/// LibTorch 1.13's unpickler turns `collections.OrderedDict()` into None (it only expects one
/// as a tensor's empty backward hooks), so `torch.save(model.state_dict())` would not read.
/// The pickle torch.save writes (protocol 2) for an OrderedDict of tensors is
///   PROTO 2, GLOBAL 'collections OrderedDict', BINPUT 0, EMPTY_TUPLE, REDUCE, ...items...,
///   EMPTY_DICT, BINPUT k, 'X' "_metadata", ..., SETITEM, BUILD, STOP
/// It is rewritten to
///   PROTO 2, MARK, GLOBAL (kept: the tensors' hooks use it through memo 0), BINPUT 0,
///   EMPTY_DICT, ...items..., TUPLE, STOP
/// which reads as the tuple (global, dict): the `_metadata` state (an OrderedDict again) is cut
/// off. Returns "" when the pickle does not have this layout.
std::string plain_dict_pickle(const std::string& pickle) {
  static const std::string head("\x80\x02" "ccollections\nOrderedDict\nq\x00)R", 31);
  static const std::string metadata("X\x09\x00\x00\x00_metadata", 14);
  if (pickle.compare(0, head.size(), head) != 0) return "";
  const auto k = pickle.rfind(metadata);
  if (k == std::string::npos || pickle.size() < 3 || pickle.compare(pickle.size() - 3, 3, "sb.") != 0) return "";
  size_t cut = std::string::npos;
  if (k >= 3 && pickle[k - 2] == 'q' && pickle[k - 3] == '}') cut = k - 3;       // BINPUT (1-byte index)
  else if (k >= 6 && pickle[k - 5] == 'r' && pickle[k - 6] == '}') cut = k - 6;  // LONG_BINPUT (4 bytes)
  if (cut == std::string::npos || cut < head.size()) return "";
  return pickle.substr(0, 2) + "(" + pickle.substr(2, head.size() - 4) + "}" +
         pickle.substr(head.size(), cut - head.size()) + "t.";
}

const char* ivalue_kind(const c10::IValue& v) {
  if (v.isGenericDict()) return "dict";
  if (v.isList()) return "list";
  if (v.isTuple()) return "tuple";
  if (v.isInt()) return "int";
  if (v.isDouble()) return "float";
  if (v.isString()) return "string";
  if (v.isNone()) return "None";
  return v.tagKind().c_str();
}

NamedTensors read_state_dict(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    // The legacy format (before PyTorch 1.6, or _use_new_zipfile_serialization=False) starts
    // with a pickled magic number: PROTO 2, LONG1 of 10 bytes.
    char magic[3] = {0, 0, 0};
    std::ifstream(path, std::ios::binary).read(magic, 3);
    const bool legacy = magic[0] == '\x80' && magic[1] == '\x02' && magic[2] == '\x8a';
    throw FormatFailure(legacy ? "the legacy torch.save format (before PyTorch 1.6, or "
                                 "_use_new_zipfile_serialization=False) is not supported: re-save it with the defaults"
                               : short_reason(e));
  }
  if (!reader->hasRecord("data.pkl")) throw FormatFailure("no data.pkl: not written by torch.save");
  c10::IValue value;
  std::string pickle;
  try {
    auto record = reader->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(std::get<0>(record).get()), std::get<1>(record));
    auto patched = plain_dict_pickle(pickle);
    const bool ordered_dict = !patched.empty();
    if (ordered_dict) pickle = std::move(patched);
    size_t pos = 0;
    auto read = [&](char* buffer, size_t n) -> size_t {
      n = std::min(n, pickle.size() - pos);
      std::memcpy(buffer, pickle.data() + pos, n);
      pos += n;
      return n;
    };
    auto read_record = [&](const std::string& name) { return std::get<0>(reader->getRecord("data/" + name)); };
    torch::jit::Unpickler unpickler(read, nullptr, nullptr, read_record, torch::Device(torch::kCPU));
    unpickler.set_version(reader->version());
    value = unpickler.parse_ivalue();
    if (ordered_dict) value = value.toTupleRef().elements().at(1);  // (global, dict)
  } catch (const c10::Error& e) {
    // The unpickler reads collections.OrderedDict() as None (see plain_dict_pickle).
    std::string reason = short_reason(e), hint;
    const bool none_dict = reason.find("GenericDict but got None") != std::string::npos;
    if (none_dict) reason = "LibTorch's unpickler reads this collections.OrderedDict as None";
    if (none_dict || pickle.compare(0, 27, std::string("\x80\x02" "ccollections\nOrderedDict\n")) == 0)
      hint = " (an OrderedDict saved in an unexpected layout, e.g. nested or with a pickle protocol other than 2: "
             "save dict(model.state_dict()) itself with torch.save's defaults)";
    throw FormatFailure(reason + hint);
  } catch (const std::exception& e) {
    throw FormatFailure(short_reason(e.what()));
  }
  if (!value.isGenericDict())
    throw FormatFailure(std::string("holds a ") + ivalue_kind(value) + ", not a dict of name -> tensor");
  NamedTensors out;
  std::vector<std::string> not_tensors;
  for (const auto& item : value.toGenericDict()) {
    const std::string key = item.key().isString() ? item.key().toStringRef() : "<" + item.key().tagKind() + " key>";
    if (item.value().isTensor()) out.emplace_back(key, item.value().toTensor());
    else not_tensors.push_back(key + " (" + ivalue_kind(item.value()) + ")");
  }
  if (!not_tensors.empty())
    throw FormatFailure("a dict with entries that are not tensors: " + join_capped(not_tensors) +
                        "; save the state_dict itself (e.g. torch.save(ckpt['state_dict'], path))");
  return out;
}

// --- matching --------------------------------------------------------------------------------

bool matches_any(const std::string& name, const std::vector<std::string>& globs) {
  for (const auto& g : globs)
    if (::fnmatch(g.c_str(), name.c_str(), 0) == 0) return true;
  return false;
}

std::string renamed(const std::string& name, const std::vector<std::pair<std::string, std::string>>& rules) {
  for (const auto& [from, to] : rules)
    if (name.compare(0, from.size(), from) == 0) return to + name.substr(from.size());
  return name;
}

/// A rename that would have matched `model_name` with one of the file's names, e.g. the file
/// says "module.conv1.weight" for the model's "conv1.weight": {"module.": ""}.
std::string rename_hint(const std::vector<std::string>& missing, const std::vector<std::string>& unmatched) {
  if (missing.empty() || unmatched.empty()) return "";
  const std::string& want = missing.front();
  for (const auto& have : unmatched) {
    if (have.size() > want.size() && have.compare(have.size() - want.size(), want.size(), want) == 0)
      return "the file's names look prefixed: try rename: {\"" + have.substr(0, have.size() - want.size()) +
             "\": \"\"}";
    if (want.size() > have.size() && want.compare(want.size() - have.size(), have.size(), have) == 0)
      return "the model's names look prefixed: try rename: {\"\": \"" + want.substr(0, want.size() - have.size()) +
             "\"}";
  }
  return "";
}

}  // namespace

const char* weights_format_name(WeightsFormat format) {
  switch (format) {
    case WeightsFormat::Auto: return "auto";
    case WeightsFormat::Checkpoint: return "checkpoint";
    case WeightsFormat::TorchScript: return "torchscript";
    case WeightsFormat::StateDict: return "state_dict";
  }
  return "?";
}

WeightsSpec parse_weights_spec(const ConfigNode& node) {
  WeightsSpec spec;
  if (node.is_scalar()) {
    spec.path = node.as<std::string>();
  } else if (node.is_map()) {
    node.check_keys({"path", "format", "exclude", "rename", "strict"});
    spec.path = node["path"].as<std::string>();
    if (node.has("format")) {
      const auto f = node["format"];
      const auto name = f.as<std::string>();
      const WeightsFormat all[] = {WeightsFormat::Auto, WeightsFormat::Checkpoint, WeightsFormat::TorchScript,
                                   WeightsFormat::StateDict};
      bool found = false;
      for (auto candidate : all)
        if (name == weights_format_name(candidate)) spec.format = candidate, found = true;
      if (!found) f.fail("unknown format '" + name + "' (expected auto, checkpoint, torchscript or state_dict)");
    }
    spec.exclude = node.get_or<std::vector<std::string>>("exclude", {});
    if (node.has("rename")) {
      const auto r = node["rename"];
      if (!r.is_map()) r.fail("expected a map from prefix to replacement, e.g. {\"module.\": \"\"}");
      for (const auto& key : r.keys()) {
        const auto to = r[key];
        spec.rename.emplace_back(key, to.is_null() ? std::string() : to.as<std::string>());
      }
    }
    spec.strict = node.get_or<bool>("strict", true);
  } else {
    node.fail("expected a path or a map with 'path' (and format, exclude, rename, strict)");
  }
  if (spec.path.empty()) node.fail("empty weights path");
  return spec;
}

std::string WeightsReport::summary() const {
  return "loaded " + std::to_string(loaded.size()) + " tensors from '" + path + "' (" + weights_format_name(format) +
         "); " + std::to_string(excluded.size()) + " excluded, " + std::to_string(missing.size()) + " missing, " +
         std::to_string(unused.size()) + " unused";
}

NamedTensors read_weights_file(const std::string& path, WeightsFormat format, WeightsFormat* read_as) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw UserError("weights file '" + path + "' does not exist");
  if (fs::is_directory(path, ec)) throw UserError("weights file '" + path + "' is a folder, not a file");
  std::vector<std::string> failures;  // "format: why", for the error message
  auto done = [&](WeightsFormat f, NamedTensors t) {
    if (read_as) *read_as = f;
    return t;
  };

  if (format == WeightsFormat::Auto || format == WeightsFormat::Checkpoint || format == WeightsFormat::TorchScript) {
    try {
      auto module = load_script(path);
      const bool checkpoint = is_shrink_checkpoint(module);
      if (format == WeightsFormat::TorchScript) return done(format, tensors_of(module));
      if (checkpoint) return done(WeightsFormat::Checkpoint, tensors_of(module.attr("model").toModule()));
      if (format == WeightsFormat::Checkpoint)
        throw FormatFailure("a TorchScript file without a Shrink checkpoint's 'format' and 'model' entries "
                            "(use format: torchscript)");
      return done(WeightsFormat::TorchScript, tensors_of(module));
    } catch (const FormatFailure& e) {
      failures.push_back(std::string(format == WeightsFormat::Auto ? "checkpoint/torchscript"
                                                                    : weights_format_name(format)) +
                         ": " + e.what());
    }
  }
  if (format == WeightsFormat::Auto || format == WeightsFormat::StateDict) {
    try {
      return done(WeightsFormat::StateDict, read_state_dict(path));
    } catch (const FormatFailure& e) {
      failures.push_back(std::string("state_dict: ") + e.what());
    }
  }
  std::string message = "cannot read weights file '" + path + "' as ";
  message += format == WeightsFormat::Auto ? "a Shrink checkpoint, TorchScript module or state_dict"
                                           : std::string("format ") + weights_format_name(format);
  for (const auto& f : failures) message += "\n  " + f;
  throw UserError(message);
}

WeightsReport load_weights(torch::nn::Module& model, const WeightsSpec& spec) {
  WeightsReport report;
  report.path = spec.path;
  const auto file = read_weights_file(spec.path, spec.format, &report.format);
  // Pruning masks in the file (`<layer>.weight_mask`) come with their layers: a pruned model
  // loads into a freshly built one with its masks, and the trainer keeps its zeros.
  {
    std::vector<std::string> names;
    for (const auto& [file_name, tensor] : file)
      if (!matches_any(renamed(file_name, spec.rename), spec.exclude)) names.push_back(renamed(file_name, spec.rename));
    pruning::enable_masks_named(model, names);
  }

  // The model's tensors by name, in model order.
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) targets.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers(/*recurse=*/true)) targets.emplace_back(b.key(), b.value());
  std::map<std::string, size_t> target_index;
  for (size_t i = 0; i < targets.size(); ++i) target_index.emplace(targets[i].first, i);

  std::vector<const torch::Tensor*> source(targets.size(), nullptr);
  std::vector<std::string> duplicates, unmatched, shape_errors, missing;
  std::map<std::string, std::string> origin;  // model name -> file name it came from
  for (const auto& [file_name, tensor] : file) {
    const std::string name = renamed(file_name, spec.rename);
    const std::string shown = name == file_name ? name : name + " (file: " + file_name + ")";
    if (matches_any(name, spec.exclude)) {
      report.unused.push_back(name);
      continue;
    }
    auto it = target_index.find(name);
    if (it == target_index.end()) {
      unmatched.push_back(shown);
      report.unused.push_back(name);
      continue;
    }
    if (source[it->second]) {
      duplicates.push_back(name + " (from " + origin[name] + " and " + file_name + ")");
      continue;
    }
    source[it->second] = &tensor;
    origin[name] = file_name;
    const auto& target = targets[it->second].second;
    if (target.sizes() != tensor.sizes())
      shape_errors.push_back(shown + ": model " + shape_text(target.sizes()) + " vs file " +
                             shape_text(tensor.sizes()));
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& name = targets[i].first;
    if (matches_any(name, spec.exclude)) report.excluded.push_back(name);
    else if (!source[i]) missing.push_back(name);
  }

  const bool fails = !shape_errors.empty() || !duplicates.empty() ||
                     (spec.strict && (!missing.empty() || !unmatched.empty()));
  if (fails) {
    std::string message = "weights file '" + spec.path + "' (" + weights_format_name(report.format) +
                          ") does not fit the model:";
    if (spec.strict && !missing.empty())
      message += "\n  model tensors not in the file (" + std::to_string(missing.size()) + "): " + join_capped(missing);
    if (spec.strict && !unmatched.empty())
      message += "\n  file tensors not in the model (" + std::to_string(unmatched.size()) +
                 "): " + join_capped(unmatched);
    if (!shape_errors.empty())
      message += "\n  shapes differ (" + std::to_string(shape_errors.size()) + "): " + join_capped(shape_errors);
    if (!duplicates.empty())
      message += "\n  loaded twice after rename (" + std::to_string(duplicates.size()) +
                 "): " + join_capped(duplicates);
    std::vector<std::string> unmatched_names;
    for (const auto& [file_name, tensor] : file) {
      auto name = renamed(file_name, spec.rename);
      if (!target_index.count(name)) unmatched_names.push_back(name);
    }
    const auto hint = spec.strict ? rename_hint(missing, unmatched_names) : std::string();
    if (!hint.empty()) message += "\n  hint: " + hint;
    message += "\n  (exclude: [globs] skips model tensors, rename: {prefix: replacement} maps the file's names, "
               "strict: false allows missing and extra names)";
    throw UserError(message);
  }

  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!source[i]) continue;
    try {
      targets[i].second.copy_(*source[i]);  // converts dtype and device
    } catch (const c10::Error& e) {
      throw UserError("weights file '" + spec.path + "': cannot copy '" + origin[targets[i].first] + "' into '" +
                      targets[i].first + "': " + short_reason(e));
    }
    report.loaded.push_back(targets[i].first);
  }
  report.missing = std::move(missing);
  return report;
}

WeightsReport load_weights(torch::nn::Module& model, const ConfigNode& weights) {
  if (!weights.valid() || weights.is_null()) return {};
  const auto spec = parse_weights_spec(weights);  // ConfigErrors at the exact key
  try {
    return load_weights(model, spec);
  } catch (const ConfigError&) {
    throw;
  } catch (const UserError& e) {
    weights.fail(e.what());
  }
}

}  // namespace shrink
