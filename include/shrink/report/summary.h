#pragma once
// `shrink summary`: per-layer parameters, nonzeros, storage and MACs of a model, and the
// survey's figures comparing a compressed model with its dense original
// (Cheng et al. 2018, Sec. VII: compression rate alpha = a / a*).
//
// Storage is counted twice:
// - dense storage (`stored_bits`): every weight at the layer's bits_per_weight(), every other
//   parameter (biases, norm scales) at 32 bits, zeros included;
// - as Deep Compression stores the model (`deep_compression`, include/shrink/sharing/
//   deep_compression.h): nonzero weights with relative indices (filler entries for long gaps),
//   a codebook when a layer has few distinct values, then Huffman coding of value indices and
//   gaps; its rate is dense 32-bit bits of all parameters / stored bits.
// Buffers (e.g. BatchNorm running statistics) are not counted.
#include <cstdint>
#include <string>
#include <vector>

#include "shrink/models/model.h"
#include "shrink/sharing/deep_compression.h"

namespace shrink {

/// One module that owns parameters.
struct LayerSummary {
  std::string name;             ///< dotted path ("conv1", "layer1.0.conv2"); "" for the root
  std::string type;             ///< short class name: "Conv2d", "Linear", "BatchNorm2d", ...
  std::string shape;            ///< weight shape "20x1x5x5" (first parameter when there is no `weight`)
  int64_t parameters = 0;       ///< all elements of the module's own parameters
  int64_t nonzero = 0;          ///< of those, how many are nonzero
  double sparsity = 0;          ///< 1 - nonzero / parameters
  double bits_per_weight = 32;  ///< CostedLayer::bits_per_weight(); 32 for other modules
  int64_t stored_bits = 0;      ///< weight elements * bits_per_weight + other parameters * 32
  int64_t macs = 0;             ///< CostedLayer::macs_per_sample(); 0 for other modules
  /// Deep Compression storage of the module's own parameters (coded weight + others at 32 bits).
  sharing::LayerStorage deep_compression;
};

struct ModelSummary {
  std::vector<int64_t> sample_shape;  ///< input of the forward that measured the MACs
  std::vector<LayerSummary> layers;   ///< in named_modules() order
  int64_t parameters = 0;             ///< totals over `layers`
  int64_t nonzero = 0;
  int64_t stored_bits = 0;
  int64_t macs = 0;
  int64_t deep_compression_bits = 0;  ///< Deep Compression storage before Huffman coding
  int64_t huffman_bits = 0;           ///< after Huffman coding of value indices and gaps
  sharing::DeepCompressionOptions deep_compression_options;  ///< index bits used
  double sparsity() const { return parameters ? 1.0 - double(nonzero) / double(parameters) : 0.0; }
  /// parameters * 32 / deep_compression_bits (+inf for zero bits).
  double deep_compression_rate() const;
  /// parameters * 32 / huffman_bits.
  double huffman_rate() const;
};

/// Runs one forward on a zero batch of one sample (eval mode, no grad; each module's
/// train/eval mode is restored afterwards) to measure MACs, then lists every module that owns
/// parameters. For ordinary models these are exactly the leaf modules with parameters.
/// `deep_compression` sets the index bits of the Deep Compression accounting.
ModelSummary summarize(const ModelPtr& model, const std::vector<int64_t>& sample_shape,
                       const sharing::DeepCompressionOptions& deep_compression = {});

/// Figures of a compressed model against its dense original. A ratio with a zero
/// denominator is +infinity (1 when the numerator is zero too).
struct SummaryComparison {
  double compression_rate = 1;     ///< alpha = a / a*: dense parameters / compressed nonzero parameters
  double index_space_saving = 0;   ///< beta = (a - a*) / a*
  double storage_rate = 1;         ///< dense stored bits / compressed stored bits
  double mac_reduction = 1;        ///< dense MACs / compressed MACs
  double sparsity = 0;             ///< of the compressed model
  /// Dense model's parameters * 32 / compressed Deep Compression bits, before and after Huffman.
  double deep_compression_rate = 1;
  double huffman_rate = 1;
};

SummaryComparison compare(const ModelSummary& dense, const ModelSummary& compressed);

/// Fixed-width text table, one row per layer plus totals (and the comparison when given).
std::string summary_table(const ModelSummary& summary);
std::string summary_table(const ModelSummary& summary, const SummaryComparison& comparison);

/// JSON object {"sample_shape", "layers": [...], "total": {...}[, "comparison": {...}]};
/// infinite ratios are written as null.
std::string summary_json(const ModelSummary& summary, int indent = 2);
std::string summary_json(const ModelSummary& summary, const SummaryComparison& comparison, int indent = 2);

}  // namespace shrink
