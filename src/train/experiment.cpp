#include "shrink/train/experiment.h"

#include <dlfcn.h>

#include <thread>

#include "shrink/core/compat.h"
#include "shrink/train/optim.h"
#include "shrink/train/trainer.h"

namespace shrink {

Registry<CallbackFactory>& callback_registry() {
  static Registry<CallbackFactory> registry("callback");
  return registry;
}

std::vector<Callback*> Experiment::all_callbacks() const {
  std::vector<Callback*> out;
  for (const auto& m : methods) out.push_back(m.get());
  for (const auto& c : callbacks) out.push_back(c.get());
  return out;
}

int apply_runtime_settings(const Recipe& recipe) {
  int threads = static_cast<int>(recipe.threads);
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(threads);
  // Debian's OpenBLAS (pthreads) runs its own thread pool beside LibTorch's OpenMP pool; both
  // spinning on 2 cores made LeNet-5 training 10x slower under load and batch-1 inference
  // 12x slower (8.0 vs 0.68 ms). With one BLAS thread the LeNet-5 step is also faster
  // (25.5 vs 27.6 ms at batch 64), so Linear GEMMs run single-threaded.
  using SetThreads = void (*)(int);
  if (auto set_blas_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set_blas_threads(1);
  torch::manual_seed(static_cast<uint64_t>(recipe.seed));
  return threads;
}

Experiment build_experiment(const ConfigNode& root, DataNeeds needs) {
  Experiment e;
  e.recipe = Recipe::parse(root);
  e.device = compat::parse_device(e.recipe.device);
  if (needs == DataNeeds::TrainAndTest) e.train_data = build_dataset(e.recipe.data, Split::Train);
  e.test_data = build_dataset(e.recipe.data, Split::Test);
  e.data_info = e.test_data->info();
  e.model = build_dense_model(e);
  for (const auto& entry : e.recipe.compression) {
    auto method = build_method(entry);
    method->bind(e.model);
    e.methods.push_back(std::move(method));
  }
  for (const auto& entry : e.recipe.callbacks) {
    auto name = entry["name"].as<std::string>();
    e.callbacks.push_back(callback_registry().get(name, entry["name"]).factory(entry));
  }
  // Optimizer and schedule options are checked now, before anything is written; the trainer
  // builds them again after the methods have prepared the model.
  build_schedule(e.recipe.train.lr_schedule);
  build_optimizer(e.model, e.recipe.train);
  if (e.train_data) {
    // A schedule may mix epochs and steps: check its order once steps per epoch are known.
    auto [spe, total] = training_length(e);
    for (const auto& m : e.methods) {
      const auto& s = m->spec().schedule;
      if (s.begin(spe) >= s.end(spe, total) && m->spec().where.valid())
        m->spec().where.fail("schedule is empty: it starts at step " + std::to_string(s.begin(spe)) +
                             " and ends at step " + std::to_string(s.end(spe, total)) + " (" + std::to_string(spe) +
                             " steps per epoch)");
    }
  }
  return e;
}

ModelPtr build_dense_model(const Experiment& e) {
  // The same seed gives the same initial weights whichever command builds the model.
  torch::manual_seed(static_cast<uint64_t>(e.recipe.seed));
  auto model = build_model(e.recipe.model, e.data_info);
  model->to(e.device);
  return model;
}

void prepare_experiment(Experiment& e) {
  TrainContext ctx;
  ctx.model = e.model;
  ctx.device = e.device;
  for (auto* cb : e.all_callbacks()) cb->prepare_model(ctx);
  e.model->to(e.device);
}

EvalResult evaluate(const ModelPtr& model, const Dataset& data, int64_t batch_size, torch::Device device) {
  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  EvalResult r;
  double loss_sum = 0, top1 = 0, top5 = 0;
  const int64_t n = data.size();
  std::vector<int64_t> indices;
  for (int64_t start = 0; start < n; start += batch_size) {
    indices.clear();
    for (int64_t i = start; i < std::min(n, start + batch_size); ++i) indices.push_back(i);
    auto batch = data.get_batch(indices);
    auto inputs = batch.inputs.to(device), targets = batch.targets.to(device);
    auto logits = model->forward(inputs);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    int64_t k = std::min<int64_t>(5, logits.size(1));
    auto topk = std::get<1>(logits.topk(k, 1));
    auto hits = topk.eq(targets.unsqueeze(1));
    top1 += hits.select(1, 0).sum().item<double>();
    top5 += hits.any(1).sum().item<double>();
  }
  model->train(was_training);
  r.examples = n;
  if (n > 0) {
    r.loss = loss_sum / n;
    r.top1 = 100.0 * top1 / n;
    r.top5 = 100.0 * top5 / n;
  }
  return r;
}

}  // namespace shrink
