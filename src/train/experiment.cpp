#include "shrink/train/experiment.h"

#include <dlfcn.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <thread>
#include <unordered_set>

#include "shrink/compression/method_errors.h"
#include "shrink/compression/rebuilds_layers.h"
#include "shrink/compression/sample_shape.h"
#include "shrink/compression/training_setup.h"
#include "shrink/core/compat.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/train/optim.h"
#include "shrink/train/stages.h"
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
  const auto& data = e.recipe.data;
  if (!data.valid()) throw UserError("no 'data' section: cannot build a dataset");
  e.data_options = parse_data_common_options(data);
  auto train_transforms = split_transforms(data, true), test_transforms = split_transforms(data, false);
  if (needs == DataNeeds::TrainAndTest) {
    e.train_data = std::make_shared<DataSource>(build_dataset(data, Split::Train), train_transforms);
    if (e.data_options.validation_fraction > 0)
      e.val_data = std::make_shared<DataSource>(build_dataset(data, Split::Validation), test_transforms);
  }
  e.test_data = std::make_shared<DataSource>(build_dataset(data, Split::Test), test_transforms);
  e.data_info = e.test_data->info();
  if (e.train_data) {
    auto train_info = e.train_data->info();
    if (train_info.sample_shape != e.data_info.sample_shape)
      data.fail(fmt::format("the train transforms give inputs of shape {} but the test transforms give {}; the "
                            "model needs one input shape",
                            fmt::join(train_info.sample_shape, "x"), fmt::join(e.data_info.sample_shape, "x")));
  }
  e.model = build_dense_model(e);
  for (const auto& entry : e.recipe.compression) {
    auto method = build_method(entry);
    method->bind(e.model);
    if (auto* shaped = dynamic_cast<SampleShapeConsumer*>(method.get())) shaped->set_sample_shape(e.data_info.sample_shape);
    if (auto* training = dynamic_cast<NeedsTrainingSetup*>(method.get()); training && e.train_data)
      training->setup_for_training();
    e.methods.push_back(std::move(method));
  }
  for (const auto& entry : e.recipe.callbacks) {
    auto name = entry["name"].as<std::string>();
    e.callbacks.push_back(callback_registry().get(name, entry["name"]).factory(entry));
  }
  // Optimizer and schedule options are checked now, before anything is written; the trainer
  // builds them again after the methods have prepared the model.
  build_schedule(e.recipe.train.lr_schedule);
  build_optimizer(e.model, e.recipe.train, method_trainable_tensors(e));
  if (e.train_data) {
    // A schedule may mix epochs and steps: check its order once steps per epoch are known.
    auto [spe, total] = training_length(e);
    for (const auto& stage : parse_stages(e.recipe, spe)) {
      TrainConfig c = e.recipe.train;
      c.optimizer = stage.optimizer;
      c.lr_schedule = stage.lr_schedule;
      build_schedule(c.lr_schedule);
      build_optimizer(e.model, c, method_trainable_tensors(e));
    }
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

namespace {
/// After low_rank/compact_filters rebuilt layers, no other method may still hold their old
/// tensors (it would prune, share or regularize tensors the model no longer uses).
void check_no_stale_targets(const Experiment& e) {
  std::unordered_set<const void*> live;
  for (const auto& p : e.model->parameters()) live.insert(p.unsafeGetTensorImpl());
  for (const auto& m : e.methods) {
    if (dynamic_cast<const RebuildsLayers*>(m.get())) continue;
    std::string stale;
    for (const auto& [name, tensor] : m->target_parameters())
      if (!live.count(tensor.unsafeGetTensorImpl())) stale += (stale.empty() ? "" : ", ") + name;
    for (const auto& [path, module] : m->target_modules()) {
      const auto* conv = module->as<nn::Conv2dImpl>();
      const auto* fc = module->as<nn::LinearImpl>();
      if ((conv && conv->composite()) || (fc && fc->composite())) stale += (stale.empty() ? "" : ", ") + path;
    }
    if (!stale.empty())
      fail_at_option(m->spec(), "targets",
                     "targets " + stale +
                         ", rebuilt before training by low_rank or compact_filters; a method cannot act on the "
                         "layers they rebuild in the same recipe (exclude them)");
  }
}
}  // namespace

void prepare_experiment(Experiment& e) {
  TrainContext ctx;
  ctx.model = e.model;
  ctx.device = e.device;
  for (auto* cb : e.all_callbacks()) cb->prepare_model(ctx);
  e.model->to(e.device);
  check_no_stale_targets(e);
}

LoaderOptions train_loader_options(const Experiment& e) {
  LoaderOptions o;
  o.batch_size = e.recipe.train.batch_size;
  o.drop_last = e.recipe.train.drop_last;
  o.shuffle = true;
  o.seed = static_cast<uint64_t>(e.recipe.seed);
  o.workers = e.data_options.workers;
  o.prefetch = e.data_options.prefetch;
  return o;
}

EvalResult evaluate(const ModelPtr& model, const DataSourcePtr& data, int64_t batch_size, torch::Device device,
                    int64_t workers) {
  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  EvalResult r;
  double loss_sum = 0, top1 = 0, top5 = 0;
  const int64_t n = data->size();
  LoaderOptions options;
  options.batch_size = batch_size;
  options.shuffle = false;
  options.workers = workers;
  DataLoader loader(data, options);
  loader.start_epoch(0);
  while (auto next = loader.next()) {
    auto& batch = *next;
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
