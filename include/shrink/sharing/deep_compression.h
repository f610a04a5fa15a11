#pragma once
// Storage of a model as Deep Compression stores it (Han et al. 2016, Sec. 2-4), computed from
// the weight tensors alone, so it applies to any model whatever made its zeros and shared
// values (pruning, k-means sharing, quantization):
//
// - Nonzero weights are kept in flattened (row-major) order as entries (relative index, value).
//   The relative index is the gap to the previous entry (the first gap counts from position
//   -1, so it is >= 1), stored in `index_bits` bits; a gap above 2^index_bits - 1 is bridged by
//   filler entries of value zero placed every 2^index_bits - 1 positions.
// - Values: with at most `max_codebook` distinct nonzero values K, a codebook of K 32-bit floats
//   plus one index per entry of ceil(log2(S)) bits (at least 1), S = K symbols, plus one
//   symbol for "zero" when the layer has filler entries. Otherwise raw 32-bit floats (fillers
//   store 0.0f).
// - Huffman coding (huffman.h) of the value indices and of the gaps: two codes per weight,
//   each counted with its table (32-bit count + 5 bits per code length).
// - Every other parameter (biases, BatchNorm scales) costs 32 bits.
//
// Coded weights are the parameters named `weight` with at least two dimensions: 2-d (Linear)
// use `fc_index_bits`, others (convolutions) `conv_index_bits`. The paper's defaults: 8 and 5.
// Negative zeros count as zeros (they are not stored; decoding gives +0.0).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace shrink::sharing {

struct DeepCompressionOptions {
  int conv_index_bits = 8;     ///< relative index bits of weights with 3 or more dimensions, in [1, 16]
  int fc_index_bits = 5;       ///< relative index bits of 2-d weights, in [1, 16]
  int64_t max_codebook = 256;  ///< codebook when the weight has at most this many distinct nonzero values
};

/// Index bits for a parameter: 0 when it is not coded (not named "weight", fewer than two
/// dimensions, or not floating point). TORCH_CHECKs that the options' bits are in [1, 16].
int coded_index_bits(const std::string& parameter_name, const torch::Tensor& parameter,
                     const DeepCompressionOptions& options);

/// Storage of one coded weight tensor. All sizes in bits.
struct WeightStorage {
  int64_t weights = 0;       ///< elements
  int64_t nonzero = 0;
  int64_t filler = 0;        ///< zero-valued entries bridging gaps above 2^index_bits - 1
  int64_t entries = 0;       ///< nonzero + filler
  int index_bits = 0;        ///< bits per relative index
  bool codebook = false;     ///< values stored as codebook indices (else raw floats)
  int64_t codebook_size = 0; ///< K distinct nonzero values (0 for raw floats)
  int value_bits = 0;        ///< bits per stored value: codebook index bits, or 32
  int64_t index_storage_bits = 0;  ///< entries * index_bits
  int64_t value_storage_bits = 0;  ///< entries * value_bits
  int64_t codebook_bits = 0;       ///< K * 32
  int64_t huffman_index_bits = 0;  ///< Huffman-coded gaps, table included
  int64_t huffman_value_bits = 0;  ///< Huffman-coded value indices, table included (raw floats: as before)
  /// Before Huffman coding: indices + values + codebook.
  int64_t bits() const { return index_storage_bits + value_storage_bits + codebook_bits; }
  /// After Huffman coding of indices and values: coded streams + tables + codebook.
  int64_t huffman_bits() const { return huffman_index_bits + huffman_value_bits + codebook_bits; }
};

/// Storage of `weight` (any device and floating dtype; values are read as float32).
/// One pass over the data, plus a second one only for the value codebook.
WeightStorage weight_storage(const torch::Tensor& weight, int index_bits, int64_t max_codebook = 256);

/// Storage of the parameters a module owns (not its children's).
struct LayerStorage {
  std::string name;            ///< dotted module path ("" for the root)
  std::string weight;          ///< name of the coded parameter ("weight"), "" when none
  WeightStorage coded;         ///< zero when the module has no coded weight
  int64_t parameters = 0;      ///< all elements of the module's own parameters
  int64_t other_parameters = 0;  ///< elements not coded (stored at 32 bits)
  int64_t dense_bits() const { return parameters * 32; }
  int64_t bits() const { return coded.bits() + other_parameters * 32; }
  int64_t huffman_bits() const { return coded.huffman_bits() + other_parameters * 32; }
};

LayerStorage layer_storage(const torch::nn::Module& module, const std::string& name,
                           const DeepCompressionOptions& options = {});

struct ModelStorage {
  std::vector<LayerStorage> layers;  ///< modules owning parameters, in named_modules() order
  int64_t parameters = 0;
  int64_t bits = 0;                  ///< before Huffman coding
  int64_t huffman_bits = 0;          ///< after Huffman coding
  int64_t dense_bits() const { return parameters * 32; }
  /// Dense 32-bit bits of all parameters / stored bits (+inf for zero stored bits).
  double rate() const;
  double huffman_rate() const;
};

ModelStorage model_storage(const torch::nn::Module& model, const DeepCompressionOptions& options = {});

/// The entries of one coded weight, as the compressed file stores them.
struct SparseWeight {
  std::vector<int64_t> shape;
  int index_bits = 0;
  bool codebook = false;
  std::vector<uint32_t> codebook_values;  ///< float32 bit patterns, ascending (K entries)
  std::vector<uint32_t> gaps;             ///< per entry, in [1, 2^index_bits - 1]
  /// Per entry: codebook index (K = filler, the zero symbol) or raw float32 bits (0 for fillers).
  std::vector<uint32_t> values;
  int64_t filler = 0;
  /// Symbols of the value alphabet in codebook mode: K, plus one when there are fillers.
  int64_t value_symbols() const;
};

/// Splits a float32 tensor (any device) into entries; codebook when it has at most
/// `max_codebook` distinct nonzero values.
SparseWeight sparse_weight(const torch::Tensor& weight, int index_bits, int64_t max_codebook = 256);

/// The dense float32 CPU tensor of `sparse` (TORCH_CHECKs positions and symbols).
torch::Tensor dense_weight(const SparseWeight& sparse);

}  // namespace shrink::sharing
