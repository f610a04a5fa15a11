// The `shrink` command: train, eval, summary, bench, list.
// Exit status: 0 success, 2 wrong input (recipe, flag, data file, checkpoint), 3 training
// diverged (non-finite loss), 130 interrupted (checkpoint written), 1 anything else.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/compat.h"
#include "shrink/core/plugin.h"
#include "shrink/data/convert.h"
#include "shrink/data/transforms.h"
#include "shrink/distributed/process_group.h"
#include "shrink/quant/int8_model.h"
#include "shrink/report/bench.h"
#include "shrink/report/summary.h"
#include "shrink/sharing/compressed_model.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/optim.h"
#include "shrink/train/stages.h"
#include "shrink/train/trainer.h"

namespace fs = std::filesystem;
using namespace shrink;

namespace {

using namespace shrink::cli;

// ---------------------------------------------------------------------------------------------

template <class Entry>
void print_entries(const std::string& kind, const std::vector<const Entry*>& entries) {
  fmt::print("{}:\n", kind);
  if (entries.empty()) fmt::print("  (none registered)\n");
  for (const auto* e : entries) fmt::print("  {:<24} {}\n", e->name, e->description);
}

void print_options(const std::vector<OptionDoc>& docs) {
  if (docs.empty()) fmt::print("  (no options)\n");
  for (const auto& d : docs) fmt::print("  {:<22} {:<18} default {:<12} {}\n", d.name, d.type, d.default_value, d.help);
}

std::string markdown_cell(std::string text) {
  for (size_t i = 0; (i = text.find('|', i)) != std::string::npos; i += 2) text.replace(i, 1, "\\|");
  return text;
}

std::string markdown_options(const std::vector<OptionDoc>& docs) {
  std::string out = "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& d : docs)
    out += fmt::format("| `{}` | {} | `{}` | {} |\n", d.name, markdown_cell(d.type), d.default_value,
                       markdown_cell(d.help));
  return out;
}

std::vector<OptionDoc> method_common_docs() {
  return {{"method", "string", "(required)", "Registered method name."},
          {"targets", "list of string", "[\"*\"]", "Globs over module and parameter paths (`*` matches dots too)."},
          {"exclude", "list of string", "[]", "Globs removed from the targets."},
          {"start_epoch", "float", "(start)", "First epoch (fractional) the method acts; or start_step."},
          {"end_epoch", "float", "(end)", "Epoch (fractional) it stops acting; or end_step."},
          {"start_step", "int", "(start)", "First optimizer step it acts."},
          {"end_step", "int", "(end)", "Optimizer step it stops acting."},
          {"frequency", "int", "1", "Act every N steps while active."}};
}

template <class Entry>
std::string markdown_registry(const std::string& title, const std::vector<const Entry*>& entries) {
  std::string out = "## " + title + "\n\n";
  for (const auto* e : entries)
    out += fmt::format("### `{}`\n\n{}.\n\n{}\n", e->name, e->description,
                       e->options.empty() ? std::string("No options.\n") : markdown_options(e->options));
  if (entries.empty()) out += "None built in.\n\n";
  return out;
}

std::string recipe_reference_markdown() {
  std::string out;
  out += "## Top level\n\n" + markdown_options(Recipe::top_level_docs()) + "\n";
  out += "## `train`\n\n" + markdown_options(TrainConfig::schema().docs());
  out += "| `optimizer` | map | `{name: sgd}` | Optimizer: `name` and its options (below). |\n";
  out += "| `lr_schedule` | map | `{name: constant}` | LR schedule: `name` and its options (below). |\n";
  out += "| `param_groups` | list | `[]` | `{match: [globs], weight_decay, lr_scale}`: per-parameter-group options; "
         "a parameter joins the first group that matches. |\n";
  out += markdown_options({stages_doc()}).substr(markdown_options({}).size()) + "\n";
  out += "## Compression entries (keys every method has)\n\n" + markdown_options(method_common_docs()) + "\n";
  out += "## `data` (keys every dataset has)\n\n" + markdown_options(data_common_option_docs());
  out += "| `transforms` | map | `{}` | `train:` and `test:` lists of transforms (below), applied per example in "
         "order; the validation split uses the test list. |\n\n";
  out += markdown_registry("Datasets (`data.name`)", dataset_registry().entries());
  out += markdown_registry("Transforms (`data.transforms.train[i]`, `data.transforms.test[i]`)",
                           transform_registry().entries());
  out += "## `model` (keys every model has)\n\n";
  out += "| key | type | default | meaning |\n|---|---|---|---|\n";
  out += "| `name` | string | (required) | Registered model name (below). |\n";
  out += "| `weights` | string or map | (none) | Initial weights: a file, or `{path, format: auto\\|checkpoint\\|torchscript\\|"
         "state_dict, exclude: [globs], rename: {old_prefix: new_prefix}, strict: true}`; parameters and buffers "
         "are matched by name (include/shrink/models/weights.h). |\n\n";
  out += markdown_registry("Models (`model.name`)", model_registry().entries());
  out += markdown_registry("Optimizers (`train.optimizer.name`)", optimizer_registry().entries());
  out += markdown_registry("LR schedules (`train.lr_schedule.name`)", schedule_registry().entries());
  out += markdown_registry("Compression methods (`compression[i].method`)", method_registry().entries());
  out += markdown_registry("Callbacks (`callbacks[i].name`)", callback_registry().entries());
  return out;
}

int run_list(const std::string& kind, const std::string& name, bool markdown) {
  if (markdown) {
    std::cout << recipe_reference_markdown();
    return 0;
  }
  auto show = [&](const auto& registry, const std::string& k) {
    if (!kind.empty() && kind != k) return false;
    if (!name.empty()) {
      const auto& entry = registry.get(name);
      fmt::print("{} {}: {}\n", k, entry.name, entry.description);
      if (k == "method" || k == "dataset") {
        fmt::print("common keys:\n");
        print_options(k == "method" ? method_common_docs() : data_common_option_docs());
        fmt::print("options:\n");
      }
      print_options(entry.options);
    } else {
      print_entries(k, registry.entries());
    }
    return true;
  };
  bool any = false;
  any |= show(model_registry(), "model");
  any |= show(dataset_registry(), "dataset");
  any |= show(transform_registry(), "transform");
  any |= show(optimizer_registry(), "optimizer");
  any |= show(schedule_registry(), "schedule");
  any |= show(method_registry(), "method");
  any |= show(callback_registry(), "callback");
  if (!any) {
    std::vector<std::string> kinds = {"model", "dataset", "transform", "optimizer", "schedule", "method", "callback"};
    auto near = nearest_name(kind, kinds);
    throw UserError("unknown kind '" + kind + "'" + (near.empty() ? "" : " (did you mean '" + near + "'?)") +
                    "; kinds: model, dataset, transform, optimizer, schedule, method, callback");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef __GLIBC__
  // glibc maps every allocation above its (adaptive) threshold separately and trims the heap top
  // after frees, so LibTorch's activation and gradient buffers were page-faulted in again at every
  // step: pinning the thresholds made a ResNet-20-teacher KD step 404 -> 322 ms and the plain
  // student step 177 -> 160 ms (docs/results/distillation_dynamic.md). Buffers above 32 MiB are
  // still mapped apart; up to 1 GiB of freed heap is kept for the next step.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  CLI::App app{"Shrink: training-time model compression for LibTorch.\n"
               "YAML recipes drive a trainer; compression methods are registered callbacks (`shrink list method`).\n"
               "Data-parallel training: `shrink train RECIPE --nproc N` on one machine, or under torchrun and\n"
               "similar launchers (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); Gloo on CPU."};
  app.set_version_flag("--version", std::string("shrink " SHRINK_VERSION_STRING));
  app.require_subcommand(1);
  app.fallthrough();
  std::vector<std::string> plugins;
  app.add_option("--plugin", plugins, "Shared library that registers methods/models/... (repeatable)")
      ->allow_extra_args(false);

  std::string recipe_path, resume_dir, checkpoint, target, kind, name;
  std::vector<std::string> overrides;
  bool quiet = false, as_json = false, markdown = false;
  int64_t steps = 20, repeats = 20;

  auto* train_cmd = app.add_subcommand("train", "Train a recipe; writes a run directory");
  train_cmd->add_option("recipe", recipe_path, "Recipe YAML file")->required();
  train_cmd->add_option("--set", overrides, "Override a recipe key: key.path[i].key=value (repeatable)")
      ->allow_extra_args(false);
  train_cmd->add_option("--resume", resume_dir, "Continue the run in this directory from its last.pt");
  train_cmd->add_flag("--quiet", quiet, "Print nothing but errors (log.txt is still written)");
  int64_t nproc = 1;
  double dist_timeout = 300;
  train_cmd
      ->add_option("--nproc", nproc,
                   "Train data-parallel in N local processes (c10d Gloo over loopback; the recipe's batch_size is "
                   "the global batch, split across them; recipe `threads: 0` shares the cores among them). With RANK "
                   "and WORLD_SIZE in the environment (torchrun), this process joins that job as its rank instead")
      ->check(CLI::Range(1, 1024));
  train_cmd
      ->add_option("--dist-timeout", dist_timeout,
                   "Seconds a rank waits for the others (joining, every all-reduce) before it fails; a dead or hung "
                   "rank stops the job with an error naming it")
      ->check(CLI::Range(1.0, 86400.0));

  auto* eval_cmd = app.add_subcommand("eval", "Evaluate a checkpoint, a compressed or int8 model file, or a recipe before training: test loss, top-1, top-5");
  eval_cmd->add_option("recipe", recipe_path, "Recipe YAML file, a run directory / checkpoint, or a file from `shrink export --format compressed|int8`")->required();
  eval_cmd->add_option("--checkpoint", checkpoint, "Checkpoint file (default: the run directory's last.pt; with a recipe and no checkpoint, the model as the recipe builds it before training)");
  eval_cmd->add_option("--set", overrides, "Override a recipe key (repeatable)")->allow_extra_args(false);
  eval_cmd->add_flag("--json", as_json, "Print JSON");

  auto* summary_cmd = app.add_subcommand(
      "summary", "Per-layer parameters, sparsity, bits and MACs; compression rate and MAC reduction");
  summary_cmd->add_option("target", target, "Recipe YAML, checkpoint file, run directory, or compressed or int8 model file")->required();
  summary_cmd->add_option("--set", overrides, "Override a recipe key (repeatable)")->allow_extra_args(false);
  summary_cmd->add_flag("--json", as_json, "Print JSON");

  auto* bench_cmd = app.add_subcommand(
      "bench", "Time training steps (compression active), inference latency and, with --loader, data loading; "
              "for an int8 model file, int8 against float32 inference latency");
  bench_cmd->add_option("recipe", recipe_path,
                        "Recipe YAML file, or an int8 model file (`shrink export --format int8`): then only inference "
                        "is timed, against the recipe's float32 model")
      ->required();
  bench_cmd->add_option("--steps", steps, "Timed training steps")->check(CLI::Range(1, 100000));
  bench_cmd->add_option("--repeats", repeats, "Timed inference repeats per batch size")->check(CLI::Range(1, 100000));
  bench_cmd->add_option("--set", overrides, "Override a recipe key (repeatable)")->allow_extra_args(false);
  bench_cmd->add_flag("--json", as_json, "Print JSON");
  std::string bench_checkpoint;
  bench_cmd->add_option("--checkpoint", bench_checkpoint,
                        "Time the trained model of this checkpoint or run directory (e.g. learned gates)");
  bool compare_dense = false;
  bench_cmd->add_flag("--compare-dense", compare_dense,
                      "Also time the recipe without its compression entries, alternating step by step, and "
                      "print the ratio");
  bool loader_bench = false;
  std::vector<int64_t> loader_workers = {1, 2};
  int64_t loader_batches = 100;
  bench_cmd->add_flag("--loader", loader_bench, "Also time the training split's data loader alone (images/s)");
  bool loader_only = false;
  bench_cmd->add_flag("--loader-only", loader_only, "Time the data loader only (no training steps)");
  bench_cmd->add_option("--workers", loader_workers, "Loader worker counts to time with --loader (default 1,2)")
      ->delimiter(',')
      ->allow_extra_args(false)
      ->check(CLI::Range(0, 64));
  bench_cmd->add_option("--loader-batches", loader_batches, "Batches timed per worker count with --loader")
      ->check(CLI::Range(1, 1000000));

  auto sensitivity_cmd = cli::add_sensitivity_command(app);
  auto export_cmd = cli::add_export_command(app);

  auto* data_cmd = app.add_subcommand(
      "data", "Dataset tools: `data convert` writes a dataset as CIFAR binaries or an image folder");
  data_cmd->require_subcommand(1);
  std::string convert_format, convert_output, image_format = "jpeg";
  bool overwrite = false, resize = false;
  int64_t quality = 95, channels = 0;
  auto* convert_cmd = data_cmd->add_subcommand(
      "convert", "Write a recipe's dataset (train and test splits) as CIFAR binaries or an ImageNet-style folder");
  convert_cmd->add_option("recipe", recipe_path, "Recipe or data config YAML whose `data:` section is converted")
      ->required();
  convert_cmd->add_option("--format", convert_format, "cifar10, cifar100 or image_folder")
      ->required()
      ->check(CLI::IsMember({"cifar10", "cifar100", "image_folder"}));
  convert_cmd->add_option("--output", convert_output, "Output folder (must be empty unless --overwrite)")->required();
  convert_cmd->add_option("--set", overrides, "Override a recipe key (repeatable)")->allow_extra_args(false);
  convert_cmd->add_flag("--overwrite", overwrite, "Write into a non-empty output folder");
  convert_cmd->add_flag("--resize", resize, "CIFAR: resize images larger than 32x32 instead of failing");
  convert_cmd->add_option("--image-format", image_format, "image_folder: jpeg or png")
      ->check(CLI::IsMember({"jpeg", "png"}));
  convert_cmd->add_option("--quality", quality, "image_folder: JPEG quality")->check(CLI::Range(1, 100));
  convert_cmd->add_option("--channels", channels, "image_folder: 0 keep, 1 grey, 3 RGB")
      ->check(CLI::IsMember({0, 1, 3}));

  auto* list_cmd = app.add_subcommand("list", "List registered models, datasets, transforms, optimizers, schedules, methods, callbacks");
  list_cmd->add_option("kind", kind, "model, dataset, transform, optimizer, schedule, method or callback");
  list_cmd->add_option("name", name, "Show this entry's options");
  list_cmd->add_flag("--markdown", markdown, "Print the recipe reference (docs/recipes.md) as Markdown");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    for (const auto& p : plugins) load_plugin(p);

    if (*list_cmd) return run_list(kind, name, markdown);

    if (*train_cmd) {
      const char* world = std::getenv("WORLD_SIZE");
      if (nproc > 1 && !world) return launch_local_workers(nproc, argv);
      if (world && train_cmd->count("--nproc") && std::to_string(nproc) != world)
        throw UserError(fmt::format("--nproc {} disagrees with WORLD_SIZE={} set by the launcher", nproc, world));
      std::string run_dir;
      ConfigNode recipe = load_recipe(recipe_path, overrides);
      auto e = build_experiment(recipe);  // validates everything before anything is written
      apply_runtime_settings(e.recipe);
      // A worker of a data-parallel job (--nproc or torchrun): joins it; only rank 0 writes.
      auto* group = distributed::init_from_env(dist_timeout);
      const bool writer = !group || group->rank() == 0;
      // `threads: 0` (every core) in each of N local workers would oversubscribe: share the cores.
      if (const char* local = std::getenv("LOCAL_WORLD_SIZE"); group && local && e.recipe.threads == 0)
        at::set_num_threads(
            std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / std::max(1, std::atoi(local))));
      if (!resume_dir.empty()) {
        if (!fs::exists(fs::path(resume_dir) / "last.pt"))
          throw UserError("--resume " + resume_dir + ": no last.pt there");
        run_dir = resume_dir;
      } else {
        run_dir = fresh_run_dir(e.recipe.output);
      }
      install_stop_signal_handlers();
      TrainOptions options;
      options.run_dir = run_dir;
      options.resume = !resume_dir.empty();
      options.quiet = quiet || !writer;
      auto result = train(e, options);
      distributed::set_default_group(nullptr);
      if (result.interrupted) return 130;
      if (!writer) return 0;
      auto [table, json] = summary_of(e);
      write_file_atomic(run_dir + "/model_summary.txt", table);
      if (!quiet) {
        fmt::print("\n{}\n", table);
        fmt::print("test accuracy: top-1 {:.2f}%  top-5 {:.2f}%  loss {:.4f}  ({} top-1 {:.2f}% at epoch {})\n",
                   result.test_eval.top1, result.test_eval.top5, result.test_eval.loss,
                   result.has_validation ? "best validation" : "best", result.best_top1, result.best_epoch);
        fmt::print("run directory: {}  ({:.1f} s)\n", run_dir, result.seconds);
      }
      return 0;
    }

    if (*eval_cmd) {
      Experiment e;
      bool before_training = false;
      if (checkpoint.empty() && sharing::is_compressed_model(recipe_path)) {
        // A file written by `shrink export --format compressed`: decoded into its recipe's model.
        checkpoint = recipe_path;
        e = sharing::load_compressed_experiment(recipe_path, overrides);
      } else if (checkpoint.empty() && quant::is_int8_model(recipe_path)) {
        // A file written by `shrink export --format int8`: its recipe's model on int8 kernels.
        checkpoint = recipe_path;
        e = quant::load_int8_experiment(recipe_path, overrides);
      } else {
        ConfigNode recipe;
        if (is_recipe_file(recipe_path)) {
          recipe = load_recipe(recipe_path, overrides);
        } else {
          if (checkpoint.empty()) checkpoint = checkpoint_in(recipe_path);
          recipe = recipe_of_checkpoint(checkpoint, overrides);
        }
        // A recipe without a checkpoint: the model as the recipe builds it (model.weights, then what
        // its methods do before training, e.g. a factorization), i.e. the accuracy before fine-tuning.
        if (!checkpoint.empty()) checkpoint = checkpoint_in(checkpoint);
        e = load_experiment(recipe, checkpoint, DataNeeds::TestOnly);
        before_training = checkpoint.empty();
        if (before_training) checkpoint = recipe_path + " (before training)";
      }
      auto r = evaluate(e.model, e.test_data, e.recipe.train.eval_batch_size, e.device, e.data_options.workers);
      if (as_json) {
        fmt::print("{}\n", nlohmann::json{{"checkpoint", before_training ? nlohmann::json() : nlohmann::json(checkpoint)},
                                          {"before_training", before_training},
                                          {"examples", r.examples},
                                          {"loss", r.loss},
                                          {"top1", r.top1},
                                          {"top5", r.top5}}
                               .dump(2));
      } else {
        fmt::print("{}: {} test examples  loss {:.4f}  top-1 {:.2f}%  top-5 {:.2f}%\n", checkpoint, r.examples, r.loss,
                   r.top1, r.top5);
      }
      return 0;
    }

    if (*summary_cmd) {
      Experiment e;
      if (sharing::is_compressed_model(target)) {
        e = sharing::load_compressed_experiment(target, overrides);
      } else if (quant::is_int8_model(target)) {
        e = quant::load_int8_experiment(target, overrides);
      } else {
        auto [recipe, ckpt] = recipe_or_run(target, overrides);
        e = load_experiment(recipe, ckpt, DataNeeds::TestOnly);
      }
      auto [table, json] = summary_of(e);
      // The model's feature taps: what distillation terms may pair.
      if (as_json) {
        auto j = nlohmann::json::parse(json);
        j["taps"] = e.model->tap_names();
        fmt::print("{}\n", j.dump(2));
      } else {
        fmt::print("{}feature taps: {}\n", table, fmt::format("{}", fmt::join(e.model->tap_names(), ", ")));
      }
      return 0;
    }

    if (*sensitivity_cmd.command) return sensitivity_cmd.run();
    if (*export_cmd.command) return export_cmd.run();

    if (*convert_cmd) {
      ConfigNode root = load_recipe(recipe_path, overrides);
      auto data = root.get("data");
      if (!data.valid()) throw UserError(recipe_path + ": no 'data' section to convert");
      auto train = build_dataset(data, Split::Train);
      auto test = build_dataset(data, Split::Test);
      const bool tty = isatty(STDERR_FILENO);
      auto progress = [tty](const std::string& split, int64_t done, int64_t total) {
        if (tty) std::cerr << "\r" << split << ": " << done << "/" << total << (done == total ? "\n" : "") << std::flush;
      };
      ConvertSummary written;
      if (convert_format == "image_folder") {
        ImageFolderWriteOptions o;
        o.format = image_format;
        o.quality = quality;
        o.channels = channels;
        o.overwrite = overwrite;
        o.progress = progress;
        written = write_image_folder(*train, *test, convert_output, o);
      } else {
        CifarWriteOptions o;
        o.layout = convert_format;
        o.resize = resize;
        o.overwrite = overwrite;
        o.progress = progress;
        written = write_cifar_binary(*train, *test, convert_output, o);
      }
      fmt::print("wrote {} training and {} test examples ({} classes) to {} as {}\n", written.train, written.test,
                 written.num_classes, convert_output, convert_format);
      return 0;
    }

    if (*bench_cmd) {
      if (quant::is_int8_model(recipe_path)) {
        // Int8 kernels do not train: inference latency only, against the float32 model.
        if (loader_bench || loader_only || compare_dense || !bench_checkpoint.empty())
          throw UserError("bench: '" + recipe_path + "' is an int8 model; --loader, --loader-only, --compare-dense "
                          "and --checkpoint apply to recipes");
        auto e = quant::load_int8_experiment(recipe_path, overrides);
        auto r = quant::bench_int8_model(e, repeats);
        fmt::print("{}\n", as_json ? quant::int8_bench_json(r) : quant::int8_bench_text(r));
        return 0;
      }
      auto e = build_experiment(load_recipe(recipe_path, overrides));
      apply_runtime_settings(e.recipe);
      std::vector<LoaderBenchResult> loader;
      if (loader_bench || loader_only) loader = run_loader_bench(e, loader_batches, loader_workers);
      if (loader_only) {
        fmt::print("{}\n", as_json ? loader_bench_json(loader)
                                    : loader_bench_text(loader, e.train_data->transforms().describe()));
        return 0;
      }
      std::optional<Experiment> dense;
      if (compare_dense) {
        auto dense_overrides = overrides;
        dense_overrides.push_back("compression=[]");
        dense.emplace(build_experiment(load_recipe(recipe_path, dense_overrides)));
      }
      std::string ckpt;
      if (!bench_checkpoint.empty()) {
        ckpt = checkpoint_in(bench_checkpoint);
        load_checkpoint_methods(ckpt, e);
      }
      auto r = run_bench(e, steps, repeats, dense ? &*dense : nullptr, ckpt);
      if (as_json) {
        auto j = nlohmann::json::parse(bench_json(r));
        if (loader_bench) j["loader"] = nlohmann::json::parse(loader_bench_json(loader));
        fmt::print("{}\n", j.dump(2));
      } else {
        fmt::print("{}", bench_text(r));
        if (loader_bench) {
          fmt::print("{}", loader_bench_text(loader, e.train_data->transforms().describe()));
          double best = 0;
          for (const auto& l : loader) best = std::max(best, l.images_per_sec);
          if (r.train_images_per_sec() > 0)
            fmt::print("loader / train step throughput: {:.1f}x (best loader setting)\n",
                       best / r.train_images_per_sec());
        }
        fmt::print("\n");
      }
      return 0;
    }
  } catch (const UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const NonFiniteLossError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 3;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
