#include "shrink/distributed/process_group.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>

#include "shrink/core/error.h"

// CMake defines SHRINK_WITH_GLOO (and c10d's USE_C10D_GLOO) for this file when libgloo-dev's
// headers were found: LibTorch carries ProcessGroupGloo compiled in, but not the Gloo headers.
#if defined(SHRINK_WITH_GLOO)
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/utils/tensor_flatten.h>
#endif

namespace shrink::distributed {

namespace {

std::mutex g_mutex;
std::shared_ptr<ProcessGroup> g_default;

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  auto v = env(name);
  if (!v) return fallback;
  size_t used = 0;
  int64_t x = 0;
  try {
    x = std::stoll(*v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v->size() || x < lo || x > hi)
    throw UserError(fmt::format("environment variable {}={}: expected an integer in [{}, {}]", name, *v, lo, hi));
  return x;
}

using Seconds = std::chrono::duration<double>;

}  // namespace

bool gloo_available() {
#if defined(SHRINK_WITH_GLOO)
  return true;
#else
  return false;
#endif
}

std::optional<DistOptions> options_from_env(double timeout_seconds) {
  if (!env("WORLD_SIZE")) return std::nullopt;
  DistOptions o;
  o.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  o.rank = env_int("RANK", -1, 0, 1 << 20);
  if (o.rank < 0) throw UserError("environment variable WORLD_SIZE is set but RANK is not");
  if (o.rank >= o.world_size)
    throw UserError(fmt::format("environment variable RANK={} must be smaller than WORLD_SIZE={}", o.rank,
                                o.world_size));
  o.local_rank = env_int("LOCAL_RANK", o.rank, 0, 1 << 20);
  o.master_addr = env("MASTER_ADDR").value_or("127.0.0.1");
  o.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  o.file_store = env("SHRINK_DIST_FILE_STORE").value_or("");
  o.timeout_seconds = timeout_seconds;
  return o;
}

#if defined(SHRINK_WITH_GLOO)

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::string where;  // "rank R of W" for messages
  double timeout = 0;

  // A peer that exited or hangs shows up here as a Gloo/c10d exception or a timeout.
  [[noreturn]] void fail(const char* op, const std::exception& e) const {
    std::string what = e.what();
    if (auto* c = dynamic_cast<const c10::Error*>(&e)) what = c->what_without_backtrace();
    throw std::runtime_error(fmt::format("distributed {} failed on {} (another rank exited, or did not answer "
                                         "within the {:.0f} s timeout): {}",
                                         op, where, timeout, what));
  }
  void wait(const char* op, const c10::intrusive_ptr<c10d::Work>& work) const {
    try {
      work->wait();
    } catch (const std::exception& e) {
      fail(op, e);
    }
  }
  void allreduce(std::vector<at::Tensor>& tensors, c10d::ReduceOp op = c10d::ReduceOp::SUM) {
    c10d::AllreduceOptions o;
    o.reduceOp = op;
    c10::intrusive_ptr<c10d::Work> work;
    try {
      work = pg->allreduce(tensors, o);
    } catch (const std::exception& e) {
      fail("all-reduce", e);
    }
    wait("all-reduce", work);
  }
};

ProcessGroup::ProcessGroup(const DistOptions& options) : impl_(std::make_unique<Impl>()), options_(options) {
  TORCH_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
              "ProcessGroup: rank ", options.rank, " of world size ", options.world_size);
  const auto timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(Seconds(std::max(1.0, options.timeout_seconds)));
  impl_->where = fmt::format("rank {} of {}", options.rank, options.world_size);
  impl_->timeout = options.timeout_seconds;
  try {
    if (!options.file_store.empty()) {
      impl_->store = c10::make_intrusive<c10d::FileStore>(options.file_store, static_cast<int>(options.world_size));
      impl_->store->setTimeout(timeout);
    } else {
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(options.master_port);
      so.isServer = options.rank == 0;
      so.numWorkers = static_cast<std::size_t>(options.world_size);
      so.waitWorkers = true;
      so.timeout = timeout;
      impl_->store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, so);
    }
    auto pg_options = c10d::ProcessGroupGloo::Options::create(timeout);
    // Loopback jobs (`--nproc`) talk over 127.0.0.1; others over GLOO_SOCKET_IFNAME or the
    // interface of this host's name, as PyTorch does.
    if (auto ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      pg_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (options.master_addr.rfind("127.", 0) == 0 || options.master_addr == "localhost")
      pg_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      pg_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    pg_options->threads = 2;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, static_cast<int>(options.rank),
                                                            static_cast<int>(options.world_size), pg_options);
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto* c = dynamic_cast<const c10::Error*>(&e)) what = c->what_without_backtrace();
    throw UserError(fmt::format("rank {} of {} could not join the job at {} within {:.0f} s: {}", options.rank,
                                options.world_size,
                                options.file_store.empty()
                                    ? fmt::format("{}:{} (MASTER_ADDR:MASTER_PORT)", options.master_addr,
                                                  options.master_port)
                                    : "file store " + options.file_store,
                                options.timeout_seconds, what));
  }
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors, int64_t root) {
  if (tensors.empty()) return;
  torch::NoGradGuard no_grad;
  // One flattened broadcast per dtype (few messages); results are copied back in place.
  std::map<c10::ScalarType, std::vector<torch::Tensor>> by_type;
  for (const auto& t : tensors)
    if (t.defined() && t.numel() > 0) by_type[t.scalar_type()].push_back(t);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<std::pair<torch::Tensor, std::vector<torch::Tensor>*>> flats;
  for (auto& [type, list] : by_type) {
    std::vector<torch::Tensor> dense;
    for (const auto& t : list) dense.push_back(t.detach().contiguous());
    std::vector<torch::Tensor> flat = {torch::utils::flatten_dense_tensors(dense)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    try {
      works.push_back(impl_->pg->broadcast(flat, o));
    } catch (const std::exception& e) {
      impl_->fail("broadcast", e);
    }
    flats.emplace_back(flat[0], &list);
  }
  for (auto& w : works) impl_->wait("broadcast", w);
  for (auto& [flat, list] : flats) {
    auto parts = torch::utils::unflatten_dense_tensors(flat, *list);
    for (size_t i = 0; i < list->size(); ++i) (*list)[i].detach().copy_(parts[i]);
  }
}

void ProcessGroup::broadcast_module(torch::nn::Module& module, const std::vector<torch::Tensor>& extra) {
  std::vector<torch::Tensor> all;
  for (const auto& p : module.parameters()) all.push_back(p);
  for (const auto& b : module.buffers()) all.push_back(b);
  all.insert(all.end(), extra.begin(), extra.end());
  broadcast(all, 0);
}

void ProcessGroup::all_reduce_sum(torch::Tensor& tensor) {
  std::vector<at::Tensor> t = {tensor};
  impl_->allreduce(t);
}

std::vector<double> ProcessGroup::all_reduce_sum(const std::vector<double>& values) {
  if (values.empty()) return {};
  auto t = torch::tensor(values, torch::kFloat64);
  all_reduce_sum(t);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

double ProcessGroup::all_reduce_max(double value) {
  std::vector<at::Tensor> t = {torch::tensor({value}, torch::kFloat64)};
  impl_->allreduce(t, c10d::ReduceOp::MAX);
  return t[0].item<double>();
}

void ProcessGroup::average_buffers(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> buffers;
  for (const auto& b : module.buffers())
    if (b.defined() && b.numel() > 0 && b.is_floating_point()) buffers.push_back(b);
  if (buffers.empty()) return;
  std::map<c10::ScalarType, std::vector<torch::Tensor>> by_type;
  for (const auto& b : buffers) by_type[b.scalar_type()].push_back(b);
  for (auto& [type, list] : by_type) {
    std::vector<torch::Tensor> dense;
    for (const auto& t : list) dense.push_back(t.detach().contiguous());
    std::vector<at::Tensor> flat = {torch::utils::flatten_dense_tensors(dense)};
    impl_->allreduce(flat);
    // (x + x) / 2 == x exactly in binary floating point: buffers that agree are unchanged.
    flat[0].div_(static_cast<double>(world_size()));
    auto parts = torch::utils::unflatten_dense_tensors(flat[0], list);
    for (size_t i = 0; i < list.size(); ++i) list[i].copy_(parts[i]);
  }
}

StepReduction ProcessGroup::average_gradients(const std::vector<torch::Tensor>& params, double local_loss,
                                              int64_t local_count, bool local_stop) {
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  // Every trainable tensor has a place in the buckets whether or not this rank produced its
  // gradient (a block skipped on one rank only): the layout must be the same on every rank. A
  // gradient absent here counts as zero; it is absent after the average only if absent on
  // every rank, as it would be for the global batch in one process.
  struct Bucket {
    std::vector<size_t> members;  // indices into params
    std::vector<torch::Tensor> grads;
    std::vector<at::Tensor> flat;
    int64_t bytes = 0;
  };
  std::vector<Bucket> buckets;
  std::map<c10::ScalarType, size_t> open;  // dtype -> index of its bucket being filled
  std::vector<size_t> used;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    if (!p.defined() || !p.requires_grad()) continue;
    const auto& g = p.grad();
    TORCH_CHECK(!g.defined() || !g.is_sparse(), "distributed training: sparse gradients are not supported");
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    auto it = open.find(p.scalar_type());
    if (it == open.end() || buckets[it->second].bytes + bytes > options_.bucket_bytes) {
      buckets.emplace_back();
      open[p.scalar_type()] = buckets.size() - 1;
      it = open.find(p.scalar_type());
    }
    auto& b = buckets[it->second];
    b.members.push_back(i);
    b.grads.push_back(g.defined() ? g : torch::zeros_like(p));
    b.bytes += bytes;
    used.push_back(i);
  }
  const double weight = static_cast<double>(local_count);
  // Loss, example count, stop request and which gradients exist travel in one small all-reduce.
  std::vector<double> head = {local_loss * weight, weight, local_stop ? 1.0 : 0.0};
  for (auto i : used) head.push_back(params[i].grad().defined() ? 1.0 : 0.0);
  std::vector<at::Tensor> stats = {torch::tensor(head, torch::kFloat64)};
  // Every bucket is sent before waiting on any: Gloo overlaps their transfers.
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  try {
    for (auto& b : buckets) {
      b.flat = {torch::utils::flatten_dense_tensors(b.grads)};
      // Each rank's gradient is of its local mean: weight it by its example count (a rank with
      // no example this step, whose mean loss was NaN, contributes nothing).
      if (local_count > 0)
        b.flat[0].mul_(weight);
      else
        b.flat[0].zero_();
      works.push_back(impl_->pg->allreduce(b.flat));
    }
    works.push_back(impl_->pg->allreduce(stats));
  } catch (const std::exception& e) {
    impl_->fail("all-reduce", e);
  }
  for (auto& w : works) impl_->wait("all-reduce", w);
  const double* s = stats[0].data_ptr<double>();
  std::map<size_t, bool> any_rank_has;  // param index -> some rank produced its gradient
  for (size_t k = 0; k < used.size(); ++k) any_rank_has[used[k]] = s[3 + k] > 0;
  StepReduction r;
  r.examples = static_cast<int64_t>(std::llround(s[1]));
  r.loss = s[0] / std::max(s[1], 1.0);
  r.stop = s[2] > 0;
  for (auto& b : buckets) {
    b.flat[0].div_(std::max(s[1], 1.0));
    auto parts = torch::utils::unflatten_dense_tensors(b.flat[0], b.grads);
    for (size_t k = 0; k < b.members.size(); ++k) {
      auto p = params[b.members[k]];
      if (!any_rank_has[b.members[k]]) continue;
      if (p.grad().defined())
        p.grad().copy_(parts[k]);
      else
        p.mutable_grad() = parts[k].clone();
    }
  }
  r.allreduce_seconds = Seconds(std::chrono::steady_clock::now() - start).count();
  allreduce_seconds_ += r.allreduce_seconds;
  ++allreduce_steps_;
  return r;
}

double ProcessGroup::max_difference_from_rank0(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> mine, copies;
  for (const auto& p : module.parameters()) mine.push_back(p);
  for (const auto& b : module.buffers()) mine.push_back(b);
  for (const auto& t : mine) copies.push_back(t.detach().clone());
  broadcast(copies, 0);
  double diff = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (!mine[i].defined() || mine[i].numel() == 0) continue;
    auto d = (mine[i].detach().to(torch::kFloat64) - copies[i].to(torch::kFloat64)).abs().max().item<double>();
    diff = std::max(diff, std::isnan(d) ? std::numeric_limits<double>::infinity() : d);
  }
  return all_reduce_max(diff);
}

#else  // without the Gloo headers: creating a group says how to get them

struct ProcessGroup::Impl {};

ProcessGroup::ProcessGroup(const DistOptions& options) : options_(options) {
  throw UserError(fmt::format(
      "rank {} of {}: this Shrink was built without the Gloo headers, so it cannot train with more than one "
      "process. Install libgloo-dev (scripts/setup.sh does) and rebuild.",
      options.rank, options.world_size));
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::broadcast(const std::vector<torch::Tensor>&, int64_t) {}
void ProcessGroup::broadcast_module(torch::nn::Module&, const std::vector<torch::Tensor>&) {}
void ProcessGroup::all_reduce_sum(torch::Tensor&) {}
std::vector<double> ProcessGroup::all_reduce_sum(const std::vector<double>& values) { return values; }
double ProcessGroup::all_reduce_max(double value) { return value; }
void ProcessGroup::average_buffers(torch::nn::Module&) {}
StepReduction ProcessGroup::average_gradients(const std::vector<torch::Tensor>&, double local_loss,
                                              int64_t local_count, bool local_stop) {
  return {local_loss, local_count, local_stop, 0.0};
}
double ProcessGroup::max_difference_from_rank0(torch::nn::Module&) { return 0; }

#endif

ProcessGroup* default_group() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_default.get();
}

void set_default_group(std::shared_ptr<ProcessGroup> group) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_default = std::move(group);
}

ProcessGroup* init_from_env(double timeout_seconds) {
  auto options = options_from_env(timeout_seconds);
  if (!options || options->world_size <= 1) return nullptr;
  set_default_group(std::make_shared<ProcessGroup>(*options));
  return default_group();
}

}  // namespace shrink::distributed
