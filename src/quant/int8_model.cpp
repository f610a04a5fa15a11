// The int8 model file: calibration and conversion at export, loading with kernels installed, and
// the int8-vs-float latency of `shrink bench FILE` (include/shrink/quant/int8_model.h).
#include "shrink/quant/int8_model.h"

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "shrink/config/recipe_file.h"
#include "shrink/core/binary_file.h"
#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/method_state.h"

namespace shrink::quant {
namespace {

constexpr std::string_view kMagic = "SHRINKQ8";
const std::string kKind = "int8 model";  // errors read "int8 model '<path>': ..."
constexpr uint32_t kVersion = 1;
constexpr uint8_t kConv = 0, kLinear = 1;

// --- byte streams -----------------------------------------------------------------------------

/// The raw bytes of a contiguous CPU copy of `t`.
void write_tensor_bytes(ByteWriter& w, const torch::Tensor& t) {
  const auto cpu = t.detach().to(torch::kCPU).contiguous();
  w.bytes(cpu.data_ptr(), cpu.nbytes());
}

/// A tensor of `shape` and `dtype` filled from the next bytes.
torch::Tensor read_tensor(ByteReader& r, const std::vector<int64_t>& shape, c10::ScalarType dtype,
                          const std::string& what) {
  // Sizes are checked against the bytes left before anything is allocated.
  uint64_t nbytes = 0;
  try {
    nbytes = c10::elementSize(dtype);
  } catch (const c10::Error&) {
    r.fail(what + " has an unsupported dtype");
  }
  for (auto d : shape) {
    if (d != 0 && nbytes > r.remaining() / static_cast<uint64_t>(d)) r.fail(what + " is larger than the file");
    nbytes *= static_cast<uint64_t>(d);
  }
  const char* data = r.take(nbytes);
  auto t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  if (nbytes) std::memcpy(t.data_ptr(), data, nbytes);
  return t;
}

/// u8 ndim + u64 dims: at most 8 dimensions of at most 2^32.
std::vector<int64_t> read_shape(ByteReader& r, const std::string& what) {
  return r.shape(what, 8, int64_t(1) << 32);
}

void write_grid(ByteWriter& w, const ActivationGrid& g) {
  w.f64(g.scale);
  w.u32(static_cast<uint32_t>(g.zero_point));
  w.u32(static_cast<uint32_t>(g.quant_min));
  w.u32(static_cast<uint32_t>(g.quant_max));
}

ActivationGrid read_grid(ByteReader& r, const std::string& what) {
  ActivationGrid g;
  g.scale = r.f64();
  g.zero_point = static_cast<int32_t>(r.u32());
  g.quant_min = static_cast<int32_t>(r.u32());
  g.quant_max = static_cast<int32_t>(r.u32());
  if (!(g.scale > 0) || !std::isfinite(g.scale) || g.quant_min < 0 || g.quant_max > 255 || g.quant_min > g.quant_max ||
      g.zero_point < 0 || g.zero_point > 255)
    r.fail(what + " has a corrupt activation grid");
  return g;
}

// --- model helpers ----------------------------------------------------------------------------

bool is_quantizer_name(const std::string& name) {
  for (const char* part : {"weight_quantizer.", "input_quantizer.", "output_quantizer."}) {
    const auto at = name.find(part);
    if (at != std::string::npos && (at == 0 || name[at - 1] == '.')) return true;
  }
  return false;
}

/// Tensors a converted layer at `path` keeps in its Int8Layer record instead.
bool owned_by_layer(const std::string& name, const std::string& path) {
  const std::string prefix = path + ".";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  const auto rest = name.substr(prefix.size());
  return rest == "weight" || rest == "bias" || (rest.find('.') != std::string::npos && is_quantizer_name(rest));
}

std::map<std::string, std::vector<int64_t>> tensor_shapes(const torch::nn::Module& model) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : model.named_parameters())
    if (p.value().defined()) shapes[p.key()] = p.value().sizes().vec();
  for (const auto& b : model.named_buffers())
    if (b.value().defined()) shapes[b.key()] = b.value().sizes().vec();
  return shapes;
}

std::string shape_text(at::IntArrayRef sizes) {
  std::string s;
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "x" : "") + std::to_string(sizes[i]);
  return s.empty() ? "scalar" : s;
}

ConfigNode recipe_with_overrides(const std::string& text, const std::string& source,
                                 const std::vector<std::string>& overrides) {
  auto root = read_yaml_string(text, source + " (recipe)");
  for (size_t i = 0; i < overrides.size(); ++i) apply_override(root, overrides[i], static_cast<int>(i));
  // LibTorch's quantized operators used here are CPU operators, whatever device the model trained on.
  apply_override(root, "device=cpu", static_cast<int>(overrides.size()));
  return ConfigNode(root, "");
}

/// A quantized Conv2d or Linear of the model.
struct Target {
  std::string path;
  nn::Conv2dImpl* conv = nullptr;
  nn::LinearImpl* linear = nullptr;
};

/// Runs the layer's own (fake-quantized) forward and records the range of what the int8 kernel
/// will output: the layer's output, followed by its folded BatchNorm when it has one.
class RecordingKernel : public nn::LayerKernel, public std::enable_shared_from_this<RecordingKernel> {
 public:
  explicit RecordingKernel(Target target) : target_(std::move(target)) {}
  at::Tensor forward(const at::Tensor& input) override {
    auto self = shared_from_this();
    at::Tensor out;
    // The layer's float path runs while this kernel steps aside.
    if (target_.conv) {
      target_.conv->set_kernel(nullptr);
      out = target_.conv->forward(input);
      target_.conv->set_kernel(self);
      if (auto bn = target_.conv->folded_batch_norm()) record(bn->forward(out));
      else record(out);
    } else {
      target_.linear->set_kernel(nullptr);
      out = target_.linear->forward(input);
      target_.linear->set_kernel(self);
      record(out);
    }
    return out;
  }
  std::optional<OutputRange> range() const { return range_; }

 private:
  void record(const at::Tensor& y) {
    const auto [lo, hi] = torch::aminmax(y.detach());
    const double l = lo.item<double>(), h = hi.item<double>();
    if (!range_) range_ = OutputRange{l, h};
    range_->min = std::min(range_->min, l);
    range_->max = std::max(range_->max, h);
  }
  Target target_;
  std::optional<OutputRange> range_;
};

void make_identity(const torch::nn::BatchNorm2d& bn) {
  // Running variance 1 - eps: the normalization divides by exactly 1.
  bn->running_mean.fill_(0);
  bn->running_var.fill_(1.0 - bn->options.eps());
  if (bn->options.affine()) {
    bn->weight.fill_(1);
    bn->bias.fill_(0);
  }
}

using Clock = std::chrono::steady_clock;

}  // namespace

Int8Export write_int8_model(const std::string& path, Experiment& e, const std::string& method_state,
                            const Int8Options& options) {
  TORCH_CHECK(e.model, "write_int8_model: experiment without a model");
  TORCH_CHECK(options.calibration_batches > 0, "write_int8_model: calibration_batches must be > 0, got ",
              options.calibration_batches);
  torch::NoGradGuard no_grad;
  auto& model = *e.model;
  model.eval();
  Int8Export result;
  result.path = path;

  std::vector<Target> targets;
  for (const auto& item : model.named_modules()) {
    auto* conv = dynamic_cast<nn::Conv2dImpl*>(item.value().get());
    auto* linear = dynamic_cast<nn::LinearImpl*>(item.value().get());
    if (!conv && !linear) continue;
    const bool quantized = conv ? conv->quantizers().any() : linear->quantizers().any();
    const bool composite = conv ? conv->composite() : linear->composite();
    if (composite) continue;  // its inner layers are listed on their own
    if (!quantized) {
      result.float_layers.push_back(item.key());
      continue;
    }
    targets.push_back({item.key(), conv, linear});
  }

  // Calibration: every target records its output range on a few batches, in eval mode.
  std::vector<std::shared_ptr<RecordingKernel>> recorders;
  for (const auto& t : targets) {
    recorders.push_back(std::make_shared<RecordingKernel>(t));
    if (t.conv) t.conv->set_kernel(recorders.back());
    else t.linear->set_kernel(recorders.back());
  }
  const auto& data = e.train_data ? e.train_data : e.test_data;
  TORCH_CHECK(data && data->size() > 0, "write_int8_model: no data to calibrate on");
  const int64_t bs = std::min(options.calibration_batch_size > 0 ? options.calibration_batch_size
                                                                 : e.recipe.train.batch_size,
                              data->size());
  const auto order = epoch_order(data->size(), static_cast<uint64_t>(e.recipe.seed), 0);
  try {
    for (int64_t b = 0; b < options.calibration_batches && (b + 1) * bs <= data->size(); ++b) {
      std::vector<int64_t> idx(order.begin() + b * bs, order.begin() + (b + 1) * bs);
      auto batch = data->load(idx, static_cast<uint64_t>(e.recipe.seed), 0, b * bs);
      model.forward(batch.inputs.to(e.device));
      result.calibration_examples += bs;
    }
  } catch (...) {
    for (const auto& t : targets) t.conv ? t.conv->set_kernel(nullptr) : t.linear->set_kernel(nullptr);
    throw;
  }
  for (const auto& t : targets) t.conv ? t.conv->set_kernel(nullptr) : t.linear->set_kernel(nullptr);

  // Conversion first (all refusals before anything changes), then kernels and identity BatchNorms.
  std::vector<Int8Layer> layers;
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    layers.push_back(t.conv ? convert_layer(t.path, *t.conv, recorders[i]->range())
                            : convert_layer(t.path, *t.linear, recorders[i]->range()));
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    if (t.conv) {
      t.conv->set_kernel(make_int8_kernel(layers[i], *t.conv));
      if (const auto& bn = t.conv->folded_batch_norm()) make_identity(bn);
    } else {
      t.linear->set_kernel(make_int8_kernel(layers[i], *t.linear));
    }
    result.converted.push_back(t.path);
    result.int8_weights += layers[i].weight.numel();
  }
  std::map<std::string, int64_t> engines;
  for (const auto& l : layers) ++engines[int8_engine(l)];
  for (const auto& [name, count] : engines)
    result.engine += (result.engine.empty() ? "" : ", ") +
                     (engines.size() == 1 ? name : fmt::format("{} ({} layers)", name, count));
  if (engines.empty()) result.engine = int8_engine();

  ByteWriter w;
  w.header(kMagic, kVersion, 0);
  w.str(to_yaml(e.recipe.root.value()));
  const auto packed_state = zlib_compress(method_state);
  w.str(packed_state);
  w.u32(static_cast<uint32_t>(layers.size()));
  for (const auto& l : layers) {
    w.str(l.path);
    w.u8(l.conv ? kConv : kLinear);
    w.shape(l.weight.sizes());
    write_tensor_bytes(w, l.weight);
    w.u32(static_cast<uint32_t>(l.weight_scale.numel()));
    write_tensor_bytes(w, l.weight_scale.to(torch::kFloat));
    write_tensor_bytes(w, l.weight_zero_point.to(torch::kInt));
    w.u8(l.bias.defined() ? 1 : 0);
    if (l.bias.defined()) write_tensor_bytes(w, l.bias.to(torch::kFloat));
    write_grid(w, l.input);
    write_grid(w, l.output);
  }
  auto owned = [&](const std::string& name) {
    for (const auto& t : targets)
      if (owned_by_layer(name, t.path)) return true;
    return false;
  };
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model.named_parameters()) {
    if (!p.value().defined()) continue;
    if (!is_quantizer_name(p.key())) result.parameters += p.value().numel();
    if (!owned(p.key())) tensors.emplace_back(p.key(), p.value());
  }
  for (const auto& b : model.named_buffers())
    if (b.value().defined() && !owned(b.key())) tensors.emplace_back(b.key(), b.value());
  w.u32(static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, t] : tensors) {
    w.u32(static_cast<uint32_t>(name.size()));
    w.bytes(name.data(), name.size());
    w.shape(t.sizes());
    w.u8(static_cast<uint8_t>(static_cast<int8_t>(t.scalar_type())));
    w.u64(static_cast<uint64_t>(t.nbytes()));
    write_tensor_bytes(w, t);
  }
  write_file_atomic(path, w.text());
  result.file_bytes = w.text().size();
  result.float_bytes = static_cast<uint64_t>(result.parameters) * 4;
  result.method_state_bytes = packed_state.size();
  return result;
}

Int8Export export_int8_model(const std::string& checkpoint, const std::string& output,
                             const std::vector<std::string>& overrides, const Int8Options& options) {
  const auto text = read_checkpoint_recipe(checkpoint);
  auto e = build_experiment(recipe_with_overrides(text, checkpoint, overrides), DataNeeds::TrainAndTest);
  apply_runtime_settings(e.recipe);
  load_checkpoint_methods(checkpoint, e);
  prepare_experiment(e);
  load_checkpoint_model(checkpoint, e);
  // Methods' state is stored only when the recipe alone does not rebuild the same tensors (e.g.
  // removed channels); QAT's quantizers come back from the recipe.
  std::string state;
  {
    auto fresh = build_experiment(recipe_with_overrides(text, checkpoint, overrides), DataNeeds::TestOnly);
    prepare_experiment(fresh);
    if (tensor_shapes(*fresh.model) != tensor_shapes(*e.model)) state = save_method_state(e);
  }
  return write_int8_model(output, e, state, options);
}

bool is_int8_model(const std::string& path) { return file_starts_with(path, kMagic); }

Experiment load_int8_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  auto r = ByteReader::from_file(kKind, path);
  if (const uint32_t flags = r.header(kMagic, kVersion, "not an int8 model file (bad magic)"))
    r.fail("unknown flags " + std::to_string(flags));
  const auto recipe = r.str();
  const auto state = zlib_uncompress(r.str(), r, "method state");

  // Everything is read (and checked) before the slow build.
  std::vector<Int8Layer> layers;
  const uint32_t layer_count = r.u32();
  for (uint32_t i = 0; i < layer_count; ++i) {
    Int8Layer l;
    l.path = r.bytes(r.u64());
    const std::string what = "layer '" + l.path + "'";
    const uint8_t kind = r.u8();
    if (kind != kConv && kind != kLinear) r.fail(what + " has an unknown kind " + std::to_string(kind));
    l.conv = kind == kConv;
    const auto shape = read_shape(r, what);
    if (shape.size() != (l.conv ? 4u : 2u) || shape[0] == 0) r.fail(what + " has a corrupt weight shape");
    l.weight = read_tensor(r, shape, torch::kChar, what);
    const uint32_t n = r.u32();
    if (n != 1 && n != static_cast<uint32_t>(shape[0])) r.fail(what + " has " + std::to_string(n) + " weight scales");
    l.weight_scale = read_tensor(r, {n}, torch::kFloat, what);
    l.weight_zero_point = read_tensor(r, {n}, torch::kInt, what).to(torch::kLong);
    if (!(l.weight_scale > 0).all().item<bool>() || !torch::isfinite(l.weight_scale).all().item<bool>())
      r.fail(what + " has corrupt weight scales");
    if (l.weight_zero_point.ne(0).any().item<bool>()) r.fail(what + " has nonzero weight zero points");
    const uint8_t has_bias = r.u8();
    if (has_bias > 1) r.fail(what + " has a corrupt bias flag");
    if (has_bias) l.bias = read_tensor(r, {shape[0]}, torch::kFloat, what);
    l.input = read_grid(r, what);
    l.output = read_grid(r, what);
    layers.push_back(std::move(l));
  }
  struct Record {
    std::string name;
    torch::Tensor tensor;
  };
  std::vector<Record> records;
  const uint32_t tensor_count = r.u32();
  for (uint32_t i = 0; i < tensor_count; ++i) {
    Record rec;
    rec.name = r.bytes(r.u32());
    const auto shape = read_shape(r, "tensor '" + rec.name + "'");
    const auto dtype_code = static_cast<int8_t>(r.u8());
    if (dtype_code < 0 || dtype_code >= static_cast<int8_t>(c10::ScalarType::NumOptions))
      r.fail("tensor '" + rec.name + "' has an unknown dtype");
    const uint64_t nbytes = r.u64();
    rec.tensor = read_tensor(r, shape, static_cast<c10::ScalarType>(dtype_code), rec.name);
    if (nbytes != static_cast<uint64_t>(rec.tensor.nbytes()))
      r.fail("tensor '" + rec.name + "' holds " + std::to_string(nbytes) + " bytes, expected " +
             std::to_string(rec.tensor.nbytes()));
    records.push_back(std::move(rec));
  }
  if (!r.at_end()) r.fail("has trailing bytes after its " + std::to_string(tensor_count) + " tensors");

  auto e = build_experiment(recipe_with_overrides(recipe, path, overrides), DataNeeds::TestOnly);
  apply_runtime_settings(e.recipe);
  load_method_state(state, e, "int8 model '" + path + "'");
  prepare_experiment(e);

  torch::NoGradGuard no_grad;
  auto& model = *e.model;
  const auto modules = model.named_modules();
  std::vector<std::string> converted;
  for (const auto& l : layers) {
    auto* found = modules.find(l.path);
    auto* conv = found ? dynamic_cast<nn::Conv2dImpl*>(found->get()) : nullptr;
    auto* linear = found ? dynamic_cast<nn::LinearImpl*>(found->get()) : nullptr;
    if (l.conv ? !conv : !linear)
      r.fail("layer '" + l.path + "' is not a " + (l.conv ? "Conv2d" : "Linear") +
             " of the recipe's model (was the file written for another recipe?)");
    auto& weight = l.conv ? conv->weight : linear->weight;
    auto& bias = l.conv ? conv->bias : linear->bias;
    if (!weight.defined() || weight.sizes() != l.weight.sizes())
      r.fail("layer '" + l.path + "' has weight " + shape_text(l.weight.sizes()) + " in the file but " +
             (weight.defined() ? shape_text(weight.sizes()) : std::string("none")) + " in the recipe's model");
    weight.copy_(l.dequantized_weight());
    if (bias.defined()) {
      if (l.bias.defined()) bias.copy_(l.bias);
      else bias.zero_();
    }
    if (l.conv) conv->set_kernel(make_int8_kernel(l, *conv));
    else linear->set_kernel(make_int8_kernel(l, *linear));
    converted.push_back(l.path);
  }
  auto owned = [&](const std::string& name) {
    for (const auto& p : converted)
      if (owned_by_layer(name, p)) return true;
    return false;
  };
  auto find_tensor = [&](const std::string& name) -> torch::Tensor {
    if (auto* p = model.named_parameters().find(name)) return *p;
    if (auto* b = model.named_buffers().find(name)) return *b;
    return {};
  };
  std::set<std::string> assigned;
  for (const auto& rec : records) {
    auto target = find_tensor(rec.name);
    if (!target.defined())
      r.fail("tensor '" + rec.name + "' is not in the recipe's model (was the file written for another recipe?)");
    if (target.sizes() != rec.tensor.sizes())
      r.fail("tensor '" + rec.name + "' is " + shape_text(rec.tensor.sizes()) + " in the file but " +
             shape_text(target.sizes()) + " in the recipe's model");
    if (target.scalar_type() != rec.tensor.scalar_type())
      r.fail("tensor '" + rec.name + "' is " + std::string(c10::toString(rec.tensor.scalar_type())) +
             " in the file but " + std::string(c10::toString(target.scalar_type())) + " in the recipe's model");
    target.copy_(rec.tensor);
    assigned.insert(rec.name);
  }
  for (const auto& [name, shape] : tensor_shapes(model))
    if (!assigned.count(name) && !owned(name)) r.fail("has no tensor '" + name + "' of the recipe's model");
  model.eval();
  return e;
}

// --- bench ------------------------------------------------------------------------------------

Int8Bench bench_int8_model(Experiment& e, int64_t repeats) {
  TORCH_CHECK(e.test_data && e.test_data->size() > 0, "int8 bench needs the test split");
  TORCH_CHECK(repeats > 0, "int8 bench: repeats must be > 0");
  Int8Bench r;
  r.batch_size = std::min(e.recipe.train.batch_size, e.test_data->size());
  r.threads = at::get_num_threads();
  r.engine = int8_engine();
  auto dense = build_dense_model(e);
  dense->eval();
  e.model->eval();
  std::vector<int64_t> idx(r.batch_size);
  for (int64_t i = 0; i < r.batch_size; ++i) idx[i] = i;
  const auto full = e.test_data->load(idx, static_cast<uint64_t>(e.recipe.seed), 0, 0).inputs.to(e.device);
  const auto one = full.slice(0, 0, 1).contiguous();
  torch::NoGradGuard no_grad;
  auto time = [](ModelImpl& m, const torch::Tensor& x) {
    const auto t0 = Clock::now();
    m.forward(x);
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  for (int i = 0; i < 3; ++i) time(*e.model, one), time(*dense, one), time(*e.model, full), time(*dense, full);
  std::vector<double> i1, ib, f1, fb;
  // Alternating, so load drifts hit both models.
  for (int64_t i = 0; i < repeats; ++i) i1.push_back(time(*e.model, one)), f1.push_back(time(*dense, one));
  for (int64_t i = 0; i < repeats; ++i) ib.push_back(time(*e.model, full)), fb.push_back(time(*dense, full));
  r.int8_batch1 = Timing::from(i1);
  r.int8_batch = Timing::from(ib);
  r.float_batch1 = Timing::from(f1);
  r.float_batch = Timing::from(fb);
  return r;
}

std::string int8_bench_text(const Int8Bench& r) {
  auto line = [](const std::string& what, const Timing& t) {
    return fmt::format("{:<28} median {:9.3f} ms  [p25 {:.3f}, p75 {:.3f}, min {:.3f}, max {:.3f}]  n={}\n", what,
                       t.median_ms, t.p25_ms, t.p75_ms, t.min_ms, t.max_ms, t.repeats);
  };
  std::string out = fmt::format("int8 model (8-bit engine {}), {} threads; float32 = the recipe's model without compression\n",
                                r.engine, r.threads);
  out += line("int8 inference batch 1", r.int8_batch1);
  out += line("float inference batch 1", r.float_batch1);
  out += line("int8 inference batch " + std::to_string(r.batch_size), r.int8_batch);
  out += line("float inference batch " + std::to_string(r.batch_size), r.float_batch);
  out += fmt::format("{:<28} {:.3f}x batch 1, {:.3f}x batch {}\n", "int8 / float",
                     r.int8_batch1.median_ms / std::max(1e-9, r.float_batch1.median_ms),
                     r.int8_batch.median_ms / std::max(1e-9, r.float_batch.median_ms), r.batch_size);
  return out;
}

std::string int8_bench_json(const Int8Bench& r) {
  auto timing = [](const Timing& t) {
    return nlohmann::json{{"median_ms", t.median_ms}, {"p25_ms", t.p25_ms}, {"p75_ms", t.p75_ms},
                          {"min_ms", t.min_ms},       {"max_ms", t.max_ms}, {"repeats", t.repeats}};
  };
  return nlohmann::json{{"batch_size", r.batch_size},
                        {"threads", r.threads},
                        {"engine", r.engine},
                        {"int8_batch1", timing(r.int8_batch1)},
                        {"int8_batch", timing(r.int8_batch)},
                        {"float_batch1", timing(r.float_batch1)},
                        {"float_batch", timing(r.float_batch)}}
      .dump(2);
}

}  // namespace shrink::quant
