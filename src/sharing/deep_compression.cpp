#include "shrink/sharing/deep_compression.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "shrink/sharing/huffman.h"

namespace shrink::sharing {
namespace {

constexpr uint32_t kMagnitude = 0x7fffffffu;  // float bits without the sign: 0 for +0.0 and -0.0

torch::Tensor float_cpu(const torch::Tensor& t) {
  return t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
}

inline uint32_t bits_of(const float* p) {
  uint32_t b;
  std::memcpy(&b, p, sizeof b);
  return b;
}

int ceil_log2(int64_t n) {
  int b = 0;
  while ((int64_t(1) << b) < n) ++b;
  return b;
}

void check_index_bits(int index_bits) {
  TORCH_CHECK(index_bits >= 1 && index_bits <= 16, "Deep Compression index bits must be in [1, 16] (got ",
              index_bits, ")");
}

/// The distinct nonzero bit patterns of `data`, ascending, into `out`; false as soon as there
/// are more than `limit` (dense float layers stop after a few hundred elements).
bool distinct_nonzero(const float* data, int64_t n, int64_t limit, std::vector<uint32_t>& out) {
  out.clear();
  uint32_t last = 0;  // runs of one value are common after sharing; 0 is never a stored value
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = bits_of(data + i);
    if (!(b & kMagnitude) || b == last) continue;
    auto it = std::lower_bound(out.begin(), out.end(), b);
    if (it == out.end() || *it != b) {
      if (static_cast<int64_t>(out.size()) >= limit) return false;
      out.insert(it, b);
    }
    last = b;
  }
  return true;
}

/// Nonzeros (negative zeros excluded); a branch-free loop the compiler vectorizes.
int64_t count_nonzero(const float* data, int64_t n) {
  const auto* bits = reinterpret_cast<const uint32_t*>(data);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += (bits[i] & kMagnitude) != 0;
  return count;
}

/// Looks up codebook indices, remembering the last hit.
struct CodebookIndex {
  const std::vector<uint32_t>& book;
  uint32_t last_bits = 0, last_index = 0;
  uint32_t operator()(uint32_t b) {
    if (b != last_bits) {
      last_bits = b;
      last_index = static_cast<uint32_t>(std::lower_bound(book.begin(), book.end(), b) - book.begin());
    }
    return last_index;
  }
};

/// Calls entry(gap, bits) for every nonzero in flattened order and fillers(count) before an
/// entry whose gap exceeds max_gap (its gap then is what is left after the fillers).
template <class Entry, class Fillers>
void scan(const float* data, int64_t n, int64_t max_gap, Entry&& entry, Fillers&& fillers) {
  int64_t prev = -1;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = bits_of(data + i);
    if (!(b & kMagnitude)) continue;
    int64_t gap = i - prev;
    if (gap > max_gap) {
      const int64_t f = (gap - 1) / max_gap;
      fillers(f);
      gap -= f * max_gap;
    }
    entry(static_cast<uint32_t>(gap), b);
    prev = i;
  }
}

double ratio(double num, double den) {
  if (den == 0) return num == 0 ? 1.0 : std::numeric_limits<double>::infinity();
  return num / den;
}

}  // namespace

int coded_index_bits(const std::string& parameter_name, const torch::Tensor& parameter,
                     const DeepCompressionOptions& options) {
  check_index_bits(options.conv_index_bits);
  check_index_bits(options.fc_index_bits);
  if (parameter_name != "weight" || !parameter.defined() || parameter.dim() < 2 || !parameter.is_floating_point())
    return 0;
  return parameter.dim() == 2 ? options.fc_index_bits : options.conv_index_bits;
}

WeightStorage weight_storage(const torch::Tensor& weight, int index_bits, int64_t max_codebook) {
  check_index_bits(index_bits);
  WeightStorage s;
  s.index_bits = index_bits;
  if (!weight.defined()) return s;
  const auto t = float_cpu(weight);
  const float* data = t.data_ptr<float>();
  const int64_t n = t.numel();
  const int64_t max_gap = (int64_t(1) << index_bits) - 1;
  s.weights = n;

  std::vector<uint32_t> book;
  const bool codebook = distinct_nonzero(data, n, max_codebook, book);
  const int64_t k = static_cast<int64_t>(book.size());
  std::vector<uint64_t> gap_count(max_gap + 1, 0);
  std::vector<uint64_t> value_count(codebook ? k + 1 : 0, 0);  // symbol k: zero (fillers)
  auto add_fillers = [&](int64_t f) {
    s.filler += f;
    gap_count[max_gap] += static_cast<uint64_t>(f);
    if (codebook) value_count[k] += static_cast<uint64_t>(f);
  };
  if (codebook) {
    CodebookIndex index{book};
    scan(data, n, max_gap,
         [&](uint32_t gap, uint32_t b) {
           ++gap_count[gap];
           ++value_count[index(b)];
           ++s.nonzero;
         },
         add_fillers);
  } else {
    const int64_t nonzero = count_nonzero(data, n);
    if (nonzero == n) {  // dense: every gap is 1, no scan needed
      gap_count[1] = static_cast<uint64_t>(n);
      s.nonzero = n;
    } else {
      scan(data, n, max_gap,
           [&](uint32_t gap, uint32_t) {
             ++gap_count[gap];
             ++s.nonzero;
           },
           add_fillers);
    }
  }
  s.entries = s.nonzero + s.filler;
  if (s.entries == 0) return s;

  s.index_storage_bits = s.entries * index_bits;
  const auto gap_code = HuffmanCode::from_frequencies(gap_count);
  s.huffman_index_bits = static_cast<int64_t>(gap_code.coded_bits(gap_count) + gap_code.table_bits());
  if (codebook) {
    s.codebook = true;
    s.codebook_size = k;
    s.value_bits = std::max(1, ceil_log2(k + (s.filler > 0 ? 1 : 0)));
    s.value_storage_bits = s.entries * s.value_bits;
    s.codebook_bits = k * 32;
    const auto value_code = HuffmanCode::from_frequencies(value_count);
    s.huffman_value_bits = static_cast<int64_t>(value_code.coded_bits(value_count) + value_code.table_bits());
  } else {
    s.value_bits = 32;
    s.value_storage_bits = s.entries * 32;
    s.huffman_value_bits = s.value_storage_bits;
  }
  return s;
}

LayerStorage layer_storage(const torch::nn::Module& module, const std::string& name,
                           const DeepCompressionOptions& options) {
  LayerStorage l;
  l.name = name;
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    const auto& t = p.value();
    if (!t.defined()) continue;
    l.parameters += t.numel();
    const int bits = l.weight.empty() ? coded_index_bits(p.key(), t, options) : 0;
    if (bits) {
      l.weight = p.key();
      l.coded = weight_storage(t, bits, options.max_codebook);
    } else {
      l.other_parameters += t.numel();
    }
  }
  return l;
}

double ModelStorage::rate() const { return ratio(double(dense_bits()), double(bits)); }
double ModelStorage::huffman_rate() const { return ratio(double(dense_bits()), double(huffman_bits)); }

ModelStorage model_storage(const torch::nn::Module& model, const DeepCompressionOptions& options) {
  ModelStorage m;
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    if (item.value()->named_parameters(/*recurse=*/false).is_empty()) continue;
    auto l = layer_storage(*item.value(), item.key(), options);
    m.parameters += l.parameters;
    m.bits += l.bits();
    m.huffman_bits += l.huffman_bits();
    m.layers.push_back(std::move(l));
  }
  return m;
}

int64_t SparseWeight::value_symbols() const {
  return static_cast<int64_t>(codebook_values.size()) + (filler > 0 ? 1 : 0);
}

SparseWeight sparse_weight(const torch::Tensor& weight, int index_bits, int64_t max_codebook) {
  check_index_bits(index_bits);
  TORCH_CHECK(weight.defined() && weight.scalar_type() == torch::kFloat32, "sparse_weight: expects a float32 tensor");
  SparseWeight s;
  s.shape = weight.sizes().vec();
  s.index_bits = index_bits;
  const auto t = float_cpu(weight);
  const float* data = t.data_ptr<float>();
  const int64_t n = t.numel();
  const int64_t max_gap = (int64_t(1) << index_bits) - 1;
  s.codebook = distinct_nonzero(data, n, max_codebook, s.codebook_values);
  if (!s.codebook) s.codebook_values.clear();
  const auto k = static_cast<uint32_t>(s.codebook_values.size());
  CodebookIndex index{s.codebook_values};
  scan(data, n, max_gap,
       [&](uint32_t gap, uint32_t b) {
         s.gaps.push_back(gap);
         s.values.push_back(s.codebook ? index(b) : b);
       },
       [&](int64_t f) {
         s.filler += f;
         s.gaps.insert(s.gaps.end(), static_cast<size_t>(f), static_cast<uint32_t>(max_gap));
         s.values.insert(s.values.end(), static_cast<size_t>(f), s.codebook ? k : 0u);
       });
  return s;
}

torch::Tensor dense_weight(const SparseWeight& s) {
  check_index_bits(s.index_bits);
  TORCH_CHECK(s.gaps.size() == s.values.size(), "dense_weight: ", s.gaps.size(), " gaps but ", s.values.size(),
              " values");
  auto out = torch::zeros(s.shape, torch::kFloat32);
  float* data = out.data_ptr<float>();
  const int64_t n = out.numel();
  const int64_t max_gap = (int64_t(1) << s.index_bits) - 1;
  const auto k = static_cast<uint32_t>(s.codebook_values.size());
  int64_t pos = -1;
  for (size_t i = 0; i < s.gaps.size(); ++i) {
    const int64_t gap = s.gaps[i];
    TORCH_CHECK(gap >= 1 && gap <= max_gap, "dense_weight: entry ", i, " has gap ", gap, " outside [1, ", max_gap,
                "]");
    pos += gap;
    TORCH_CHECK(pos < n, "dense_weight: entry ", i, " lies at position ", pos, " past the ", n, " elements");
    uint32_t b = s.values[i];
    if (s.codebook) {
      TORCH_CHECK(b <= k, "dense_weight: entry ", i, " has codebook index ", b, " for ", k, " values");
      b = b == k ? 0u : s.codebook_values[b];
    }
    std::memcpy(data + pos, &b, sizeof b);
  }
  return out;
}

}  // namespace shrink::sharing
