#include "shrink/nn/hashed_linear.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "shrink/core/rng.h"

namespace shrink::nn {

namespace detail {
namespace {
/// The mixed key of one virtual weight; both hashes are read from it.
uint64_t position_key(int64_t seed, int64_t row, int64_t column) {
  uint64_t x = mix64(mix64(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(row));
  return mix64(x ^ static_cast<uint64_t>(column));
}
}  // namespace

int64_t hashed_index(int64_t seed, int64_t row, int64_t column, int64_t size) {
  return static_cast<int64_t>(position_key(seed, row, column) % static_cast<uint64_t>(size));
}

int hashed_sign(int64_t seed, int64_t row, int64_t column) {
  // A second mix so the sign does not follow the index's low bits.
  return (mix64(position_key(seed, row, column) ^ 0xD6E8FEB86659FD93ULL) >> 63) ? -1 : 1;
}
}  // namespace detail

HashedLinearImpl::HashedLinearImpl(const HashedLinearOptions& options_) : options(options_) { reset(); }

void HashedLinearImpl::reset() {
  const int64_t in = options.in_features(), out = options.out_features();
  TORCH_CHECK(in > 0 && out > 0, "shrink::nn::HashedLinear: in_features and out_features must be positive, got ", in,
              " and ", out);
  TORCH_CHECK(options.compression() > 0 && options.compression() <= 1,
              "shrink::nn::HashedLinear: compression must be in (0, 1], got ", options.compression());
  const double virtual_count = static_cast<double>(in) * static_cast<double>(out);
  const int64_t size = std::max<int64_t>(1, std::llround(options.compression() * virtual_count));
  TORCH_CHECK(2 * size <= std::numeric_limits<int32_t>::max(), "shrink::nn::HashedLinear: ", size,
              " stored weights are too many for an int32 index");
  weight = register_parameter("weight", torch::empty({size}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(out));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  // The sign is folded into the index: entries >= size read -w (forward gathers from [w; -w]).
  auto index = torch::empty({out, in}, torch::kInt);
  auto* p = index.data_ptr<int32_t>();
  for (int64_t i = 0; i < out; ++i)
    for (int64_t j = 0; j < in; ++j) {
      const auto h = detail::hashed_index(options.seed(), i, j, size);
      *p++ = static_cast<int32_t>(detail::hashed_sign(options.seed(), i, j) > 0 ? h : size + h);
    }
  hash_index = register_buffer("hash_index", index);
  reset_parameters();
}

void HashedLinearImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const auto bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
  torch::nn::init::uniform_(weight, -bound, bound);
  if (bias.defined()) torch::nn::init::uniform_(bias, -bound, bound);
}

torch::Tensor HashedLinearImpl::virtual_weight() const {
  auto table = torch::cat({weight, weight.neg()});
  return table.index_select(0, hash_index.flatten()).view({options.out_features(), options.in_features()});
}

torch::Tensor HashedLinearImpl::forward(const torch::Tensor& input) {
  int64_t positions = 1;
  const auto sizes = input.sizes();
  for (size_t d = 1; d + 1 < sizes.size(); ++d) positions *= sizes[d];
  positions_ = positions;
  return torch::linear(input, virtual_weight(), bias);
}

int64_t HashedLinearImpl::macs_per_sample() const {
  return positions_ * options.in_features() * options.out_features();
}

void HashedLinearImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "shrink::nn::HashedLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias()
         << ", compression=" << options.compression() << ", stored=" << weight.numel() << ")";
}

}  // namespace shrink::nn
