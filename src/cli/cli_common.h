#pragma once
// What the `shrink` subcommands share: finding checkpoints and recipes, rebuilding a run's
// experiment. Each larger subcommand lives in its own file and is added to the app by main.cpp:
//
//   Subcommand add_foo_command(CLI::App& app);   // declares options; run() does the work
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "shrink/train/experiment.h"

namespace shrink::cli {

/// A subcommand and what runs when it was chosen (returns the exit status).
struct Subcommand {
  CLI::App* command = nullptr;
  std::function<int()> run;
};

bool is_recipe_file(const std::string& path);
/// A checkpoint file, or the last.pt of a run directory (UserError when neither).
std::string checkpoint_in(const std::string& path);
/// The resolved recipe of a checkpoint, with overrides applied on top.
ConfigNode recipe_of_checkpoint(const std::string& checkpoint, const std::vector<std::string>& overrides);
/// Builds an experiment, restoring a checkpoint when given (methods' state, structure, weights).
Experiment load_experiment(const ConfigNode& recipe, const std::string& checkpoint, DataNeeds needs);
/// A recipe file or a run directory / checkpoint: the recipe and the checkpoint ("" for a recipe).
std::pair<ConfigNode, std::string> recipe_or_run(const std::string& target, const std::vector<std::string>& overrides);
/// The model summary table and JSON of an experiment against its dense model.
std::pair<std::string, std::string> summary_of(Experiment& e);

}  // namespace shrink::cli

namespace shrink::cli {
/// `shrink sensitivity` (sensitivity_command.cpp).
Subcommand add_sensitivity_command(CLI::App& app);
/// `shrink export` (export_command.cpp).
Subcommand add_export_command(CLI::App& app);
}  // namespace shrink::cli

namespace shrink::cli {
/// `shrink train --nproc N` (launch.cpp): runs this program N times with RANK, LOCAL_RANK,
/// WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT set, forwards SIGINT/SIGTERM, and
/// returns 0 when every rank succeeded, else the failed rank's status after naming it.
int launch_local_workers(int64_t nproc, char** argv);
}  // namespace shrink::cli
