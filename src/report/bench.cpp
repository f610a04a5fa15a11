#include "shrink/report/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <nlohmann/json.hpp>

#include "shrink/compression/bench_parts.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/optim.h"
#include "shrink/train/trainer.h"

namespace shrink {

namespace {
using Clock = std::chrono::steady_clock;

double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  double pos = q * (sorted.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

template <class F>
std::vector<double> time_each(int64_t repeats, F&& f) {
  std::vector<double> out;
  for (int64_t i = 0; i < repeats; ++i) {
    auto t0 = Clock::now();
    f(i);
    out.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return out;
}

void sync(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}
}  // namespace

Timing Timing::from(std::vector<double> samples) {
  Timing t;
  std::sort(samples.begin(), samples.end());
  t.repeats = static_cast<int64_t>(samples.size());
  if (samples.empty()) return t;
  t.min_ms = samples.front();
  t.max_ms = samples.back();
  t.median_ms = quantile(samples, 0.5);
  t.p25_ms = quantile(samples, 0.25);
  t.p75_ms = quantile(samples, 0.75);
  return t;
}

namespace {
/// One experiment ready to step: prepared model, optimizer, callbacks, batches fetched up front.
struct Stepper {
  Experiment& e;
  BuiltOptimizer built;
  std::vector<Callback*> callbacks;
  std::vector<Batch> batches;
  TrainContext ctx;
  torch::nn::functional::CrossEntropyFuncOptions loss_options;

  Stepper(Experiment& experiment, int64_t bs, int64_t total_steps, const std::string& checkpoint = "")
      : e(experiment) {
    prepare_experiment(e);
    if (!checkpoint.empty()) load_checkpoint_model(checkpoint, e);
    built = build_optimizer(e.model, e.recipe.train, method_trainable_tensors(e));
    callbacks = e.all_callbacks();
    const int64_t n = e.train_data->size();
    // Real batches from the training split (up to 64 distinct ones, cycled), fetched before timing.
    for (int64_t b = 0; b < std::min<int64_t>({64, n / bs, total_steps}); ++b) {
      std::vector<int64_t> idx(bs);
      for (int64_t i = 0; i < bs; ++i) idx[i] = b * bs + i;
      auto batch = e.train_data->load(idx, static_cast<uint64_t>(e.recipe.seed), 0, b * bs);
      batches.push_back({batch.inputs.to(e.device), batch.targets.to(e.device)});
    }
    ctx.model = e.model;
    ctx.optimizer = built.optimizer.get();
    ctx.device = e.device;
    ctx.steps_per_epoch = std::max<int64_t>(1, n / bs);
    ctx.total_steps = total_steps;
    ctx.calibration_batch = [this](int64_t i) { return batches[i % batches.size()]; };
    loss_options = torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(e.recipe.train.label_smoothing);
    for (auto* cb : callbacks) cb->on_train_begin(ctx);
    for (auto* cb : callbacks) cb->on_epoch_begin(ctx);
    e.model->train();
  }

  void step(int64_t i) {
    ctx.batch = &batches[i % batches.size()];
    ctx.lr = built.base_lrs.front();
    // A non-finite loss skips backward: timing such steps would report a fraction of the cost.
    double loss = train_step(ctx, callbacks, *built.optimizer, loss_options, e.recipe.train.grad_clip_norm);
    if (!std::isfinite(loss))
      throw NonFiniteLossError("bench: non-finite loss at step " + std::to_string(ctx.step) +
                               " (bench repeats the first batches at the base lr); lower train.optimizer.lr "
                               "or use fewer --steps");
    sync(e.device);
    for (auto* cb : callbacks) cb->on_step_end(ctx);
    ++ctx.step;
  }
};

double elapsed_ms(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

/// Inference timings of each model, alternating between them at every repeat.
std::vector<std::pair<Timing, Timing>> time_inference(const std::vector<Stepper*>& steppers, int64_t repeats) {
  torch::NoGradGuard no_grad;
  std::vector<std::vector<double>> one_ms(steppers.size()), full_ms(steppers.size());
  for (auto* s : steppers) s->e.model->eval();
  auto run = [&](size_t k, bool single) {
    auto& s = *steppers[k];
    const auto& full = s.batches.front().inputs;
    auto x = single ? full.slice(0, 0, 1).contiguous() : full;
    auto t0 = Clock::now();
    s.e.model->forward(x);
    sync(s.e.device);
    return elapsed_ms(t0);
  };
  for (int i = 0; i < 3; ++i)
    for (size_t k = 0; k < steppers.size(); ++k) run(k, true), run(k, false);
  for (int64_t i = 0; i < repeats; ++i)
    for (size_t k = 0; k < steppers.size(); ++k) one_ms[k].push_back(run(k, true));
  for (int64_t i = 0; i < repeats; ++i)
    for (size_t k = 0; k < steppers.size(); ++k) full_ms[k].push_back(run(k, false));
  std::vector<std::pair<Timing, Timing>> out;
  for (size_t k = 0; k < steppers.size(); ++k) out.emplace_back(Timing::from(one_ms[k]), Timing::from(full_ms[k]));
  return out;
}
}  // namespace

BenchResult run_bench(Experiment& e, int64_t steps, int64_t repeats, Experiment* dense, const std::string& checkpoint) {
  TORCH_CHECK(e.train_data, "bench needs the training split");
  BenchResult r;
  TORCH_CHECK(e.train_data->size() > 0, "bench: the training split is empty");
  r.batch_size = std::min(e.recipe.train.batch_size, e.train_data->size());
  r.threads = at::get_num_threads();
  r.device = e.recipe.device;
  const int64_t warmup_steps = 3;
  std::vector<std::unique_ptr<Stepper>> steppers;
  steppers.push_back(std::make_unique<Stepper>(e, r.batch_size, warmup_steps + steps, checkpoint));
  if (dense) steppers.push_back(std::make_unique<Stepper>(*dense, r.batch_size, warmup_steps + steps));
  std::vector<std::vector<double>> step_ms(steppers.size());
  for (int64_t i = 0; i < warmup_steps; ++i)
    for (auto& s : steppers) s->step(i);
  for (int64_t i = warmup_steps; i < warmup_steps + steps; ++i) {
    for (size_t k = 0; k < steppers.size(); ++k) {
      auto t0 = Clock::now();
      steppers[k]->step(i);
      step_ms[k].push_back(elapsed_ms(t0));
    }
  }
  r.train_step = Timing::from(step_ms[0]);
  for (auto* cb : steppers[0]->callbacks)
    if (auto* owner = dynamic_cast<HasBenchParts*>(cb))
      for (auto& [name, run] : owner->bench_parts()) {
        const auto& batches = steppers[0]->batches;
        run(batches.front().inputs);  // warm-up
        sync(e.device);
        r.parts.emplace_back(name, Timing::from(time_each(steps, [&](int64_t i) {
                                 run(batches[i % batches.size()].inputs);
                                 sync(e.device);
                               })));
      }
  std::vector<Stepper*> raw;
  for (auto& s : steppers) raw.push_back(s.get());
  auto inference = time_inference(raw, repeats);
  r.infer_batch1 = inference[0].first;
  r.infer_batch = inference[0].second;
  if (dense) {
    r.has_dense = true;
    r.dense_train_step = Timing::from(step_ms[1]);
    r.dense_infer_batch1 = inference[1].first;
    r.dense_infer_batch = inference[1].second;
  }
  return r;
}

std::string bench_text(const BenchResult& r) {
  auto line = [](const std::string& what, const Timing& t) {
    return fmt::format("{:<28} median {:9.3f} ms  [p25 {:.3f}, p75 {:.3f}, min {:.3f}, max {:.3f}]  n={}\n", what,
                       t.median_ms, t.p25_ms, t.p75_ms, t.min_ms, t.max_ms, t.repeats);
  };
  std::string out = fmt::format("device {}, {} threads, batch {}\n", r.device, r.threads, r.batch_size);
  out += line("train step (batch " + std::to_string(r.batch_size) + ")", r.train_step);
  out += fmt::format("{:<28} {:.0f} images/s\n", "train throughput", r.train_images_per_sec());
  for (const auto& [name, t] : r.parts) out += line("  of which " + name, t);
  out += line("inference batch 1", r.infer_batch1);
  out += line("inference batch " + std::to_string(r.batch_size), r.infer_batch);
  if (r.has_dense) {
    out += "dense model (the recipe without compression), timed alternately in the same run:\n";
    out += line("dense train step", r.dense_train_step);
    out += line("dense inference batch 1", r.dense_infer_batch1);
    out += line("dense inference batch " + std::to_string(r.batch_size), r.dense_infer_batch);
    out += fmt::format("{:<28} {:.3f}x train step, {:.3f}x inference batch 1, {:.3f}x inference batch {}\n",
                       "compressed / dense", r.train_step_ratio(),
                       r.infer_batch1.median_ms / std::max(1e-9, r.dense_infer_batch1.median_ms),
                       r.infer_batch.median_ms / std::max(1e-9, r.dense_infer_batch.median_ms), r.batch_size);
  }
  return out;
}

std::vector<LoaderBenchResult> run_loader_bench(const Experiment& e, int64_t batches,
                                                const std::vector<int64_t>& worker_counts) {
  TORCH_CHECK(e.train_data, "loader bench needs the training split");
  std::vector<LoaderBenchResult> out;
  for (int64_t workers : worker_counts) {
    auto options = train_loader_options(e);
    options.workers = workers;
    DataLoader loader(e.train_data, options);
    const int64_t per_epoch = loader.batches_per_epoch();
    TORCH_CHECK(per_epoch > 0, "loader bench: the training split has no full batch");
    LoaderBenchResult r;
    r.workers = workers;
    r.batch_size = options.batch_size;
    // The clock starts after the first batch, so thread start-up and the first decode are not
    // counted; epochs restart as needed (each restart refills the prefetch queues).
    int64_t epoch = 0;
    loader.start_epoch(epoch);
    loader.next();
    int64_t images = 0, done = 0;
    const auto t0 = Clock::now();
    while (done < batches) {
      auto batch = loader.next();
      if (!batch) {
        loader.start_epoch(++epoch);
        continue;
      }
      images += batch->targets.size(0);
      ++done;
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.batches = done;
    r.images_per_sec = images / std::max(r.seconds, 1e-9);
    out.push_back(r);
  }
  return out;
}

std::string loader_bench_text(const std::vector<LoaderBenchResult>& results, const std::string& transforms) {
  std::string out = fmt::format("loader: train split, transforms {}\n", transforms);
  for (const auto& r : results)
    out += fmt::format("{:<28} {:9.0f} images/s  ({} batches of {} in {:.2f} s)\n",
                       fmt::format("loader, {} worker{}", r.workers, r.workers == 1 ? "" : "s"), r.images_per_sec,
                       r.batches, r.batch_size, r.seconds);
  return out;
}

std::string loader_bench_json(const std::vector<LoaderBenchResult>& results) {
  auto j = nlohmann::json::array();
  for (const auto& r : results)
    j.push_back({{"workers", r.workers},
                 {"batch_size", r.batch_size},
                 {"batches", r.batches},
                 {"seconds", r.seconds},
                 {"images_per_sec", r.images_per_sec}});
  return j.dump(2);
}

std::string bench_json(const BenchResult& r) {
  auto timing = [](const Timing& t) {
    return nlohmann::json{{"median_ms", t.median_ms}, {"p25_ms", t.p25_ms}, {"p75_ms", t.p75_ms},
                          {"min_ms", t.min_ms},       {"max_ms", t.max_ms}, {"repeats", t.repeats}};
  };
  nlohmann::json j{{"device", r.device},
                   {"threads", r.threads},
                   {"batch_size", r.batch_size},
                   {"train_step", timing(r.train_step)},
                   {"train_images_per_sec", r.train_images_per_sec()},
                   {"inference_batch1", timing(r.infer_batch1)},
                   {"inference_batch", timing(r.infer_batch)}};
  if (!r.parts.empty()) {
    j["parts"] = nlohmann::json::object();
    for (const auto& [name, t] : r.parts) j["parts"][name] = timing(t);
  }
  if (r.has_dense) {
    j["dense"] = {{"train_step", timing(r.dense_train_step)},
                  {"inference_batch1", timing(r.dense_infer_batch1)},
                  {"inference_batch", timing(r.dense_infer_batch)}};
    j["train_step_ratio"] = r.train_step_ratio();
  }
  return j.dump(2);
}

}  // namespace shrink
