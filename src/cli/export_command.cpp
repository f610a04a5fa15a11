// `shrink export RUN_DIR_OR_CHECKPOINT --format compressed --output FILE`: writes the model in
// Deep Compression's storage format (include/shrink/sharing/compressed_model.h).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <memory>

#include "cli_common.h"
#include "shrink/core/error.h"
#include "shrink/sharing/compressed_model.h"

namespace shrink::cli {
namespace {

struct ExportArgs {
  std::string target, format, output;
  std::vector<std::string> overrides;
  int conv_bits = 8, fc_bits = 5;
};

std::string rate_text(double v) { return std::isfinite(v) ? fmt::format("{:.2f}x", v) : std::string("inf"); }

int run_export(const ExportArgs& a) {
  const std::vector<std::string> formats = {"compressed"};
  if (a.format != "compressed") {
    auto near = nearest_name(a.format, formats);
    throw UserError("export: unknown --format '" + a.format + "'" +
                    (near.empty() ? "" : " (did you mean '" + near + "'?)") + "; formats: compressed");
  }
  if (is_recipe_file(a.target))
    throw UserError("export: '" + a.target + "' is a recipe; export takes a run directory or a checkpoint");
  const auto checkpoint = checkpoint_in(a.target);
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
  s.command = app.add_subcommand("export", "Write a trained model in a compressed storage format");
  s.command->add_option("target", args->target, "Run directory or checkpoint file")->required();
  s.command->add_option("--format", args->format, "Output format: compressed (Deep Compression storage)")
      ->required();
  s.command->add_option("--output", args->output, "Output file")->required();
  s.command->add_option("--set", args->overrides, "Override a recipe key (repeatable)")->allow_extra_args(false);
  s.command->add_option("--index-bits-conv", args->conv_bits, "Relative index bits of convolution weights")
      ->check(CLI::Range(1, 16));
  s.command->add_option("--index-bits-fc", args->fc_bits, "Relative index bits of fully connected weights")
      ->check(CLI::Range(1, 16));
  s.run = [args] { return run_export(*args); };
  return s;
}

}  // namespace shrink::cli
