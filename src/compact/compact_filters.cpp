#include "shrink/compact/compact_filters.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "shrink/compression/method_errors.h"
#include "shrink/core/error.h"
#include "shrink/nn/compact_conv.h"

namespace shrink::compact {

namespace {

const std::vector<std::string>& compact_form_names() {
  static const std::vector<std::string> names = {"depthwise_separable", "fire", "crelu", "mba", "cyclic"};
  return names;
}

int64_t parameter_count(torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace

OptionSchema<CompactFilters::Options> CompactFilters::schema() {
  OptionSchema<Options> s;
  s.add("form", &Options::form,
        "The layers' new form: depthwise_separable (k x k depthwise, BN, ReLU, 1x1 pointwise; MobileNet), fire "
        "(1x1 squeeze, ReLU, concat of 1x1 and k x k expands; SqueezeNet), crelu (out/2 filters and their "
        "negations; Shang et al. 2016), mba (out/K filters with K learned biases each; Li et al. 2016) or cyclic "
        "(out/4 filters and their 90/180/270-degree rotations; Dieleman et al. 2016).")
      .choices(compact_form_names());
  s.add("squeeze_ratio", &Options::squeeze_ratio,
        "fire: squeeze channels = max(1, round(out_channels * squeeze_ratio)).")
      .range(0, 1);
  s.add("expand1x1_fraction", &Options::expand1x1_fraction,
        "fire: channels of the 1x1 expand = round(out_channels * fraction), clamped to [1, out_channels - 1]; the "
        "k x k expand gets the rest.")
      .range(0, 1);
  s.add("biases", &Options::biases, "mba: biases per filter (K); must divide each layer's output channels.").min(1);
  return s;
}

CompactFilters::CompactFilters(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  const auto& names = compact_form_names();
  if (std::find(names.begin(), names.end(), options_.form) == names.end())
    fail_at_option(spec_, "form", "must be one of " + joined(names) + " (got '" + options_.form + "')");
  kind_ = nn::conv_form_kind(options_.form);
  if (options_.biases < 1) fail_at_option(spec_, "biases", fmt::format("must be >= 1 (got {})", options_.biases));

  const auto& s = spec_.schedule;
  const std::string no_schedule = spec_.method + " builds the layers before training (it takes no schedule)";
  if (s.start_epoch > 0) fail_at_option(spec_, "start_epoch", no_schedule);
  if (s.start_step > 0) fail_at_option(spec_, "start_step", no_schedule);
  if (s.end_epoch >= 0) fail_at_option(spec_, "end_epoch", no_schedule);
  if (s.end_step >= 0) fail_at_option(spec_, "end_step", no_schedule);
  if (s.frequency != 1) fail_at_option(spec_, "frequency", no_schedule);

  if (spec_.where.valid() && spec_.where.is_map()) {
    for (const char* key : {"squeeze_ratio", "expand1x1_fraction"})
      if (kind_ != nn::ConvFormKind::fire && spec_.where.has(key))
        fail_at_option(spec_, key, "is used only with form: fire (form is " + options_.form + ")");
    if (kind_ != nn::ConvFormKind::mba && spec_.where.has("biases"))
      fail_at_option(spec_, "biases", "is used only with form: mba (form is " + options_.form + ")");
  }
}

nn::ConvForm CompactFilters::form_for(const nn::Conv2dOptions& layer) const {
  const int64_t out = layer.out_channels();
  nn::ConvForm form;
  form.kind = kind_;
  if (kind_ == nn::ConvFormKind::fire) {
    const int64_t squeeze = std::max<int64_t>(1, std::llround(static_cast<double>(out) * options_.squeeze_ratio));
    const int64_t e1 = std::max<int64_t>(
        1, std::min<int64_t>(std::llround(static_cast<double>(out) * options_.expand1x1_fraction), out - 1));
    form.sizes = {squeeze, e1};
  } else if (kind_ == nn::ConvFormKind::mba) {
    form.sizes = {options_.biases};
  }
  return form;
}

void CompactFilters::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  layers_.clear();
  // Convs inside a composite layer belong to its form, not to the model's structure.
  std::vector<std::string> composite_prefixes, all_convs;
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    if (auto* conv = item.value()->as<nn::Conv2dImpl>()) {
      const bool inner = std::any_of(composite_prefixes.begin(), composite_prefixes.end(),
                                     [&](const std::string& p) { return item.key().rfind(p, 0) == 0; });
      if (inner) continue;
      all_convs.push_back(item.key());
      if (conv->composite()) composite_prefixes.push_back(item.key() + ".");
    }
  for (const auto& [path, module] : target_modules_) {
    auto conv = std::dynamic_pointer_cast<nn::Conv2dImpl>(module);
    if (conv && std::find(all_convs.begin(), all_convs.end(), path) != all_convs.end())
      layers_.emplace_back(path, conv);
  }
  for (size_t i = 0; i < spec_.targets.size(); ++i) {
    const bool any = std::any_of(layers_.begin(), layers_.end(),
                                 [&](const auto& l) { return glob_match(spec_.targets[i], l.first); });
    if (!any)
      fail_at_option(spec_, "targets",
                     "'" + spec_.targets[i] + "' matches no Conv2d layer (" + spec_.method +
                         " rebuilds convolutions); Conv2d layers: " + (all_convs.empty() ? "none" : joined(all_convs)),
                     static_cast<int64_t>(i));
  }
  std::vector<std::string> misfits;
  for (const auto& [path, conv] : layers_) {
    auto options = conv->options;
    options.form(form_for(options));
    const auto why = nn::compact_form_misfit(options);
    if (!why.empty())
      misfits.push_back(fmt::format("{} does not fit {} (Conv2d {} -> {}, kernel {}x{}): {}", options.form().str(),
                                    path, options.in_channels(), options.out_channels(),
                                    (*options.kernel_size())[0], (*options.kernel_size())[1], why));
  }
  if (!misfits.empty()) {
    std::string message;
    for (const auto& m : misfits) message += (message.empty() ? "" : "; ") + m;
    fail_at_option(spec_, "form", message + " (exclude such layers or choose another form)");
  }
}

bool CompactFilters::apply(const std::string& path, nn::Conv2dImpl& layer, const nn::ConvForm& form) {
  const auto current = layer.options.form();
  if (current == form) return false;
  if (!current.dense())
    fail_at_option(spec_, "targets",
                   fmt::format("layer {} is already in form {} (set by another method?); cannot make it {}", path,
                               current.str(), form.str()));
  if (layer.masked())
    fail_at_option(spec_, "targets",
                   fmt::format("layer {} has a pruning mask (added by a method listed before {}); a layer cannot be "
                               "pruned and rebuilt in one recipe",
                               path, spec_.method));
  const int64_t before = parameter_count(layer);
  const auto device = layer.weight.device();
  try {
    layer.set_form(form);
  } catch (const c10::Error& e) {
    fail_at_option(spec_, "form",
                   fmt::format("cannot set {} on layer {}: {}", form.str(), path, e.what_without_backtrace()));
  }
  layer.to(device);
  changes_.push_back(fmt::format("{}: {} -> {}: {} -> {} parameters{}", spec_.method, path, form.str(), before,
                                 parameter_count(layer), loaded_ ? " (restored from the checkpoint)" : ""));
  return true;
}

void CompactFilters::prepare_model(TrainContext& ctx) {
  if (loaded_) {
    auto modules = ctx.model->named_modules("", /*include_self=*/false);
    for (const auto& [path, form] : forms_) {
      auto* found = modules.find(path);
      auto layer = found ? std::dynamic_pointer_cast<nn::Conv2dImpl>(*found) : nullptr;
      if (!layer)
        throw UserError(fmt::format("{}: the checkpoint set form {} on '{}', which is not a Conv2d of the model",
                                    spec_.method, form.str(), path));
      apply(path, *layer, form);
    }
    return;
  }
  forms_.clear();
  for (auto& [path, layer] : layers_) {
    const auto form = form_for(layer->options);
    apply(path, *layer, form);
    forms_.emplace_back(path, form);
  }
}

void CompactFilters::on_train_begin(TrainContext& ctx) {
  for (const auto& line : changes_) ctx.log(line);
  changes_.clear();
}

void CompactFilters::save_state(torch::serialize::OutputArchive& archive) const {
  archive.write("layers", torch::tensor(static_cast<int64_t>(forms_.size())));
  for (size_t i = 0; i < forms_.size(); ++i) {
    const auto key = "layer" + std::to_string(i);
    archive.write(key + "_path", c10::IValue(forms_[i].first));
    archive.write(key + "_form", c10::IValue(forms_[i].second.str()));
  }
}

void CompactFilters::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  if (!archive.try_read("layers", t)) return;
  const int64_t n = t.item<int64_t>();
  auto read_string = [&](const std::string& key) {
    c10::IValue v;
    if (!archive.try_read(key, v) || !v.isString())
      throw UserError(spec_.method + ": checkpoint state has no '" + key + "'");
    return v.toStringRef();
  };
  std::vector<std::pair<std::string, nn::ConvForm>> forms;
  for (int64_t i = 0; i < n; ++i) {
    const auto key = "layer" + std::to_string(i);
    const auto path = read_string(key + "_path");
    const auto text = read_string(key + "_form");
    try {
      forms.emplace_back(path, nn::ConvForm::parse(text));
    } catch (const std::invalid_argument& e) {
      throw UserError(spec_.method + ": checkpoint state for layer " + path + ": " + e.what());
    }
  }
  forms_ = std::move(forms);
  loaded_ = true;
}

}  // namespace shrink::compact
