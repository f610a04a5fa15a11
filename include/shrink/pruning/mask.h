#pragma once
// Pruning masks. On Shrink's layers (nn::Conv2d, nn::Linear) a mask is the layer's
// `weight_mask` buffer, so it is saved, moved and cloned with the model. Any other parameter
// (plain torch::nn modules, TorchScript modules) is masked by name through ParameterMasks.
//
// Masks are not multiplied in forward: pruned weights are set to zero once, their gradients
// are zeroed before every optimizer step (so momentum and Adam state never move them) and the
// weights are multiplied by the mask after every step (so weight decay cannot revive them).
// That costs two element-wise products per step instead of one per forward and backward.
#include <torch/torch.h>
#include <torch/script.h>

#include <string>
#include <vector>

namespace shrink::pruning {

/// A masked weight: its dotted parameter name, the parameter and its mask (same shape, 0/1).
struct MaskedWeight {
  std::string name;
  torch::Tensor weight;
  torch::Tensor mask;
};

/// Whether `module` is a Shrink layer that can hold a mask (nn::Conv2d, nn::Linear).
bool is_maskable_layer(const torch::nn::Module& module);
/// Enables the mask of the Shrink layer `module` (no-op if present); false if not maskable.
bool enable_layer_mask(torch::nn::Module& module);
/// The layer's weight and mask (undefined mask if it has none). TORCH_CHECKs it is maskable.
MaskedWeight layer_weight(torch::nn::Module& module, const std::string& name);

/// Every Shrink layer of `model` that has a mask, in model order (names are "<path>.weight").
std::vector<MaskedWeight> layer_masks(torch::nn::Module& model);
/// grad *= mask for every masked layer of `model` (before the optimizer step).
void mask_gradients(torch::nn::Module& model);
/// weight *= mask for every masked layer of `model` (after the optimizer step, after loading).
void apply_masks(torch::nn::Module& model);

/// For each "<path>.weight_mask" in `names` whose module is a Shrink layer without a mask,
/// enables the mask (so a state dict holding masks loads into a freshly built model).
/// Returns how many masks were enabled.
int64_t enable_masks_named(torch::nn::Module& model, const std::vector<std::string>& names);

/// Masks on arbitrary parameters, found by name in a torch::nn::Module or a TorchScript
/// module. The masks belong to this object (save them with `masks()`); the caller runs
/// mask_gradients() before and apply() after each optimizer step.
class ParameterMasks {
 public:
  /// Adds the parameter `name` of `module` with an all-ones mask (UserError if absent).
  void add(torch::nn::Module& module, const std::string& name);
  void add(const torch::jit::Module& module, const std::string& name);
  /// Adds a parameter directly.
  void add(const std::string& name, torch::Tensor weight);

  std::vector<MaskedWeight>& weights() { return weights_; }
  const std::vector<MaskedWeight>& weights() const { return weights_; }
  /// Replaces the mask of `name` (same shape) and applies it.
  void set_mask(const std::string& name, const torch::Tensor& mask);
  void mask_gradients();
  void apply();

 private:
  std::vector<MaskedWeight> weights_;
};

/// Mask keeping the largest `scores`: the round(sparsity * numel) smallest entries become 0
/// (ties broken by position, so exactly that many are pruned). sparsity in [0, 1].
torch::Tensor keep_largest(const torch::Tensor& scores, double sparsity);

/// One threshold over all tensors: the round(sparsity * total) smallest scores across all of
/// them are pruned. Returns one mask per score tensor.
std::vector<torch::Tensor> keep_largest_global(const std::vector<torch::Tensor>& scores, double sparsity);

/// Fraction of zeros in `mask`.
double mask_sparsity(const torch::Tensor& mask);

/// Automated gradual pruning (Zhu & Gupta 2017): s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3
/// for t in [t0, t0 + n dt], s_i before and s_f after. `begin` = t0, `end` = t0 + n dt.
double agp_sparsity(double initial, double final_sparsity, int64_t begin, int64_t end, int64_t step);

/// Iterative pruning (Han et al. 2015) in `cycles` equal steps of the kept fraction: after
/// cycle k (1-based) the sparsity is 1 - (1 - s_f)^(k / cycles).
double iterative_sparsity(double final_sparsity, int64_t cycles, int64_t cycle);

}  // namespace shrink::pruning
