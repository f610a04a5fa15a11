#include "shrink/pruning/mask.h"

#include <algorithm>
#include <cmath>

#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink::pruning {

bool is_maskable_layer(const torch::nn::Module& module) {
  // A composite (factorized, compact) layer has no weight of its own: its inner layers are masked.
  if (auto* conv = module.as<nn::Conv2dImpl>()) return !conv->composite();
  if (auto* fc = module.as<nn::LinearImpl>()) return !fc->composite();
  return false;
}

bool enable_layer_mask(torch::nn::Module& module) {
  if (auto* conv = module.as<nn::Conv2dImpl>()) {
    conv->enable_mask();
    return true;
  }
  if (auto* fc = module.as<nn::LinearImpl>()) {
    fc->enable_mask();
    return true;
  }
  return false;
}

MaskedWeight layer_weight(torch::nn::Module& module, const std::string& name) {
  if (auto* conv = module.as<nn::Conv2dImpl>()) return {name, conv->weight, conv->weight_mask};
  if (auto* fc = module.as<nn::LinearImpl>()) return {name, fc->weight, fc->weight_mask};
  TORCH_CHECK(false, "layer_weight: '", name, "' is not a Shrink Conv2d or Linear");
}

std::vector<MaskedWeight> layer_masks(torch::nn::Module& model) {
  std::vector<MaskedWeight> out;
  auto visit = [&](torch::nn::Module& m, const std::string& path) {
    if (!is_maskable_layer(m)) return;
    auto w = layer_weight(m, path.empty() ? "weight" : path + ".weight");
    if (w.mask.defined()) out.push_back(std::move(w));
  };
  // include_self=false: the root may live on the stack (named_modules(include_self) needs a shared_ptr).
  visit(model, "");
  for (const auto& item : model.named_modules("", /*include_self=*/false)) visit(*item.value(), item.key());
  return out;
}

namespace {
// Walks the model without building name strings: this runs twice per training step.
template <class F>
void visit_mask(torch::nn::Module& m, F& f) {
  if (auto* conv = m.as<nn::Conv2dImpl>()) {
    if (conv->weight_mask.defined()) f(conv->weight, conv->weight_mask);
  } else if (auto* fc = m.as<nn::LinearImpl>()) {
    if (fc->weight_mask.defined()) f(fc->weight, fc->weight_mask);
  }
}

template <class F>
void for_each_mask(torch::nn::Module& model, F&& f) {
  visit_mask(model, f);
  for (const auto& m : model.modules(/*include_self=*/false)) visit_mask(*m, f);
}
}  // namespace

void mask_gradients(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for_each_mask(model, [](torch::Tensor& w, const torch::Tensor& mask) {
    if (w.grad().defined()) w.mutable_grad().mul_(mask);
  });
}

void apply_masks(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for_each_mask(model, [](torch::Tensor& w, const torch::Tensor& mask) { w.mul_(mask); });
}

int64_t enable_masks_named(torch::nn::Module& model, const std::vector<std::string>& names) {
  static const std::string suffix = ".weight_mask";
  int64_t enabled = 0;
  auto modules = model.named_modules("", /*include_self=*/false);
  for (const auto& name : names) {
    std::string path;
    if (name == "weight_mask") {
      path = "";
    } else if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      path = name.substr(0, name.size() - suffix.size());
    } else {
      continue;
    }
    torch::nn::Module* module = &model;
    if (!path.empty()) {
      auto* found = modules.find(path);
      module = found ? found->get() : nullptr;
    }
    if (module == nullptr || !is_maskable_layer(*module)) continue;
    if (layer_weight(*module, name).mask.defined()) continue;
    enable_layer_mask(*module);
    ++enabled;
  }
  return enabled;
}

void ParameterMasks::add(const std::string& name, torch::Tensor weight) {
  for (const auto& w : weights_)
    if (w.name == name) return;
  auto mask = torch::ones_like(weight, weight.options().requires_grad(false));
  weights_.push_back({name, std::move(weight), std::move(mask)});
}

void ParameterMasks::add(torch::nn::Module& module, const std::string& name) {
  auto params = module.named_parameters();
  auto* p = params.find(name);
  if (p == nullptr) {
    std::string available;
    for (const auto& item : params) available += (available.empty() ? "" : ", ") + item.key();
    throw UserError("no parameter '" + name + "' to mask; parameters: " + available);
  }
  add(name, *p);
}

void ParameterMasks::add(const torch::jit::Module& module, const std::string& name) {
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.name == name) {
      add(name, item.value);
      return;
    }
  }
  std::string available;
  for (const auto& item : module.named_parameters(true)) available += (available.empty() ? "" : ", ") + item.name;
  throw UserError("no parameter '" + name + "' to mask in the TorchScript module; parameters: " + available);
}

void ParameterMasks::set_mask(const std::string& name, const torch::Tensor& mask) {
  for (auto& w : weights_) {
    if (w.name != name) continue;
    TORCH_CHECK(mask.sizes() == w.weight.sizes(), "mask for '", name, "' has shape ", mask.sizes(), ", the weight ",
                w.weight.sizes());
    torch::NoGradGuard no_grad;
    w.mask.copy_(mask);
    w.weight.mul_(w.mask);
    return;
  }
  TORCH_CHECK(false, "ParameterMasks::set_mask: no parameter '", name, "'");
}

void ParameterMasks::mask_gradients() {
  torch::NoGradGuard no_grad;
  for (auto& w : weights_)
    if (w.weight.grad().defined()) w.weight.mutable_grad().mul_(w.mask);
}

void ParameterMasks::apply() {
  torch::NoGradGuard no_grad;
  for (auto& w : weights_) w.weight.mul_(w.mask);
}

namespace {
int64_t prune_count(int64_t total, double sparsity) {
  TORCH_CHECK(sparsity >= 0.0 && sparsity <= 1.0, "sparsity must be in [0, 1], got ", sparsity);
  return std::min<int64_t>(total, static_cast<int64_t>(std::llround(sparsity * static_cast<double>(total))));
}
}  // namespace

torch::Tensor keep_largest(const torch::Tensor& scores, double sparsity) {
  const int64_t n = scores.numel();
  const int64_t k = prune_count(n, sparsity);
  auto mask = torch::ones(scores.sizes(), scores.options().dtype(torch::kFloat));
  if (k == 0) return mask;
  // A stable sort breaks ties by position, so exactly k entries are pruned.
  auto order = std::get<1>(scores.detach().reshape({-1}).to(torch::kFloat).sort(/*stable=*/true, 0, false));
  mask.view({-1}).index_fill_(0, order.slice(0, 0, k), 0.0);
  return mask;
}

std::vector<torch::Tensor> keep_largest_global(const std::vector<torch::Tensor>& scores, double sparsity) {
  std::vector<torch::Tensor> flat;
  int64_t total = 0;
  for (const auto& s : scores) {
    flat.push_back(s.detach().reshape({-1}).to(torch::kFloat).cpu());
    total += s.numel();
  }
  if (scores.empty()) return {};
  auto all_mask = keep_largest(torch::cat(flat), sparsity);
  std::vector<torch::Tensor> out;
  int64_t offset = 0;
  for (const auto& s : scores) {
    out.push_back(all_mask.slice(0, offset, offset + s.numel()).reshape(s.sizes()).to(s.device()).contiguous());
    offset += s.numel();
  }
  return out;
}

double mask_sparsity(const torch::Tensor& mask) {
  if (mask.numel() == 0) return 0.0;
  return 1.0 - mask.sum().item<double>() / static_cast<double>(mask.numel());
}

double agp_sparsity(double initial, double final_sparsity, int64_t begin, int64_t end, int64_t step) {
  if (step <= begin) return initial;
  if (step >= end || end <= begin) return final_sparsity;
  const double progress = static_cast<double>(step - begin) / static_cast<double>(end - begin);
  return final_sparsity + (initial - final_sparsity) * std::pow(1.0 - progress, 3.0);
}

double iterative_sparsity(double final_sparsity, int64_t cycles, int64_t cycle) {
  TORCH_CHECK(cycles >= 1, "cycles must be >= 1");
  if (cycle <= 0) return 0.0;
  if (cycle >= cycles) return final_sparsity;
  return 1.0 - std::pow(1.0 - final_sparsity, static_cast<double>(cycle) / static_cast<double>(cycles));
}

}  // namespace shrink::pruning
