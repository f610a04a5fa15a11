#include "shrink/quant/quantization.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "shrink/compression/method_errors.h"
#include "shrink/models/resnet.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink::quant {

namespace {

const std::vector<std::string> kQuantizerKeys = {"weights", "inputs", "outputs"};

OptionSchema<QuantizerOptions> quantizer_schema() {
  OptionSchema<QuantizerOptions> s;
  s.add("quantizer", &QuantizerOptions::quantizer,
        "uniform | lsq | pact | fixed_point | binary | bwn | sign | ternary | dorefa")
      .choices({"uniform", "lsq", "pact", "fixed_point", "binary", "bwn", "sign", "ternary", "dorefa"});
  s.add("bits", &QuantizerOptions::bits, "Bits per value (uniform 2..8 or 16; lsq 2..8; pact, dorefa 1..8).");
  s.add("symmetric", &QuantizerOptions::symmetric,
        "Zero point 0 on a signed grid (weights' default); false: [0, 2^b - 1] with a zero point (activations' default).");
  s.add("per_channel", &QuantizerOptions::per_channel, "Weights: one range or step per output channel.");
  s.add("range", &QuantizerOptions::range, "uniform: minmax | moving_average | percentile.")
      .choices({"minmax", "moving_average", "percentile"});
  s.add("momentum", &QuantizerOptions::momentum, "EMA weight of the newest batch's range (moving_average, percentile).");
  s.add("percentile", &QuantizerOptions::percentile, "percentile range: percent of values inside the range.");
  s.add("fraction_bits", &QuantizerOptions::fraction_bits, "fixed_point: bits after the binary point.");
  s.add("init_alpha", &QuantizerOptions::init_alpha, "pact: initial clipping level.");
  s.add("threshold", &QuantizerOptions::threshold, "ternary: delta = threshold * mean|w|.");
  return s;
}

std::optional<QuantizerOptions> parse_quantizer(const ConfigNode& entry, const std::string& key, QuantizerRole role) {
  if (!entry.valid() || !entry.has(key) || entry[key].is_null()) return std::nullopt;
  const auto node = entry[key];
  QuantizerOptions o;
  if (role == QuantizerRole::activation) {
    o.symmetric = false;
    o.range = "moving_average";
  }
  quantizer_schema().parse_into(node, o);
  if (o.quantizer == "fixed_point") {  // Gupta et al.'s word: 16 bits
    if (!node.has("bits")) o.bits = 16;
    if (!node.has("fraction_bits")) o.fraction_bits = 8;
  }
  try {
    validate(o, role);
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    const auto colon = what.find(": ");
    const auto sub = what.substr(0, colon);
    const auto message = colon == std::string::npos ? what : what.substr(colon + 2);
    if (node.has(sub)) node[sub].fail(message);
    node.fail(what);
  }
  return o;
}

/// The BatchNorm2d the model applies to `conv`'s output, found by the zoo's naming: convK ->
/// bnK and conv -> bn in the same parent, Sequential index i -> i + 1; pre-activation blocks
/// normalize conv1's output with bn2. Null when there is none (checked by channel count).
torch::nn::BatchNorm2d batch_norm_after(torch::nn::Module& model, const std::string& conv_path, int64_t channels) {
  const auto dot = conv_path.rfind('.');
  const std::string parent_path = dot == std::string::npos ? "" : conv_path.substr(0, dot);
  const std::string name = dot == std::string::npos ? conv_path : conv_path.substr(dot + 1);
  std::shared_ptr<torch::nn::Module> parent;
  if (parent_path.empty()) {
    parent = model.shared_from_this();
  } else {
    for (const auto& item : model.named_modules())
      if (item.key() == parent_path) parent = item.value();
  }
  if (!parent) return nullptr;
  std::string bn_name;
  if (dynamic_cast<PreActBlockImpl*>(parent.get())) {
    if (name == "conv1") bn_name = "bn2";
  } else if (dynamic_cast<PreActResNetImpl*>(parent.get()) || dynamic_cast<WideResNetImpl*>(parent.get())) {
    // The stem's conv feeds the first pre-activation block, whose BatchNorm may be shared with the shortcut.
  } else if (name == "depthwise" || name == "pointwise") {
    bn_name = name + "_bn";  // MobileNet v1's DepthwiseSeparable
  } else if (name.rfind("conv", 0) == 0) {
    bn_name = "bn" + name.substr(4);
  } else if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
    bn_name = std::to_string(std::stoll(name) + 1);
  }
  if (bn_name.empty()) return nullptr;
  for (const auto& child : parent->named_children()) {
    if (child.key() != bn_name) continue;
    auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(child.value());
    if (bn && bn->options.num_features() == channels && bn->options.track_running_stats())
      return torch::nn::BatchNorm2d(bn);
  }
  return nullptr;
}

bool clips_weights(const std::optional<QuantizerOptions>& w) {
  return w && (w->quantizer == "binary" || w->quantizer == "bwn");
}

}  // namespace

Quantization::Options Quantization::parse_options(const ConfigNode& entry) {
  Options o;
  auto keys = common_method_keys();
  for (const auto* k : {"weights", "inputs", "outputs", "fold_bn", "freeze_observers_epoch", "freeze_bn_epoch"})
    keys.push_back(k);
  if (entry.valid()) entry.check_keys(keys);
  o.weights = parse_quantizer(entry, "weights", QuantizerRole::weight);
  o.inputs = parse_quantizer(entry, "inputs", QuantizerRole::activation);
  o.outputs = parse_quantizer(entry, "outputs", QuantizerRole::activation);
  if (entry.valid()) {
    if (entry.has("fold_bn")) o.fold_bn = entry["fold_bn"].as<bool>();
    for (auto [key, member] : {std::pair{"freeze_observers_epoch", &Options::freeze_observers_epoch},
                               std::pair{"freeze_bn_epoch", &Options::freeze_bn_epoch}}) {
      if (!entry.has(key)) continue;
      o.*member = entry[key].as<double>();
      if (o.*member < 0) entry[key].fail(fmt::format("must be >= 0 (got {})", entry[key].text()));
    }
    if (!o.weights && !o.inputs && !o.outputs)
      entry.fail("quantization needs at least one of weights, inputs, outputs");
    for (const auto* key : {"end_epoch", "end_step", "frequency"})
      if (entry.has(key))
        entry[key].fail("quantization acts from its start to the end of training; it takes start_epoch or "
                        "start_step only");
    double start = -1;
    if (entry.has("start_epoch")) start = entry["start_epoch"].as<double>();
    if (o.freeze_observers_epoch >= 0 && o.freeze_observers_epoch <= std::max(start, 0.0) &&
        (o.weights || o.inputs || o.outputs))
      entry["freeze_observers_epoch"].fail(fmt::format(
          "must be after the quantizers start (epoch {}): ranges frozen before any batch was observed", std::max(start, 0.0)));
  }
  return o;
}

std::vector<OptionDoc> Quantization::docs() {
  std::vector<OptionDoc> out = {
      {"weights", "map", "(none)", "Quantizer of the layers' weights: {quantizer, bits, ...} as below."},
      {"inputs", "map", "(none)",
       "Quantizer of the layers' inputs (activations; defaults symmetric: false, range: moving_average)."},
      {"outputs", "map", "(none)", "Quantizer of the layers' outputs (same keys as inputs)."},
      {"fold_bn", "bool", "false",
       "Fold the BatchNorm after each conv into its weight quantization (Jacob et al. 2018)."},
      {"freeze_observers_epoch", "float", "-1", "Epoch from which observed ranges stay fixed (-1: never)."},
      {"freeze_bn_epoch", "float", "-1",
       "Epoch from which every BatchNorm2d uses and keeps its running statistics (-1: never)."},
  };
  for (auto d : quantizer_schema().docs()) {
    d.name = "weights/inputs/outputs." + d.name;
    out.push_back(d);
  }
  return out;
}

Quantization::Quantization(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  if (!options_.weights && !options_.inputs && !options_.outputs)
    fail_at_option(spec_, "weights", "quantization needs at least one of weights, inputs, outputs");
  for (const auto& [key, q, role] :
       {std::tuple{"weights", &options_.weights, QuantizerRole::weight},
        std::tuple{"inputs", &options_.inputs, QuantizerRole::activation},
        std::tuple{"outputs", &options_.outputs, QuantizerRole::activation}}) {
    if (!*q) continue;
    try {
      validate(**q, role);
    } catch (const std::invalid_argument& e) {
      fail_at_option(spec_, key, e.what());
    }
  }
}

void Quantization::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  layers_.clear();
  all_bns_.clear();
  for (const auto& [path, module] : target_modules_) {
    Layer layer;
    layer.path = path;
    layer.conv = module->as<nn::Conv2dImpl>();
    layer.linear = module->as<nn::LinearImpl>();
    if (layer.conv && layer.conv->composite()) continue;
    if (layer.linear && layer.linear->composite()) continue;
    if (!layer.conv && !layer.linear) continue;
    if (layer.conv && options_.fold_bn)
      layer.bn = batch_norm_after(*model, path, layer.conv->options.out_channels());
    layers_.push_back(std::move(layer));
  }
  if (layers_.empty())
    fail_at_option(spec_, "targets",
                   "matches no Shrink Conv2d or Linear layer with a weight of its own (low-rank and compact layers: "
                   "target their inner layers, e.g. \"*.form.*\")");
  for (const auto& m : model->modules(/*include_self=*/false))
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) all_bns_.emplace_back(bn);
  prepared_ = false;
}

void Quantization::prepare_model(TrainContext&) {
  if (prepared_) return;
  for (auto& layer : layers_) {
    const bool quantized = layer.conv ? layer.conv->options.quant().any() : layer.linear->options.quant().any();
    if (quantized)
      fail_at_option(spec_, "targets",
                     "targets " + layer.path + ", which an earlier quantization entry already quantizes (exclude it "
                     "from one of them)");
    nn::LayerQuantizers q;
    const int64_t channels = layer.conv ? layer.conv->options.out_channels() : layer.linear->options.out_features();
    if (options_.weights) q.weight = make_quantizer_factory(*options_.weights, QuantizerRole::weight, channels);
    if (options_.inputs) q.input = make_quantizer_factory(*options_.inputs, QuantizerRole::activation);
    if (options_.outputs) q.output = make_quantizer_factory(*options_.outputs, QuantizerRole::activation);
    if (layer.conv) {
      layer.conv->set_quantizers(q);
      if (layer.bn) layer.conv->fold_batch_norm(layer.bn);
    } else {
      layer.linear->set_quantizers(q);
    }
  }
  prepared_ = true;
}

void Quantization::apply_step_state(const TrainContext& ctx) {
  const int64_t spe = ctx.steps_per_epoch;
  const bool enabled = ctx.step >= spec_.schedule.begin(spe);
  auto step_of = [&](double epoch) { return static_cast<int64_t>(std::llround(epoch * static_cast<double>(spe))); };
  const bool observing = options_.freeze_observers_epoch < 0 || ctx.step < step_of(options_.freeze_observers_epoch);
  for (auto& layer : layers_) {
    const auto& slots = layer.conv ? layer.conv->quantizers() : layer.linear->quantizers();
    for (auto* slot : {slots.weight, slots.input, slots.output}) {
      if (auto* q = as_quantizer(slot)) {
        q->set_enabled(enabled);
        q->set_observing(observing);
      }
    }
  }
  if (options_.freeze_bn_epoch >= 0 && ctx.step >= step_of(options_.freeze_bn_epoch))
    for (auto& bn : all_bns_) bn->eval();
}

void Quantization::on_train_begin(TrainContext& ctx) {
  apply_step_state(ctx);
  if (!options_.fold_bn) return;
  std::string unfolded;
  for (const auto& layer : layers_)
    if (layer.conv && !layer.bn) unfolded += (unfolded.empty() ? "" : ", ") + layer.path;
  if (!unfolded.empty()) ctx.log(spec_.method + ": fold_bn: no BatchNorm2d follows " + unfolded + " (not folded)");
}

void Quantization::on_step_begin(TrainContext& ctx) { apply_step_state(ctx); }

void Quantization::on_after_optimizer_step(TrainContext& ctx) {
  if (!clips_weights(options_.weights) || ctx.step < spec_.schedule.begin(ctx.steps_per_epoch)) return;
  torch::NoGradGuard no_grad;
  for (auto& layer : layers_) (layer.conv ? layer.conv->weight : layer.linear->weight).clamp_(-1.0, 1.0);
}

}  // namespace shrink::quant
