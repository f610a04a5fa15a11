#pragma once
// The compressed model file written by `shrink export --format compressed`: the model's coded
// weights as Deep Compression stores them (deep_compression.h: relative indices with fillers,
// codebook, two Huffman codes per weight), every other tensor raw, and the resolved recipe,
// so that loading it rebuilds the experiment and gives the same outputs as the fine-tuned model.
//
// Layout (little-endian; "str" = u64 byte count + bytes; "bits" = u64 bit count + the bits
// packed most significant first, zero-padded to whole bytes):
//
//   "SHRINKDC"  u32 version (1)  u32 flags (bit 0: method_state is zlib-compressed, stored as
//                                     u64 uncompressed size + zlib stream; always set on write)
//   str recipe          the resolved recipe (YAML), with export-time overrides applied
//   str method_state    torch archive of compression methods' / callbacks' state ("cb<i>_<name>"
//                       entries, as in checkpoints), only of those the model's structure depends
//                       on (e.g. thinned channels); empty when none. Others load fresh.
//                       (A torch archive of a few integers is KiBs of zip padding: hence zlib.)
//   u32 tensor count, then per tensor (model parameters, then buffers, in model order):
//     u8 kind (0 raw, 1 coded)   u32 name length + name   u8 ndim   i64 dims[ndim]
//     raw:   i8 dtype (c10::ScalarType)   str bytes of the contiguous tensor
//     coded: u8 index_bits   u8 mode (0 codebook, 1 raw float values)   u8 has_mask
//            u64 entries   u64 filler   u32 K   u32 codebook[K] (float32 bits, ascending)
//            bits gap_table   bits gap_stream          (Huffman table and gaps)
//            codebook: bits value_table  bits value_stream (symbol K = filler)
//            raw:      bits value_stream (32 bits per entry)
//
// Coded tensors are the float32 parameters named `weight` with 2+ dimensions. A Shrink layer's
// `weight_mask` buffer is not stored: has_mask says it existed, and loading re-derives it as
// weight != 0. Decoded weights equal the exported ones bit for bit, except that negative
// zeros come back as +0.0.
#include <cstdint>
#include <string>
#include <vector>

#include "shrink/sharing/deep_compression.h"
#include "shrink/train/experiment.h"

namespace shrink::sharing {

/// What an export wrote.
struct CompressedExport {
  std::string path;
  uint64_t file_bytes = 0;
  int64_t parameters = 0;        ///< elements of all model parameters
  uint64_t dense_bytes = 0;      ///< parameters * 4 (float32)
  int64_t coded_tensors = 0;
  int64_t raw_tensors = 0;
  uint64_t method_state_bytes = 0;  ///< stored (compressed) bytes; 0 unless the structure needs methods' state
  std::vector<std::string> method_state_of;  ///< methods whose state is stored (export_compressed_model)
  ModelStorage storage;          ///< Deep Compression accounting of the same model
  /// Parameters of the recipe's model before any compression (build_dense_model); differs from
  /// `parameters` when a method removed channels. Set by export_compressed_model, else = parameters.
  int64_t original_parameters = 0;
  /// dense_bytes / file_bytes.
  double rate() const { return file_bytes ? double(dense_bytes) / double(file_bytes) : 0.0; }
  /// original_parameters * 4 / file_bytes.
  double original_rate() const { return file_bytes ? double(original_parameters) * 4.0 / double(file_bytes) : 0.0; }
};

/// Writes the experiment's model as it is now (atomically). `method_state` is stored as given
/// (empty: none). TORCH_CHECKs the options.
CompressedExport write_compressed_model(const std::string& path, const Experiment& experiment,
                                        const std::string& method_state,
                                        const DeepCompressionOptions& options = {});

/// The state of the experiment's methods and callbacks (those with `include[i]`; all when
/// `include` is empty), serialized as the file stores it.
std::string serialize_method_state(const Experiment& experiment, const std::vector<bool>& include = {});

/// Restores the checkpoint's experiment (recipe with `overrides`, methods' state, weights) and
/// writes it. A method's state is stored only when the model's structure needs it: every state
/// whose absence still rebuilds the same tensor names and shapes (methods prepared fresh) is
/// left out, so large states (k-means assignments, rewinding snapshots) do not bloat the file.
/// That costs one extra model build per method. UserErrors name the checkpoint.
CompressedExport export_compressed_model(const std::string& checkpoint, const std::string& output,
                                         const std::vector<std::string>& overrides = {},
                                         const DeepCompressionOptions& options = {});

/// Whether `path` is a file that starts with the compressed model magic.
bool is_compressed_model(const std::string& path);

/// The recipe text stored in a compressed model file (UserError naming the file if unreadable).
std::string read_compressed_recipe(const std::string& path);

/// Rebuilds the experiment of a compressed model file: the stored recipe with `overrides`
/// (DataNeeds::TestOnly), runtime settings, methods' state when stored, prepare_experiment,
/// then every tensor decoded into the model. A tensor missing on either side or of another
/// shape is a UserError naming the file and the tensor.
Experiment load_compressed_experiment(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace shrink::sharing
