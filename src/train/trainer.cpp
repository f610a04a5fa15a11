#include "shrink/train/trainer.h"

#include "shrink/pruning/mask.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "progress.h"
#include "shrink/compression/trainable_state.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/compat.h"
#include "shrink/distributed/process_group.h"
#include "shrink/quant/quantizers.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/optim.h"
#include "shrink/train/stages.h"

namespace shrink {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // metrics columns keep their logical order
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop{false};
// With several processes, the stop request all ranks agreed on in the last step's all-reduce: a
// signal reaching one rank between steps must not make it leave the others waiting.
bool g_step_stop = false;

extern "C" void on_stop_signal(int sig) {
  g_stop.store(true);
  // A second signal terminates at once, as the user expects.
  std::signal(sig, SIG_DFL);
}

std::string csv_escape(const json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  return v.dump();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_metrics_files(const std::string& dir, const json& history) {
  std::string jsonl;
  std::vector<std::string> columns;
  for (const auto& row : history) {
    jsonl += row.dump() + "\n";
    for (const auto& item : row.items())
      if (std::find(columns.begin(), columns.end(), item.key()) == columns.end()) columns.push_back(item.key());
  }
  std::string csv;
  for (size_t i = 0; i < columns.size(); ++i) csv += (i ? "," : "") + columns[i];
  csv += "\n";
  for (const auto& row : history) {
    for (size_t i = 0; i < columns.size(); ++i)
      csv += (i ? "," : "") + (row.contains(columns[i]) ? csv_escape(row[columns[i]]) : std::string());
    csv += "\n";
  }
  write_file_atomic(dir + "/metrics.jsonl", jsonl);
  write_file_atomic(dir + "/metrics.csv", csv);
}

/// Appends to log.txt (none for an empty path: ranks other than 0) and echoes to the terminal.
class RunLog {
 public:
  RunLog(const std::string& path, bool quiet) : quiet_(quiet) {
    if (!path.empty()) out_.open(path, std::ios::app);
  }
  void operator()(const std::string& line) {
    if (out_.is_open()) {
      out_ << line << '\n';
      out_.flush();
    }
    if (!quiet_) std::printf("%s\n", line.c_str()), std::fflush(stdout);
  }

 private:
  std::ofstream out_;
  bool quiet_;
};

}  // namespace

void request_stop() { g_stop.store(true); }
bool stop_requested() { return g_stop.load(); }
void clear_stop_request() { g_stop.store(false); }

void install_stop_signal_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

std::pair<int64_t, int64_t> training_length(const Experiment& e) {
  const auto& train = e.recipe.train;
  const int64_t n = e.train_data->size();
  const int64_t bs = train.batch_size;
  const int64_t spe = train.drop_last ? n / bs : (n + bs - 1) / bs;
  auto where = [&](const char* key) {
    auto t = e.recipe.root.get("train");
    return t.valid() && t.has(key) ? t[key] : e.recipe.root;
  };
  if (spe == 0)
    where("batch_size").fail(fmt::format("{} is larger than the training set ({} examples) with drop_last", bs, n));
  const auto stages = parse_stages(e.recipe, spe);
  if (!stages.empty()) return {spe, stages.back().end_step};
  const int64_t total = static_cast<int64_t>(std::llround(train.epochs * spe));
  if (total < 1)
    where("epochs").fail(fmt::format("trains for no optimizer step ({} steps per epoch)", spe));
  return {spe, total};
}

std::string fresh_run_dir(const std::string& output) {
  auto usable = [](const fs::path& p) { return !fs::exists(p) || (fs::is_directory(p) && fs::is_empty(p)); };
  if (usable(output)) return output;
  for (int i = 2;; ++i) {
    auto candidate = output + "-" + std::to_string(i);
    if (usable(candidate)) return candidate;
  }
}

std::vector<std::pair<std::string, torch::Tensor>> method_trainable_tensors(const Experiment& e) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto* cb : e.all_callbacks())
    if (auto* owner = dynamic_cast<const OwnsTrainableTensors*>(cb)) {
      auto tensors = owner->trainable_tensors();
      out.insert(out.end(), tensors.begin(), tensors.end());
    }
  return out;
}

double weight_sparsity(const ModelPtr& model) {
  torch::NoGradGuard no_grad;
  int64_t zeros = 0, total = 0;
  for (const auto& p : model->parameters()) {
    if (p.dim() <= 1) continue;
    total += p.numel();
    zeros += p.numel() - p.count_nonzero().item<int64_t>();
  }
  return total > 0 ? static_cast<double>(zeros) / total : 0.0;
}

double train_step(TrainContext& ctx, const std::vector<Callback*>& callbacks, torch::optim::Optimizer& optimizer,
                  const torch::nn::functional::CrossEntropyFuncOptions& loss_options, double grad_clip_norm) {
  for (auto* cb : callbacks) cb->on_step_begin(ctx);
  optimizer.zero_grad();
  ctx.outputs = ctx.model->forward(ctx.batch->inputs);
  auto loss = torch::nn::functional::cross_entropy(ctx.outputs, ctx.batch->targets, loss_options);
  ctx.task_loss = loss;
  for (auto* cb : callbacks) loss = cb->on_loss(ctx, loss);
  double loss_value = loss.item<double>();
  auto* group = distributed::active_group();
  // With several processes every rank runs backward and the all-reduce even on a non-finite
  // loss, so that all of them see the same global loss and stop together.
  if (!group && !std::isfinite(loss_value)) return loss_value;
  loss.backward();
  if (group) {
    // Averaged before the callbacks, so masks and regularizers see the global batch's gradient.
    std::vector<torch::Tensor> params;
    for (const auto& g : optimizer.param_groups())
      for (const auto& p : g.params()) params.push_back(p);
    const int64_t count = ctx.batch->targets.size(0);
    auto r = group->average_gradients(params, count > 0 ? loss_value : 0.0, count, stop_requested());
    loss_value = r.loss;
    g_step_stop = r.stop;
    if (!std::isfinite(loss_value)) return loss_value;
  }
  for (auto* cb : callbacks) cb->on_before_optimizer_step(ctx);
  // Pruned weights get no gradient (so no momentum) and are reset after the step (weight decay).
  pruning::mask_gradients(*ctx.model);
  if (grad_clip_norm > 0) torch::nn::utils::clip_grad_norm_(ctx.model->parameters(), grad_clip_norm);
  optimizer.step();
  pruning::apply_masks(*ctx.model);
  for (auto* cb : callbacks) cb->on_after_optimizer_step(ctx);
  return loss_value;
}

TrainResult train(Experiment& e, const TrainOptions& options) {
  const auto& train_cfg = e.recipe.train;
  TORCH_CHECK(e.train_data, "train() needs the training split (build_experiment with DataNeeds::TrainAndTest)");
  const std::string dir = options.run_dir;
  const std::string last_path = dir + "/last.pt", best_path = dir + "/best.pt";
  if (options.resume && !fs::exists(last_path))
    throw UserError("cannot resume: '" + last_path + "' does not exist");

  // With several processes (distributed::init_from_env) only rank 0 writes the run directory.
  auto* group = distributed::active_group();
  const bool writer = !group || group->rank() == 0;
  g_step_stop = false;

  // Everything that can fail on a wrong input runs before the run directory is touched.
  TrainResult result;
  result.run_dir = dir;
  result.threads = at::get_num_threads();
  TrainContext ctx;
  ctx.model = e.model;
  ctx.device = e.device;
  if (options.resume) load_checkpoint_methods(last_path, e);
  prepare_experiment(e);
  const auto [spe, total_steps] = training_length(e);
  // With train.stages each stage builds its own optimizer and schedule; a resumed run first
  // learns its step, then builds the optimizer of that step's stage and loads its state.
  const auto stages = parse_stages(e.recipe, spe);
  TrainerState state;
  if (options.resume && !stages.empty()) load_checkpoint_model(last_path, e, nullptr, &state);
  const TrainStage* stage = stages.empty() ? nullptr : &stage_at(stages, state.step);
  auto stage_config = [&](const TrainStage* s) {
    TrainConfig c = train_cfg;
    if (s) c.optimizer = s->optimizer, c.lr_schedule = s->lr_schedule;
    return c;
  };
  auto built = build_optimizer(e.model, stage_config(stage), method_trainable_tensors(e));
  auto schedule = build_schedule(stage_config(stage).lr_schedule);
  ctx.optimizer = built.optimizer.get();
  // A checkpoint written at the end of a stage holds that stage's optimizer: the next stage
  // starts fresh instead.
  const bool at_stage_start = stage && state.step == stage->begin_step && state.step > 0;
  if (options.resume && !at_stage_start) load_checkpoint_model(last_path, e, built.optimizer.get(), &state);
  json history = json::parse(state.history_json);
  // The epoch's running sums are summed over ranks at its end: a resumed rank 0 brings those
  // saved mid-epoch (already global), the others start from zero.
  if (group && !writer) {
    state.epoch_loss_sum = 0;
    state.epoch_correct = state.epoch_seen = 0;
  }
  const int64_t n = e.train_data->size();
  const int64_t total_epochs = (total_steps + spe - 1) / spe;
  ctx.steps_per_epoch = spe;
  ctx.total_steps = total_steps;
  // Batches in one fixed shuffled order, for saliency estimates and calibration.
  auto calibration_order = std::make_shared<std::vector<int64_t>>(
      epoch_order(n, static_cast<uint64_t>(e.recipe.seed) ^ 0xca11b7a7e0000000ULL, 0));
  ctx.calibration_batch = [&e, calibration_order, batch_size = train_cfg.batch_size](int64_t index) {
    const auto& order = *calibration_order;
    const int64_t count = static_cast<int64_t>(order.size());
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < std::min(batch_size, count); ++i) indices.push_back(order[(index * batch_size + i) % count]);
    Batch b = e.train_data->load(indices, static_cast<uint64_t>(e.recipe.seed), -1, index * batch_size);
    b.inputs = b.inputs.to(e.device);
    b.targets = b.targets.to(e.device);
    return b;
  };

  if (writer) fs::create_directories(dir);
  RunLog log(writer ? dir + "/log.txt" : std::string(), options.quiet || !writer);
  ctx.log = [&log](const std::string& line) { log(line); };
  // Divergence stops the run without touching last.pt, which still holds the last good state.
  auto diverged = [&](const std::string& what) {
    auto msg = fmt::format("{}: training stopped; {}. Lower the learning rate or enable train.grad_clip_norm.", what,
                           fs::exists(last_path) ? "the last good checkpoint is kept at " + last_path
                                                 : "no checkpoint had been written yet");
    log(msg);
    throw NonFiniteLossError(msg);
  };
  const std::string resolved = to_yaml(e.recipe.root.value());
  if (options.resume) {
    log(fmt::format("resumed from {} at epoch {} step {}", last_path, state.epoch, state.step));
    if (fs::exists(dir + "/recipe.yaml") && read_text(dir + "/recipe.yaml") != resolved)
      log("the recipe differs from the run's recipe.yaml (overrides on resume?); recipe.yaml now holds the new one");
  }
  if (writer) write_file_atomic(dir + "/recipe.yaml", resolved);
  // The class list travels with the run: label i of the model is line i.
  if (auto classes = e.test_data->dataset()->class_names(); writer && !classes.empty()) {
    std::string text;
    for (const auto& c : classes) text += c + "\n";
    write_file_atomic(dir + "/classes.txt", text);
  }

  if (!options.resume) {
    log(fmt::format("run {} in {} (torch {}, {} threads, device {}{})", e.recipe.name, dir, compat::torch_version(),
                    result.threads, e.recipe.device,
                    group ? fmt::format(", {} processes on Gloo, global batch {} split across them",
                                        group->world_size(), train_cfg.batch_size)
                          : std::string()));
    log(fmt::format("{} training / {}{} test examples, {} steps per epoch, {} steps", n,
                    e.val_data ? std::to_string(e.val_data->size()) + " validation / " : std::string(),
                    e.test_data->size(), spe, total_steps));
    log(fmt::format("train transforms: {}; test transforms: {}; {} loader workers",
                    e.train_data->transforms().describe(), e.test_data->transforms().describe(),
                    e.data_options.workers));
    if (auto skipped = e.train_data->dataset()->skipped() + e.test_data->dataset()->skipped())
      log(fmt::format("{} unreadable images skipped (skip_corrupt)", skipped));
    for (const auto& g : built.group_names) log("optimizer group " + g);
    for (const auto& st : stages)
      log(fmt::format("stage '{}': {} epochs, steps {} to {}", st.name, st.epochs, st.begin_step, st.end_step));
  }

  auto loader_options = train_loader_options(e);
  if (group) loader_options.rank = group->rank(), loader_options.world_size = group->world_size();
  DataLoader loader(e.train_data, loader_options);
  const auto& eval_data = e.val_data ? e.val_data : e.test_data;
  const char* eval_split = e.val_data ? "val" : "test";
  bool bar = train_cfg.progress == "bar" || (train_cfg.progress == "auto" && isatty(STDERR_FILENO));
  detail::ProgressBar progress(bar && !options.quiet);
  auto callbacks = e.all_callbacks();
  if (group) {
    // Methods have prepared the model and a resume has loaded it: from here every rank starts
    // from rank 0's parameters, buffers (masks, quantizer ranges) and method-owned tensors.
    std::vector<torch::Tensor> owned;
    for (auto& [name, t] : method_trainable_tensors(e)) owned.push_back(t);
    group->broadcast_module(*e.model, owned);
  }
  for (auto* cb : callbacks) cb->on_train_begin(ctx);

  auto loss_options = torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(train_cfg.label_smoothing);
  ctx.lr = built.base_lrs.front() *
           (stage ? schedule->factor(std::max<int64_t>(0, state.step - 1 - stage->begin_step), spe,
                                     stage->end_step - stage->begin_step)
                  : schedule->factor(std::max<int64_t>(0, state.step - 1), spe, total_steps));
  const auto run_start = Clock::now();
  e.model->train();

  while (state.step < total_steps) {
    const int64_t epoch = state.epoch;
    const int64_t steps_this_epoch = std::min(spe, total_steps - epoch * spe);
    ctx.epoch = epoch;
    ctx.step = state.step;
    ctx.metrics.clear();
    if (state.step_in_epoch == 0) {
      state.epoch_loss_sum = 0;
      state.epoch_correct = state.epoch_seen = 0;
      state.epoch_seconds = 0;
    }
    for (auto* cb : callbacks) cb->on_epoch_begin(ctx);
    progress.start(epoch + 1, total_epochs, steps_this_epoch);
    auto segment_start = Clock::now();
    const double seconds_before = state.epoch_seconds;
    loader.start_epoch(epoch, state.step_in_epoch);
    const double allreduce_before = group ? group->allreduce_seconds() : 0;
    const int64_t allreduce_steps_before = group ? group->allreduce_steps() : 0;

    while (state.step_in_epoch < steps_this_epoch) {
      auto next = loader.next();
      TORCH_CHECK(next, "the loader ended the epoch after ", state.step_in_epoch, " of ", steps_this_epoch, " batches");
      Batch batch = std::move(*next);
      batch.inputs = batch.inputs.to(e.device);
      batch.targets = batch.targets.to(e.device);
      ctx.step = state.step;
      ctx.batch = &batch;
      if (stage && state.step >= stage->end_step) {
        stage = &stage_at(stages, state.step);
        built = build_optimizer(e.model, stage_config(stage), method_trainable_tensors(e));
        schedule = build_schedule(stage_config(stage).lr_schedule);
        ctx.optimizer = built.optimizer.get();
        log(fmt::format("stage '{}' from step {} to {}: a fresh optimizer", stage->name, stage->begin_step,
                        stage->end_step));
      }
      auto& optimizer = *built.optimizer;
      const double factor = stage ? schedule->factor(state.step - stage->begin_step, spe,
                                                     stage->end_step - stage->begin_step)
                                  : schedule->factor(state.step, spe, total_steps);
      for (size_t g = 0; g < optimizer.param_groups().size(); ++g)
        optimizer.param_groups()[g].options().set_lr(built.base_lrs[g] * factor);
      ctx.lr = built.base_lrs.front() * factor;

      const double loss_value = train_step(ctx, callbacks, optimizer, loss_options, train_cfg.grad_clip_norm);
      if (!std::isfinite(loss_value)) {
        progress.finish();
        diverged(fmt::format("non-finite loss ({}) at epoch {} step {}", loss_value, epoch + 1, state.step));
      }

      const int64_t count = batch.targets.size(0);
      state.epoch_loss_sum += loss_value * count;
      state.epoch_correct += ctx.outputs.argmax(1).eq(batch.targets).sum().item<int64_t>();
      state.epoch_seen += count;
      ++state.step;
      ++state.step_in_epoch;
      for (auto* cb : callbacks) cb->on_step_end(ctx);
      ctx.batch = nullptr;
      ctx.outputs = torch::Tensor();

      const double elapsed = seconds_before + std::chrono::duration<double>(Clock::now() - segment_start).count();
      progress.update(state.step_in_epoch, state.epoch_loss_sum / state.epoch_seen,
                      100.0 * state.epoch_correct / state.epoch_seen, state.epoch_seen / std::max(elapsed, 1e-9));

      if ((group ? g_step_stop : stop_requested()) && state.step < total_steps) {
        progress.finish();
        state.epoch_seconds = elapsed;
        state.history_json = history.dump();
        if (group) {
          // The checkpoint holds the global running sums and buffers (see the resume above).
          auto sums = group->all_reduce_sum(
              {state.epoch_loss_sum, double(state.epoch_correct), double(state.epoch_seen)});
          state.epoch_loss_sum = sums[0];
          state.epoch_correct = std::llround(sums[1]);
          state.epoch_seen = std::llround(sums[2]);
          group->average_buffers(*e.model);
          quant::recompute_quantizer_grids(*e.model);
        }
        if (writer) save_checkpoint(last_path, e, &optimizer, state);
        // The run's recipe.yaml is the resolved recipe, overrides included.
        const std::string recipe = dir + "/recipe.yaml";
        log(fmt::format("interrupted at epoch {} step {}; checkpoint written to {}. Resume with: shrink train {} "
                        "--resume {}",
                        epoch + 1, state.step, last_path, recipe, dir));
        result.interrupted = true;
        result.steps = state.step;
        result.epochs_completed = state.epoch;
        result.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
        return result;
      }
    }
    progress.finish();
    state.epoch_seconds = seconds_before + std::chrono::duration<double>(Clock::now() - segment_start).count();

    // End of epoch: callbacks' metrics, evaluation, history, checkpoints.
    ctx.step = state.step;
    double allreduce_ms = -1;
    if (group) {
      // Every rank logs the global batch's figures and evaluates the same model: running
      // statistics (BatchNorm, quantizer ranges) gathered on each rank's shard are averaged.
      auto sums =
          group->all_reduce_sum({state.epoch_loss_sum, double(state.epoch_correct), double(state.epoch_seen)});
      state.epoch_loss_sum = sums[0];
      state.epoch_correct = std::llround(sums[1]);
      state.epoch_seen = std::llround(sums[2]);
      group->average_buffers(*e.model);
      quant::recompute_quantizer_grids(*e.model);
      const int64_t steps = group->allreduce_steps() - allreduce_steps_before;
      if (steps > 0) allreduce_ms = 1000.0 * (group->allreduce_seconds() - allreduce_before) / steps;
    }
    for (auto* cb : callbacks) cb->on_epoch_end(ctx);
    state.epoch = epoch + 1;
    state.step_in_epoch = 0;
    json row;
    row["epoch"] = state.epoch;
    row["step"] = state.step;
    row["lr"] = ctx.lr;
    row["train_loss"] = state.epoch_loss_sum / std::max<int64_t>(1, state.epoch_seen);
    row["train_acc"] = 100.0 * state.epoch_correct / std::max<int64_t>(1, state.epoch_seen);
    const bool last_epoch = state.step >= total_steps;
    if (state.epoch % train_cfg.eval_every == 0 || last_epoch) {
      auto r = evaluate(e.model, eval_data, train_cfg.eval_batch_size, e.device, e.data_options.workers);
      row["eval_loss"] = r.loss;
      row["eval_top1"] = r.top1;
      row["eval_top5"] = r.top5;
      result.final_eval = r;
      if (r.top1 > state.best_top1) {
        state.best_top1 = r.top1;
        state.best_epoch = state.epoch;
      }
    } else {
      row["eval_loss"] = row["eval_top1"] = row["eval_top5"] = nullptr;
    }
    const bool finite = std::isfinite(row["train_loss"].get<double>()) &&
                        (row["eval_loss"].is_null() || std::isfinite(row["eval_loss"].get<double>()));
    if (!finite) diverged(fmt::format("non-finite loss at the end of epoch {}", state.epoch));
    row["sparsity"] = weight_sparsity(e.model);
    row["images_per_sec"] = state.epoch_seen / std::max(state.epoch_seconds, 1e-9);
    row["seconds"] = state.epoch_seconds;
    if (group) row["allreduce_ms_per_step"] = allreduce_ms;
    for (const auto& [key, value] : ctx.metrics) row[key] = value;
    history.push_back(row);
    state.history_json = history.dump();
    if (writer) {
      if (state.best_epoch == state.epoch) save_checkpoint(best_path, e, built.optimizer.get(), state);
      save_checkpoint(last_path, e, built.optimizer.get(), state);
      write_metrics_files(dir, history);
    }
    std::string eval_text = row["eval_top1"].is_null()
                                ? std::string()
                                : fmt::format(" | {} loss {:.4f} top1 {:.2f}% top5 {:.2f}%", eval_split,
                                              row["eval_loss"].get<double>(),
                                              row["eval_top1"].get<double>(), row["eval_top5"].get<double>());
    log(fmt::format("epoch {}/{} step {} lr {:.4g} | train loss {:.4f} acc {:.2f}%{} | sparsity {:.3f} | {:.0f} img/s "
                    "{:.1f} s{}",
                    state.epoch, total_epochs, state.step, ctx.lr, row["train_loss"].get<double>(),
                    row["train_acc"].get<double>(), eval_text, row["sparsity"].get<double>(),
                    row["images_per_sec"].get<double>(), state.epoch_seconds,
                    allreduce_ms >= 0 ? fmt::format(" | all-reduce {:.2f} ms/step", allreduce_ms) : std::string()));
  }
  for (auto* cb : callbacks) cb->on_train_end(ctx);
  if (group) {
    // The check that data-parallel training kept one model: 0 unless something diverged.
    const double diff = group->max_difference_from_rank0(*e.model);
    log(fmt::format("ranks agree: max weight difference {:g} over {} processes (parameters and buffers)", diff,
                    group->world_size()));
  }

  result.steps = state.step;
  result.epochs_completed = state.epoch;
  result.best_top1 = state.best_top1;
  result.best_epoch = state.best_epoch;
  result.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (result.final_eval.examples == 0 && !history.empty()) {
    // Resumed after the last evaluation: report the last evaluated row.
    for (auto it = history.rbegin(); it != history.rend(); ++it)
      if ((*it)["eval_loss"].is_number() && (*it)["eval_top1"].is_number()) {
        result.final_eval = {(*it)["eval_loss"].get<double>(), (*it)["eval_top1"].get<double>(),
                             (*it)["eval_top5"].get<double>(), eval_data->size()};
        break;
      }
  }
  result.has_validation = e.val_data != nullptr;
  if (e.val_data) {
    result.test_eval = evaluate(e.model, e.test_data, train_cfg.eval_batch_size, e.device, e.data_options.workers);
    log(fmt::format("test loss {:.4f} top1 {:.2f}% top5 {:.2f}% (after the last epoch; validation chose nothing)",
                    result.test_eval.loss, result.test_eval.top1, result.test_eval.top5));
  } else {
    result.test_eval = result.final_eval;
  }
  json summary;
  summary["name"] = e.recipe.name;
  summary["run_dir"] = dir;
  summary["epochs"] = result.epochs_completed;
  summary["steps"] = result.steps;
  summary["final"] = {{"eval_loss", result.final_eval.loss},
                      {"eval_top1", result.final_eval.top1},
                      {"eval_top5", result.final_eval.top5}};
  summary["eval_split"] = eval_split;
  summary["best"] = {{"eval_top1", result.best_top1}, {"epoch", result.best_epoch}};
  summary["test"] = {{"loss", result.test_eval.loss},
                     {"top1", result.test_eval.top1},
                     {"top5", result.test_eval.top5},
                     {"examples", result.test_eval.examples}};
  double train_seconds = 0;
  for (const auto& row : history) train_seconds += row["seconds"].get<double>();
  summary["train_seconds"] = train_seconds;
  summary["threads"] = result.threads;
  summary["device"] = e.recipe.device;
  summary["torch_version"] = compat::torch_version();
  summary["sparsity"] = weight_sparsity(e.model);
  if (group) summary["processes"] = group->world_size();
  if (writer) write_file_atomic(dir + "/summary.json", summary.dump(2) + "\n");
  return result;
}

}  // namespace shrink
