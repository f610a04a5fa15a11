#include "shrink/report/summary.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "shrink/nn/layer.h"

namespace shrink {
namespace {

/// "torch::nn::BatchNorm2dImpl" -> "BatchNorm2d", "shrink::nn::LinearImpl" -> "Linear".
std::string short_type(const torch::nn::Module& module) {
  std::string name = module.name();
  auto template_start = name.find('<');
  auto colon = name.rfind("::", template_start == std::string::npos ? std::string::npos : template_start);
  if (colon != std::string::npos) name = name.substr(colon + 2);
  const std::string suffix = "Impl";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    name.resize(name.size() - suffix.size());
  return name;
}

std::string shape_text(at::IntArrayRef sizes) {
  std::string s;
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "x" : "") + std::to_string(sizes[i]);
  return s.empty() ? "scalar" : s;
}

double ratio(double num, double den) {
  if (den == 0) return num == 0 ? 1.0 : std::numeric_limits<double>::infinity();
  return num / den;
}

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

std::string rate_text(double v) { return std::isfinite(v) ? fmt::format("{:.2f}x", v) : std::string("inf"); }

std::string bits_text(int64_t bits) {
  const double bytes = double(bits) / 8.0;
  if (bytes >= 1024.0 * 1024.0) return fmt::format("{:.2f} MiB", bytes / (1024.0 * 1024.0));
  if (bytes >= 1024.0) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  return fmt::format("{:.0f} B", bytes);
}

std::string table(const ModelSummary& s, const SummaryComparison* cmp) {
  size_t name_w = 5, type_w = 4, shape_w = 5;
  for (const auto& l : s.layers) {
    name_w = std::max(name_w, (l.name.empty() ? std::string("(root)") : l.name).size());
    type_w = std::max(type_w, l.type.size());
    shape_w = std::max(shape_w, l.shape.size());
  }
  std::string out;
  std::string sample;
  for (size_t i = 0; i < s.sample_shape.size(); ++i) sample += (i ? "x" : "") + std::to_string(s.sample_shape[i]);
  out += fmt::format("Input {} (MACs per sample)\n", sample);
  const std::string header = fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12}  {:>12}  {:>8}  {:>5}  {:>14}  {:>14}",
                                         "layer", name_w, "type", type_w, "shape", shape_w, "parameters",
                                         "nonzero", "sparsity", "bits", "stored bits", "MACs");
  const std::string rule(header.size(), '-');
  out += header + "\n" + rule + "\n";
  for (const auto& l : s.layers) {
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12}  {:>12}  {:>7.2f}%  {:>5.4g}  {:>14}  {:>14}\n",
                       l.name.empty() ? std::string("(root)") : l.name, name_w, l.type, type_w, l.shape,
                       shape_w, l.parameters, l.nonzero, 100.0 * l.sparsity, l.bits_per_weight,
                       l.stored_bits, l.macs);
  }
  out += rule + "\n";
  out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12}  {:>12}  {:>7.2f}%  {:>5}  {:>14}  {:>14}\n", "total", name_w,
                     "", type_w, "", shape_w, s.parameters, s.nonzero, 100.0 * s.sparsity(), "", s.stored_bits,
                     s.macs);
  out += fmt::format("Storage (dense format): {}\n", bits_text(s.stored_bits));
  if (cmp) {
    out += fmt::format("Compression rate a/a* (dense parameters / nonzero parameters): {}\n",
                       rate_text(cmp->compression_rate));
    out += fmt::format("Index space saving (a - a*)/a*: {}\n",
                       std::isfinite(cmp->index_space_saving) ? fmt::format("{:.2f}", cmp->index_space_saving)
                                                              : std::string("inf"));
    out += fmt::format("Storage rate (dense stored bits / stored bits): {}\n", rate_text(cmp->storage_rate));
    out += fmt::format("MAC reduction (dense MACs / MACs): {}\n", rate_text(cmp->mac_reduction));
    out += fmt::format("Sparsity: {:.2f}%\n", 100.0 * cmp->sparsity);
  }
  return out;
}

nlohmann::json json(const ModelSummary& s) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : s.layers) {
    layers.push_back({{"name", l.name},
                      {"type", l.type},
                      {"shape", l.shape},
                      {"parameters", l.parameters},
                      {"nonzero", l.nonzero},
                      {"sparsity", l.sparsity},
                      {"bits_per_weight", l.bits_per_weight},
                      {"stored_bits", l.stored_bits},
                      {"macs", l.macs}});
  }
  return {{"sample_shape", s.sample_shape},
          {"layers", layers},
          {"total",
           {{"parameters", s.parameters},
            {"nonzero", s.nonzero},
            {"sparsity", s.sparsity()},
            {"stored_bits", s.stored_bits},
            {"macs", s.macs}}}};
}

nlohmann::json json(const SummaryComparison& c) {
  return {{"compression_rate", number(c.compression_rate)},
          {"index_space_saving", number(c.index_space_saving)},
          {"storage_rate", number(c.storage_rate)},
          {"mac_reduction", number(c.mac_reduction)},
          {"sparsity", c.sparsity}};
}

}  // namespace

ModelSummary summarize(const ModelPtr& model, const std::vector<int64_t>& sample_shape) {
  TORCH_CHECK(model, "summarize: null model");
  ModelSummary summary;
  summary.sample_shape = sample_shape;

  // One forward in eval mode, restoring every module's own mode afterwards (parents first,
  // since train() recurses into children).
  auto modules = model->modules(/*include_self=*/true);
  std::vector<bool> was_training;
  was_training.reserve(modules.size());
  for (const auto& m : modules) was_training.push_back(m->is_training());
  {
    torch::NoGradGuard no_grad;
    auto options = torch::TensorOptions().dtype(torch::kFloat32);
    auto params = model->parameters();
    if (!params.empty()) options = options.device(params.front().device());
    std::vector<int64_t> shape{1};
    shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
    model->eval();
    try {
      model->forward(torch::zeros(shape, options));
    } catch (...) {
      for (size_t i = 0; i < modules.size(); ++i) modules[i]->train(was_training[i]);
      throw;
    }
  }
  for (size_t i = 0; i < modules.size(); ++i) modules[i]->train(was_training[i]);

  for (const auto& item : model->named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    const auto& module = item.value();
    auto own = module->named_parameters(/*recurse=*/false);
    if (own.is_empty()) continue;
    LayerSummary row;
    row.name = item.key();
    row.type = short_type(*module);
    const auto* costed = dynamic_cast<const nn::CostedLayer*>(module.get());
    row.bits_per_weight = costed ? costed->bits_per_weight() : 32.0;
    row.macs = costed ? costed->macs_per_sample() : 0;
    double weight_bits = 0;
    int64_t other_elements = 0;
    for (const auto& p : own) {
      const auto& t = p.value();
      if (!t.defined()) continue;
      const int64_t n = t.numel();
      row.parameters += n;
      row.nonzero += n ? t.count_nonzero().item<int64_t>() : 0;
      if (p.key() == "weight") {
        weight_bits += double(n) * row.bits_per_weight;
        row.shape = shape_text(t.sizes());
      } else {
        other_elements += n;
      }
    }
    if (row.shape.empty()) row.shape = shape_text(own.values().front().sizes());
    row.stored_bits = std::llround(weight_bits) + other_elements * 32;
    row.sparsity = row.parameters ? 1.0 - double(row.nonzero) / double(row.parameters) : 0.0;
    summary.parameters += row.parameters;
    summary.nonzero += row.nonzero;
    summary.stored_bits += row.stored_bits;
    summary.macs += row.macs;
    summary.layers.push_back(std::move(row));
  }
  return summary;
}

SummaryComparison compare(const ModelSummary& dense, const ModelSummary& compressed) {
  SummaryComparison c;
  c.compression_rate = ratio(double(dense.parameters), double(compressed.nonzero));
  c.index_space_saving = ratio(double(dense.parameters - compressed.nonzero), double(compressed.nonzero));
  if (dense.parameters == compressed.nonzero) c.index_space_saving = 0;
  c.storage_rate = ratio(double(dense.stored_bits), double(compressed.stored_bits));
  c.mac_reduction = ratio(double(dense.macs), double(compressed.macs));
  c.sparsity = compressed.sparsity();
  return c;
}

std::string summary_table(const ModelSummary& summary) { return table(summary, nullptr); }
std::string summary_table(const ModelSummary& summary, const SummaryComparison& comparison) {
  return table(summary, &comparison);
}

std::string summary_json(const ModelSummary& summary, int indent) { return json(summary).dump(indent); }
std::string summary_json(const ModelSummary& summary, const SummaryComparison& comparison, int indent) {
  auto j = json(summary);
  j["comparison"] = json(comparison);
  return j.dump(indent);
}

}  // namespace shrink
