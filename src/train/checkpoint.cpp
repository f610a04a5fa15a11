#include "shrink/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "shrink/config/recipe_file.h"
#include "shrink/core/compat.h"

namespace shrink {

namespace fs = std::filesystem;

namespace {

std::string temp_path_for(const std::string& path) { return path + ".tmp." + std::to_string(::getpid()); }

/// Flushes a file (or folder) to disk so that a rename never publishes an empty file.
void sync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void commit_temp(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  sync_path(tmp);
  fs::rename(tmp, path, ec);
  if (!ec) sync_path(fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string());
  if (ec) {
    fs::remove(tmp, ec);
    throw UserError("cannot write '" + path + "': " + ec.message());
  }
}

std::string callback_key(size_t index, const Callback& cb) { return "cb" + std::to_string(index) + "_" + cb.name(); }

torch::serialize::InputArchive open_archive(const std::string& path) {
  if (!fs::exists(path)) throw UserError("checkpoint '" + path + "' does not exist");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw UserError("cannot read checkpoint '" + path + "': not a Shrink checkpoint or truncated (" +
                    std::string(e.what_without_backtrace()) + ")");
  }
  return archive;
}

template <class T>
T read_value(torch::serialize::InputArchive& archive, const std::string& key, const std::string& path) {
  c10::IValue v;
  if (!archive.try_read(key, v)) throw UserError("checkpoint '" + path + "' has no '" + key + "' entry");
  return v.to<T>();
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  auto tmp = temp_path_for(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw UserError("cannot write '" + tmp + "'");
    out << text;
    out.flush();
    if (!out) throw UserError("cannot write '" + tmp + "' (disk full?)");
  }
  commit_temp(tmp, path);
}

void save_checkpoint(const std::string& path, const Experiment& e, torch::optim::Optimizer* optimizer,
                     const TrainerState& s) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(static_cast<int64_t>(1)));
  archive.write("recipe", c10::IValue(to_yaml(e.recipe.root.value())));
  torch::serialize::OutputArchive model_archive;
  e.model->save(model_archive);
  archive.write("model", model_archive);
  if (optimizer) {
    torch::serialize::OutputArchive opt_archive;
    optimizer->save(opt_archive);
    archive.write("optimizer", opt_archive);
  }
  auto cbs = e.all_callbacks();
  for (size_t i = 0; i < cbs.size(); ++i) {
    torch::serialize::OutputArchive cb_archive;
    cbs[i]->save_state(cb_archive);
    archive.write(callback_key(i, *cbs[i]), cb_archive);
  }
  archive.write("epoch", c10::IValue(s.epoch));
  archive.write("step", c10::IValue(s.step));
  archive.write("step_in_epoch", c10::IValue(s.step_in_epoch));
  archive.write("best_top1", c10::IValue(s.best_top1));
  archive.write("best_epoch", c10::IValue(s.best_epoch));
  archive.write("epoch_loss_sum", c10::IValue(s.epoch_loss_sum));
  archive.write("epoch_correct", c10::IValue(s.epoch_correct));
  archive.write("epoch_seen", c10::IValue(s.epoch_seen));
  archive.write("epoch_seconds", c10::IValue(s.epoch_seconds));
  archive.write("history", c10::IValue(s.history_json));
  archive.write("rng_cpu", compat::cpu_rng_state(), /*is_buffer=*/true);
  auto tmp = temp_path_for(path);
  try {
    archive.save_to(tmp);
  } catch (const c10::Error& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw UserError("cannot write checkpoint '" + path + "': " + e.what_without_backtrace());
  }
  commit_temp(tmp, path);
}

std::string read_checkpoint_recipe(const std::string& path) {
  auto archive = open_archive(path);
  return read_value<std::string>(archive, "recipe", path);
}

void load_checkpoint_methods(const std::string& path, Experiment& e) {
  auto archive = open_archive(path);
  auto cbs = e.all_callbacks();
  for (size_t i = 0; i < cbs.size(); ++i) {
    torch::serialize::InputArchive cb_archive;
    if (!archive.try_read(callback_key(i, *cbs[i]), cb_archive))
      throw UserError("checkpoint '" + path + "' has no state for compression entry/callback " + std::to_string(i) +
                      " ('" + cbs[i]->name() + "'): was it written by a different recipe?");
    cbs[i]->load_state(cb_archive);
  }
}

void load_checkpoint_model(const std::string& path, Experiment& e, torch::optim::Optimizer* optimizer,
                           TrainerState* s) {
  auto archive = open_archive(path);
  torch::serialize::InputArchive model_archive;
  if (!archive.try_read("model", model_archive)) throw UserError("checkpoint '" + path + "' has no model");
  try {
    torch::NoGradGuard no_grad;
    e.model->load(model_archive);
  } catch (const c10::Error& err) {
    throw UserError("checkpoint '" + path + "' does not fit the recipe's model: " +
                    std::string(err.what_without_backtrace()));
  }
  e.model->to(e.device);
  if (optimizer) {
    torch::serialize::InputArchive opt_archive;
    if (!archive.try_read("optimizer", opt_archive))
      throw UserError("checkpoint '" + path + "' has no optimizer state (an export?); cannot resume from it");
    try {
      optimizer->load(opt_archive);
    } catch (const c10::Error& err) {
      throw UserError("checkpoint '" + path + "' has optimizer state that does not fit the recipe's optimizer: " +
                      std::string(err.what_without_backtrace()));
    }
  }
  if (s) {
    s->epoch = read_value<int64_t>(archive, "epoch", path);
    s->step = read_value<int64_t>(archive, "step", path);
    s->step_in_epoch = read_value<int64_t>(archive, "step_in_epoch", path);
    s->best_top1 = read_value<double>(archive, "best_top1", path);
    s->best_epoch = read_value<int64_t>(archive, "best_epoch", path);
    s->epoch_loss_sum = read_value<double>(archive, "epoch_loss_sum", path);
    s->epoch_correct = read_value<int64_t>(archive, "epoch_correct", path);
    s->epoch_seen = read_value<int64_t>(archive, "epoch_seen", path);
    s->epoch_seconds = read_value<double>(archive, "epoch_seconds", path);
    s->history_json = read_value<std::string>(archive, "history", path);
    torch::Tensor rng;
    if (!archive.try_read("rng_cpu", rng, true)) throw UserError("checkpoint '" + path + "' has no RNG state");
    compat::set_cpu_rng_state(rng);
  }
}

}  // namespace shrink
