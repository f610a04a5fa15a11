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
  const std::string header =
      fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12}  {:>12}  {:>8}  {:>5}  {:>14}  {:>14}  {:>12}  {:>12}", "layer",
                  name_w, "type", type_w, "shape", shape_w, "parameters", "nonzero", "sparsity", "bits",
                  "stored bits", "MACs", "DC bits", "Huffman bits");
  const std::string rule(header.size(), '-');
  out += header + "\n" + rule + "\n";
  for (const auto& l : s.layers) {
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12}  {:>12}  {:>7.2f}%  {:>5.4g}  {:>14}  {:>14}  {:>12}  {:>12}\n",
                       l.name.empty() ? std::string("(root)") : l.name, name_w, l.type, type_w, l.shape,
                       shape_w, l.parameters, l.nonzero, 100.0 * l.sparsity, l.bits_per_weight,
                       l.stored_bits, l.macs, l.deep_compression.bits(), l.deep_compression.huffman_bits());
  }
  out += rule + "\n";
  out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>12}  {:>12}  {:>7.2f}%  {:>5}  {:>14}  {:>14}  {:>12}  {:>12}\n",
                     "total", name_w, "", type_w, "", shape_w, s.parameters, s.nonzero, 100.0 * s.sparsity(), "",
                     s.stored_bits, s.macs, s.deep_compression_bits, s.huffman_bits);
  out += fmt::format("Storage (dense format): {}\n", bits_text(s.stored_bits));
  const auto& dc = s.deep_compression_options;
  out += fmt::format(
      "Deep Compression storage (relative indices: {} bits conv, {} bits fc; codebook up to {} values): {}, "
      "rate {} against 32-bit parameters\n",
      dc.conv_index_bits, dc.fc_index_bits, dc.max_codebook, bits_text(s.deep_compression_bits),
      rate_text(s.deep_compression_rate()));
  out += fmt::format("  with Huffman coding of value indices and gaps: {}, rate {}\n", bits_text(s.huffman_bits),
                     rate_text(s.huffman_rate()));
  if (cmp) {
    out += fmt::format("Compression rate a/a* (dense parameters / nonzero parameters): {}\n",
                       rate_text(cmp->compression_rate));
    out += fmt::format("Index space saving (a - a*)/a*: {}\n",
                       std::isfinite(cmp->index_space_saving) ? fmt::format("{:.2f}", cmp->index_space_saving)
                                                              : std::string("inf"));
    out += fmt::format("Storage rate (dense stored bits / stored bits): {}\n", rate_text(cmp->storage_rate));
    out += fmt::format("MAC reduction (dense MACs / MACs): {}\n", rate_text(cmp->mac_reduction));
    out += fmt::format("Sparsity: {:.2f}%\n", 100.0 * cmp->sparsity);
    out += fmt::format("Deep Compression vs dense model (dense 32-bit bits / stored bits): {}, with Huffman {}\n",
                       rate_text(cmp->deep_compression_rate), rate_text(cmp->huffman_rate));
  }
  return out;
}

nlohmann::json json(const sharing::LayerStorage& l) {
  const auto& w = l.coded;
  return {{"weight", l.weight},
          {"index_bits", w.index_bits},
          {"entries", w.entries},
          {"filler", w.filler},
          {"codebook_size", w.codebook_size},
          {"value_bits", w.value_bits},
          {"index_storage_bits", w.index_storage_bits},
          {"value_storage_bits", w.value_storage_bits},
          {"codebook_bits", w.codebook_bits},
          {"huffman_index_bits", w.huffman_index_bits},
          {"huffman_value_bits", w.huffman_value_bits},
          {"other_bits", l.other_parameters * 32},
          {"bits", l.bits()},
          {"huffman_bits", l.huffman_bits()}};
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
                      {"macs", l.macs},
                      {"deep_compression", json(l.deep_compression)}});
  }
  return {{"sample_shape", s.sample_shape},
          {"layers", layers},
          {"total",
           {{"parameters", s.parameters},
            {"nonzero", s.nonzero},
            {"sparsity", s.sparsity()},
            {"stored_bits", s.stored_bits},
            {"macs", s.macs},
            {"deep_compression_bits", s.deep_compression_bits},
            {"huffman_bits", s.huffman_bits},
            {"deep_compression_rate", number(s.deep_compression_rate())},
            {"huffman_rate", number(s.huffman_rate())}}},
          {"deep_compression_options",
           {{"conv_index_bits", s.deep_compression_options.conv_index_bits},
            {"fc_index_bits", s.deep_compression_options.fc_index_bits},
            {"max_codebook", s.deep_compression_options.max_codebook}}}};
}

nlohmann::json json(const SummaryComparison& c) {
  return {{"compression_rate", number(c.compression_rate)},
          {"index_space_saving", number(c.index_space_saving)},
          {"storage_rate", number(c.storage_rate)},
          {"mac_reduction", number(c.mac_reduction)},
          {"sparsity", c.sparsity},
          {"deep_compression_rate", number(c.deep_compression_rate)},
          {"huffman_rate", number(c.huffman_rate)}};
}

}  // namespace

double ModelSummary::deep_compression_rate() const { return ratio(double(parameters) * 32, double(deep_compression_bits)); }
double ModelSummary::huffman_rate() const { return ratio(double(parameters) * 32, double(huffman_bits)); }

ModelSummary summarize(const ModelPtr& model, const std::vector<int64_t>& sample_shape,
                       const sharing::DeepCompressionOptions& deep_compression) {
  TORCH_CHECK(model, "summarize: null model");
  ModelSummary summary;
  summary.sample_shape = sample_shape;
  summary.deep_compression_options = deep_compression;

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
    row.deep_compression = sharing::layer_storage(*module, row.name, deep_compression);
    summary.deep_compression_bits += row.deep_compression.bits();
    summary.huffman_bits += row.deep_compression.huffman_bits();
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
  c.deep_compression_rate = ratio(double(dense.parameters) * 32, double(compressed.deep_compression_bits));
  c.huffman_rate = ratio(double(dense.parameters) * 32, double(compressed.huffman_bits));
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
