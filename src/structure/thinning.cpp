#include "shrink/structure/thinning.h"

#include "shrink/core/compat.h"

#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink::structure {

namespace {

/// Output channels of a Conv2d or Linear (for concatenation offsets).
int64_t outputs_of(const torch::nn::Module& m) {
  if (auto* c = dynamic_cast<const nn::Conv2dImpl*>(&m)) return c->options.out_channels();
  if (auto* l = dynamic_cast<const nn::LinearImpl*>(&m)) return l->options.out_features();
  TORCH_CHECK(false, "offset layer is not a shrink::nn::Conv2d or Linear");
}

void select_in_place(const torch::Tensor& t, int64_t dim, const torch::Tensor& index) {
  if (!t.defined()) return;
  resize_in_place(t, t.index_select(dim, index.to(t.device())));
}

/// Indices along a consumer's input dimension that survive: all but the removed channels'
/// blocks, shifted by the concatenation offset.
torch::Tensor consumer_keep(int64_t inputs, int64_t offset, int64_t block, const std::vector<int64_t>& removed) {
  std::vector<bool> gone(static_cast<size_t>(inputs), false);
  for (int64_t c : removed)
    for (int64_t j = 0; j < block; ++j) gone[static_cast<size_t>((offset + c) * block + j)] = true;
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < inputs; ++i)
    if (!gone[static_cast<size_t>(i)]) keep.push_back(i);
  return torch::tensor(keep, torch::kLong);
}

int64_t offset_of(const ChannelMember& m) {
  int64_t offset = 0;
  for (const auto& before : m.offset_after) offset += outputs_of(*before);
  return offset;
}

std::vector<int64_t> removed_channels(int64_t channels, const std::vector<int64_t>& keep) {
  TORCH_CHECK(!keep.empty(), "thin: a group must keep at least one channel");
  std::vector<bool> kept(static_cast<size_t>(channels), false);
  int64_t previous = -1;
  for (int64_t k : keep) {
    TORCH_CHECK(k > previous && k < channels, "thin: kept channels must be sorted, distinct and in [0, ", channels,
                "), got ", k);
    kept[static_cast<size_t>(k)] = true;
    previous = k;
  }
  std::vector<int64_t> removed;
  for (int64_t c = 0; c < channels; ++c)
    if (!kept[static_cast<size_t>(c)]) removed.push_back(c);
  return removed;
}

void add_param(std::vector<torch::Tensor>& out, const torch::Tensor& t) {
  if (t.defined()) out.push_back(t);
}

}  // namespace

void resize_in_place(const torch::Tensor& tensor, const torch::Tensor& data) {
  torch::NoGradGuard no_grad;
  tensor.set_(data.contiguous());
  if (tensor.grad().defined()) tensor.mutable_grad() = torch::Tensor();
}

std::vector<torch::Tensor> thin(const ChannelGroup& group, const std::vector<int64_t>& keep) {
  const int64_t channels = group.channels();
  const auto removed = removed_channels(channels, keep);
  const int64_t k = static_cast<int64_t>(keep.size());
  const auto index = torch::tensor(keep, torch::kLong);
  std::vector<torch::Tensor> resized;
  if (removed.empty()) return resized;
  // Consumers first: their offsets read the producers' current channel counts, which must be
  // those before this group shrinks (a producer may precede another in a concatenation).
  for (const auto& m : group.members) {
    if (m.role != ChannelRole::consumer) continue;
    const int64_t offset = offset_of(m);
    if (auto* conv = m.module->as<nn::Conv2dImpl>()) {
      const auto cols = consumer_keep(conv->options.in_channels(), offset, 1, removed);
      select_in_place(conv->weight, 1, cols);
      select_in_place(conv->weight_mask, 1, cols);
      conv->options.in_channels(cols.numel());
      add_param(resized, conv->weight);
    } else if (auto* fc = m.module->as<nn::LinearImpl>()) {
      const auto cols = consumer_keep(fc->options.in_features(), offset, m.block, removed);
      select_in_place(fc->weight, 1, cols);
      select_in_place(fc->weight_mask, 1, cols);
      fc->options.in_features(cols.numel());
      add_param(resized, fc->weight);
    } else {
      TORCH_CHECK(false, "thin: consumer ", m.path, " is not a shrink::nn::Conv2d or Linear");
    }
  }
  for (const auto& m : group.members) {
    switch (m.role) {
      case ChannelRole::consumer:
        break;
      case ChannelRole::producer:
      case ChannelRole::passthrough:
        if (auto* conv = m.module->as<nn::Conv2dImpl>()) {
          select_in_place(conv->weight, 0, index);
          select_in_place(conv->bias, 0, index);
          select_in_place(conv->weight_mask, 0, index);
          conv->options.out_channels(k);
          if (m.role == ChannelRole::passthrough) conv->options.in_channels(k).groups(k);
          add_param(resized, conv->weight);
          add_param(resized, conv->bias);
        } else if (auto* fc = m.module->as<nn::LinearImpl>()) {
          TORCH_CHECK(m.role == ChannelRole::producer, "thin: a Linear cannot pass channels through (", m.path, ")");
          select_in_place(fc->weight, 0, index);
          select_in_place(fc->bias, 0, index);
          select_in_place(fc->weight_mask, 0, index);
          fc->options.out_features(k);
          add_param(resized, fc->weight);
          add_param(resized, fc->bias);
        } else {
          TORCH_CHECK(false, "thin: ", m.path, " is not a shrink::nn::Conv2d or Linear");
        }
        break;
      case ChannelRole::norm: {
        auto* bn = m.module->as<torch::nn::BatchNorm2dImpl>();
        TORCH_CHECK(bn, "thin: ", m.path, " is not a BatchNorm2d");
        select_in_place(bn->weight, 0, index);
        select_in_place(bn->bias, 0, index);
        select_in_place(bn->running_mean, 0, index);
        select_in_place(bn->running_var, 0, index);
        bn->options.num_features(k);
        add_param(resized, bn->weight);
        add_param(resized, bn->bias);
        break;
      }
    }
  }
  return resized;
}

std::vector<ZeroedRows> mask_channels(const ChannelGroup& group, const std::vector<int64_t>& keep) {
  const auto removed_list = removed_channels(group.channels(), keep);
  std::vector<ZeroedRows> zeroed;
  if (removed_list.empty()) return zeroed;
  const auto removed = torch::tensor(removed_list, torch::kLong);
  torch::NoGradGuard no_grad;
  auto rows_of = [&](const torch::Tensor& t) {
    if (t.defined()) zeroed.push_back({t, removed.to(t.device())});
  };
  for (const auto& m : group.members) {
    auto* conv = m.module->as<nn::Conv2dImpl>();
    auto* fc = m.module->as<nn::LinearImpl>();
    switch (m.role) {
      case ChannelRole::producer:
      case ChannelRole::passthrough: {
        if (conv) conv->enable_mask();
        if (fc) fc->enable_mask();
        TORCH_CHECK(conv || fc, "mask_channels: ", m.path, " is not a shrink::nn::Conv2d or Linear");
        const auto& mask = conv ? conv->weight_mask : fc->weight_mask;
        mask.index_fill_(0, removed.to(mask.device()), 0.0);
        if (conv) conv->apply_mask(); else fc->apply_mask();
        rows_of(conv ? conv->bias : fc->bias);
        break;
      }
      case ChannelRole::norm: {
        auto* bn = m.module->as<torch::nn::BatchNorm2dImpl>();
        TORCH_CHECK(bn, "mask_channels: ", m.path, " is not a BatchNorm2d");
        rows_of(bn->weight);
        rows_of(bn->bias);
        break;
      }
      case ChannelRole::consumer: {
        TORCH_CHECK(conv || fc, "mask_channels: ", m.path, " is not a shrink::nn::Conv2d or Linear");
        if (conv) conv->enable_mask();
        if (fc) fc->enable_mask();
        const auto& mask = conv ? conv->weight_mask : fc->weight_mask;
        const int64_t inputs = mask.size(1);
        // Inputs of the removed channels: everything but consumer_keep's complement.
        const auto kept_cols = consumer_keep(inputs, offset_of(m), m.block, removed_list);
        auto col_mask = torch::zeros({inputs}, mask.options());
        col_mask.index_fill_(0, kept_cols.to(mask.device()), 1.0);
        std::vector<int64_t> shape(static_cast<size_t>(mask.dim()), 1);
        shape[1] = inputs;
        mask.mul_(col_mask.view(shape));
        if (conv) conv->apply_mask(); else fc->apply_mask();
        break;
      }
    }
  }
  zero_rows(zeroed);
  return zeroed;
}

void zero_rows(const std::vector<ZeroedRows>& rows) {
  torch::NoGradGuard no_grad;
  for (const auto& r : rows) r.tensor.index_fill_(0, r.rows, 0.0);
}

void zero_row_gradients(const std::vector<ZeroedRows>& rows) {
  torch::NoGradGuard no_grad;
  for (const auto& r : rows)
    if (r.tensor.grad().defined()) r.tensor.mutable_grad().index_fill_(0, r.rows, 0.0);
}

int64_t forget_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& params) {
  int64_t erased = 0;
  for (const auto& p : params) erased += compat::erase_optimizer_state(optimizer, p) ? 1 : 0;
  return erased;
}

}  // namespace shrink::structure
