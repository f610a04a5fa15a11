// `shrink export RUN_DIR_OR_CHECKPOINT --format compressed|int8 --output FILE`: writes the model in
// Deep Compression's storage format (include/shrink/sharing/compressed_model.h) or as an int8
// model for LibTorch's quantized CPU kernels (include/shrink/quant/int8_model.h).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <memory>

#include "cli_common.h"
#include "shrink/core/error.h"
#include "shrink/quant/int8_model.h"
#include "shrink/sharing/compressed_model.h"

namespace shrink::cli {
namespace {

struct ExportArgs {
  std::string target, format, output;
  std::vector<std::string> overrides;
  int conv_bits = 8, fc_bits = 5;
  int64_t calibration_batches = 8;
};

std::string rate_text(double v) { return std::isfinite(v) ? fmt::format("{:.2f}x", v) : std::string("inf"); }

int run_export_int8(const ExportArgs& a, const std::string& checkpoint) {
  quant::Int8Options options;
  options.calibration_batches = a.calibration_batches;
  auto r = quant::export_int8_model(checkpoint, a.output, a.overrides, options);
  fmt::print("wrote {}: {} bytes; {} layer{} int8 ({} int8 weights, engine {}), {} float\n", r.path, r.file_bytes,
             r.converted.size(), r.converted.size() == 1 ? "" : "s", r.int8_weights, r.engine, r.float_layers.size());
  if (!r.float_layers.empty()) fmt::print("float layers (no quantizers): {}\n", fmt::join(r.float_layers, ", "));
  fmt::print("output ranges calibrated on {} examples\n", r.calibration_examples);
  fmt::print("float32 parameters: {} bytes ({} parameters); compression rate {}\n", r.float_bytes, r.parameters,
             rate_text(r.rate()));
  if (r.method_state_bytes)
    fmt::print("includes {} bytes of method state (the model's structure depends on it)\n", r.method_state_bytes);
  return 0;
}

int run_export(const ExportArgs& a) {
  const std::vector<std::string> formats = {"compressed", "int8"};
  if (a.format != "compressed" && a.format != "int8") {
    auto near = nearest_name(a.format, formats);
    throw UserError("export: unknown --format '" + a.format + "'" +
                    (near.empty() ? "" : " (did you mean '" + near + "'?)") + "; formats: compressed, int8");
  }
  if (is_recipe_file(a.target))
    throw UserError("export: '" + a.target + "' is a recipe; export takes a run directory or a checkpoint");
  const auto checkpoint = checkpoint_in(a.target);
  if (a.format == "int8") return run_export_int8(a, checkpoint);
  sharing::DeepCompressionOptions options;
  options.conv_index_bits = a.conv_bits;
  options.fc_index_bits = a.fc_bits;
  auto r = sharing::export_compressed_model(checkpoint, a.output, a.overrides, options);
  fmt::print("wrote {}: {} bytes ({} coded weights, {} raw tensors)\n", r.path, r.file_bytes, r.coded_tensors,
             r.raw_tensors);
  fmt::print("dense float32 parameters: {} bytes ({} parameters); compression rate {}\n", r.dense_bytes,
             r.parameters, rate_text(r.rate()));
  if (r.original_parameters != r.parameters)
    fmt::print("against the recipe's model before compression ({} parameters, {} bytes): {}\n", r.original_parameters,
               r.original_parameters * 4, rate_text(r.original_rate()));
  fmt::print("Deep Compression accounting (index bits conv {}, fc {}): {} before Huffman coding, {} after\n",
             a.conv_bits, a.fc_bits, rate_text(r.storage.rate()), rate_text(r.storage.huffman_rate()));
  if (r.method_state_bytes)
    fmt::print("includes {} bytes of method state ({}: the model's structure depends on it)\n", r.method_state_bytes,
               fmt::join(r.method_state_of, ", "));
  return 0;
}

}  // namespace

Subcommand add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  Subcommand s;
  s.command = app.add_subcommand("export", "Write a trained model in a compressed storage format or as an int8 model");
  s.command->add_option("target", args->target, "Run directory or checkpoint file")->required();
  s.command->add_option("--format", args->format,
                        "Output format: compressed (Deep Compression storage) or int8 (quantized kernels for a "
                        "quantization-aware trained model; eval/summary/bench run it)")
      ->required();
  s.command->add_option("--output", args->output, "Output file")->required();
  s.command->add_option("--set", args->overrides, "Override a recipe key (repeatable)")->allow_extra_args(false);
  s.command->add_option("--index-bits-conv", args->conv_bits, "compressed: relative index bits of convolution weights")
      ->check(CLI::Range(1, 16));
  s.command->add_option("--index-bits-fc", args->fc_bits, "compressed: relative index bits of fully connected weights")
      ->check(CLI::Range(1, 16));
  s.command->add_option("--calibration-batches", args->calibration_batches,
                        "int8: training batches run to calibrate the layers' output ranges")
      ->check(CLI::Range(1, 100000));
  s.run = [args] { return run_export(*args); };
  return s;
}

}  // namespace shrink::cli
