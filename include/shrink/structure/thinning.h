#pragma once
// Physical removal of channels ("thinning") and its masked equivalent.
//
// thin() resizes every tensor of a channel group in place: `tensor.set_(smaller)` under
// NoGradGuard keeps each tensor's identity (its TensorImpl), so the module's members, its
// registered parameters and buffers, an optimizer's parameter list and other methods' handles
// all see the new shape. The layers' options follow (Conv2d in/out channels and groups,
// BatchNorm2d num_features, Linear in/out features), so MACs, printing and clone() agree.
// Gradients of resized parameters are cleared. An optimizer's per-parameter state (momentum,
// Adam moments) keeps the old shape: drop it with forget_optimizer_state().
//
// mask_channels() gives the same function without changing shapes: producer and depthwise
// filters and consumer inputs are zeroed through the layers' `weight_mask` buffers (which the
// trainer keeps applied), and biases and BatchNorm scales/shifts of the removed channels are
// zeroed (the caller keeps them at zero: zero_rows() after each optimizer step,
// zero_row_gradients() before it). A removed channel then carries exactly zero, so the
// thinned and masked models compute the same outputs.
#include <torch/torch.h>

#include <vector>

#include "shrink/structure/channel_groups.h"

namespace shrink::structure {

/// Keeps the channels `keep` of `group` (sorted, distinct, in [0, group.channels()), not
/// empty) and removes the others from every member. Returns the parameters whose shape
/// changed (for forget_optimizer_state). TORCH_CHECKs `keep`.
std::vector<torch::Tensor> thin(const ChannelGroup& group, const std::vector<int64_t>& keep);

/// Rows (indices along dim 0) of a parameter that must stay zero.
struct ZeroedRows {
  torch::Tensor tensor;
  torch::Tensor rows;  ///< int64 indices
};

/// Masks the channels of `group` not in `keep` (see the file comment); enables the masks of
/// its conv/linear layers as needed. Returns the bias and BatchNorm rows to keep at zero.
std::vector<ZeroedRows> mask_channels(const ChannelGroup& group, const std::vector<int64_t>& keep);

/// tensor[rows] = 0 for each entry (no grad).
void zero_rows(const std::vector<ZeroedRows>& rows);
/// grad[rows] = 0 for each entry whose tensor has a gradient.
void zero_row_gradients(const std::vector<ZeroedRows>& rows);

/// Replaces `tensor`'s data by `data` (any shape) keeping its identity; clears its gradient.
void resize_in_place(const torch::Tensor& tensor, const torch::Tensor& data);

/// Erases `optimizer`'s state (momentum buffers, Adam moments, ...) for `params`, so it starts
/// again for them at the next step (needed after their shape changed); the version-specific key
/// is compat::erase_optimizer_state's business. Returns how many entries were erased.
int64_t forget_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& params);

}  // namespace shrink::structure
