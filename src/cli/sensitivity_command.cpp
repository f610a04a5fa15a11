// `shrink sensitivity TARGET`: prune each target layer alone at each level, evaluate on the
// test split, print the table, write sensitivity.csv and sensitivity.png.
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_common.h"
#include "shrink/core/error.h"
#include "shrink/pruning/sensitivity.h"

namespace fs = std::filesystem;

namespace shrink::cli {

namespace {

struct SensitivityArgs {
  std::string target;
  std::string levels = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9";
  std::vector<std::string> targets;
  std::string criterion = "magnitude";
  int64_t batches = 0;
  std::string output;
  std::vector<std::string> overrides;
  bool json = false;
};

/// "0.1,0.5, 0.9" -> {0.1, 0.5, 0.9}; UserError naming --levels and the piece that is no number.
std::vector<double> parse_levels(const std::string& text) {
  std::vector<double> levels;
  std::stringstream in(text);
  std::string piece;
  while (std::getline(in, piece, ',')) {
    auto first = piece.find_first_not_of(" \t"), last = piece.find_last_not_of(" \t");
    std::string p = first == std::string::npos ? "" : piece.substr(first, last - first + 1);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(p, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (p.empty() || used != p.size()) throw UserError("--levels: '" + p + "' is not a number (in '" + text + "')");
    levels.push_back(v);
  }
  pruning::validate_levels(levels, "--levels");
  return levels;
}

int run(const SensitivityArgs& a) {
  auto levels = parse_levels(a.levels);
  auto criterion = pruning::parse_criterion(a.criterion, "--criterion");
  std::vector<std::string> targets = a.targets.empty() ? std::vector<std::string>{"*"} : a.targets;

  auto [recipe, checkpoint] = recipe_or_run(a.target, a.overrides);
  auto e = load_experiment(recipe, checkpoint, DataNeeds::TestOnly);
  if (checkpoint.empty() && !e.recipe.model.has("weights"))
    std::cerr << "warning: " << a.target
              << ": a recipe without model.weights: the model is untrained (give a run directory, or set "
                 "model.weights)\n";
  pruning::sensitivity_layers(*e.model, targets, "--targets");  // unmatched globs fail before any evaluation

  std::string output = a.output;
  if (output.empty())
    output = checkpoint.empty() ? (fs::path("runs") / "sensitivity" / e.recipe.name).string()
                                : (fs::path(checkpoint).parent_path() / "sensitivity").string();

  pruning::SensitivityOptions options;
  options.levels = levels;
  options.targets = targets;
  options.criterion = criterion;
  options.max_batches = a.batches;
  const bool tty = isatty(STDERR_FILENO);
  auto progress = [tty](const pruning::SensitivityRow& row, int64_t done, int64_t total) {
    if (!tty) return;
    std::cerr << fmt::format("\r\033[K[{}/{}] {} {:g}: top-1 {:.2f}%", done, total, row.layer, row.level, row.top1)
              << (done == total ? "\n" : "") << std::flush;
  };
  auto rows = pruning::run_sensitivity(e, options, progress);

  const auto csv = (fs::path(output) / "sensitivity.csv").string();
  const auto png = (fs::path(output) / "sensitivity.png").string();
  pruning::write_sensitivity_csv(csv, rows);
  pruning::write_sensitivity_plot(
      png, rows, fmt::format("{}: top-1 with one layer pruned ({})", e.recipe.name, pruning::criterion_name(criterion)));

  if (a.json) {
    nlohmann::json j_rows = nlohmann::json::array();
    for (const auto& r : rows)
      j_rows.push_back({{"layer", r.layer},
                        {"parameters", r.parameters},
                        {"level", r.level},
                        {"pruned", r.pruned},
                        {"top1", r.top1},
                        {"top5", r.top5},
                        {"loss", r.loss},
                        {"examples", r.examples}});
    nlohmann::json j = {{"target", a.target},
                        {"checkpoint", checkpoint},
                        {"criterion", pruning::criterion_name(criterion)},
                        {"csv", csv},
                        {"plot", png},
                        {"rows", j_rows}};
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{} ({} criterion, {})\n{}wrote {} and {}\n", checkpoint.empty() ? a.target : checkpoint,
               pruning::criterion_name(criterion),
               a.batches > 0 ? fmt::format("first {} test batches", a.batches) : std::string("whole test split"),
               pruning::sensitivity_table(rows), csv, png);
  }
  return 0;
}

}  // namespace

Subcommand add_sensitivity_command(CLI::App& app) {
  auto args = std::make_shared<SensitivityArgs>();
  Subcommand s;
  s.command = app.add_subcommand(
      "sensitivity", "Prune each layer alone at each sparsity level and evaluate: table, sensitivity.csv, sensitivity.png");
  auto* c = s.command;
  c->add_option("target", args->target, "Run directory, checkpoint, or recipe (then model.weights gives the weights)")
      ->required();
  c->add_option("--levels", args->levels, "Comma-separated sparsity levels in [0, 1), increasing")
      ->default_str(args->levels);
  c->add_option("--targets", args->targets,
                "Globs over Conv2d/Linear layer paths or weight names (repeatable or comma-separated; default all)")
      ->delimiter(',')
      ->allow_extra_args(false);
  c->add_option("--criterion", args->criterion,
                "magnitude (smallest |w|) or l1_filter (output filters of smallest L1 norm, zeroed)")
      ->default_str(args->criterion);
  c->add_option("--batches", args->batches, "Evaluate on the first N test batches only (default: all)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  c->add_option("--output", args->output,
                "Folder for sensitivity.csv and .png (default: RUN/sensitivity, or runs/sensitivity/<recipe name>)");
  c->add_option("--set", args->overrides, "Override a recipe key (repeatable)")->allow_extra_args(false);
  c->add_flag("--json", args->json, "Print the rows as JSON");
  s.run = [args] { return run(*args); };
  return s;
}

}  // namespace shrink::cli
