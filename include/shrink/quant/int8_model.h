#pragma once
// Int8 inference of a quantization-aware trained model, and the file `shrink export --format
// int8` writes. Each Shrink Conv2d / Linear that trained with an affine weight quantizer
// (uniform, lsq; at most 8 bits, symmetric) and an input quantizer runs LibTorch's quantized
// CPU operators (quantized::conv2d.new, quantized::linear, called through the dispatcher) as
// its nn::LayerKernel: the input is quantized to quint8 on the input quantizer's grid, the
// weight is qint8 on the weight quantizer's grid, the output is requantized with output
// parameters calibrated at export (or the output quantizer's) and dequantized to float, so the
// model's glue (ReLU, residual adds, pooling) runs unchanged. A BatchNorm folded into a
// convolution (fold_bn) is folded for good: the kernel applies it, the BatchNorm becomes the
// identity. Layers without quantizers stay float.
//
// Engine: onednn when it computes exactly on this CPU, else qnnpack (chosen once per process
// by a worst-case probe; SHRINK_QENGINE=onednn|qnnpack forces one). Without VNNI (AVX2 only),
// onednn's u8*s8 kernels add pairs of products in saturating int16 and give wrong results on
// full 8-bit activations (the reason PyTorch's x86 configs use reduce_range); qnnpack is exact.
// A layer whose integers cannot saturate (2 * input quant_max * max|w| <= 32767, e.g. 7-bit
// weights) uses onednn there too.
//
// File layout (little-endian; "str" = u64 byte count + bytes):
//
//   "SHRINKQ8"  u32 version (1)  u32 flags (0)
//   str recipe          the resolved recipe (YAML), with export-time overrides applied
//   str method_state    zlib-packed torch archive of methods' state (u64 size + zlib stream; ""
//                       when the model's structure does not depend on it)
//   u32 layer count, then per converted layer:
//     str module path   u8 kind (0 conv, 1 linear)   u8 ndim   i64 dims[ndim]
//     bytes int8 weight values [numel]
//     u32 scale count n (1 or out channels)   f32 scale[n]   i32 zero_point[n]
//     u8 has_bias   f32 bias[out] (folded)
//     input grid, output grid: f64 scale  i32 zero_point  i32 quant_min  i32 quant_max (quint8)
//   u32 tensor count, then per tensor (every other model parameter and buffer, float as it is):
//     u32 name length + name   u8 ndim   i64 dims[ndim]   i8 dtype   str bytes
//
// A converted layer's `weight`, `bias` and quantizer children are not stored as tensors: on
// load the layer's weight becomes the dequantized int8 weight (folded), its bias the folded
// bias, and the kernel is installed.
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "shrink/nn/quant_hook.h"
#include "shrink/report/bench.h"
#include "shrink/train/experiment.h"

namespace shrink::nn {
class Conv2dImpl;
class LinearImpl;
}  // namespace shrink::nn

namespace shrink::quant {

/// A per-tensor quint8 grid: real = scale * (q - zero_point), q in [quant_min, quant_max] (a
/// sub-range of [0, 255] for quantizers of fewer than 8 bits).
struct ActivationGrid {
  double scale = 1.0;
  int64_t zero_point = 0;
  int64_t quant_min = 0, quant_max = 255;
};

/// One converted layer: what its kernel needs.
struct Int8Layer {
  std::string path;              ///< module path in the model
  bool conv = true;              ///< Conv2d (else Linear)
  torch::Tensor weight;          ///< int8 values, the layer's weight shape
  torch::Tensor weight_scale;    ///< float [1] (per tensor) or [out] (per channel)
  torch::Tensor weight_zero_point;  ///< int64 like weight_scale (zeros: symmetric weights)
  torch::Tensor bias;            ///< float [out] (with a folded BatchNorm applied), or undefined
  ActivationGrid input, output;
  /// weight_scale * weight as float.
  torch::Tensor dequantized_weight() const;
};

/// Observed float range of a layer's output (after a folded BatchNorm) during calibration.
struct OutputRange {
  double min = 0, max = 0;
};

/// Converts `conv` (eval mode, quantizers attached and calibrated). `range` gives the output
/// grid unless the layer has an output quantizer and no folded BatchNorm. UserError naming
/// `path` when the layer cannot run in int8.
Int8Layer convert_layer(const std::string& path, nn::Conv2dImpl& conv, const std::optional<OutputRange>& range);
Int8Layer convert_layer(const std::string& path, nn::LinearImpl& linear, const std::optional<OutputRange>& range);

/// The int8 kernel of a converted layer (weights packed once, for the engine int8_engine()).
std::shared_ptr<nn::LayerKernel> make_int8_kernel(const Int8Layer& layer, const nn::Conv2dImpl& conv);
std::shared_ptr<nn::LayerKernel> make_int8_kernel(const Int8Layer& layer, const nn::LinearImpl& linear);

/// "onednn" or "qnnpack": the quantized engine for full 8-bit ranges in this process.
std::string int8_engine();
/// The engine `layer`'s kernel uses: onednn also where its integer ranges cannot saturate
/// (7-bit weights or inputs), else int8_engine().
std::string int8_engine(const Int8Layer& layer);

/// Export settings.
struct Int8Options {
  int64_t calibration_batches = 8;  ///< batches run to find output ranges
  int64_t calibration_batch_size = 0;  ///< 0: the recipe's train.batch_size
};

/// What an export wrote.
struct Int8Export {
  std::string path;
  uint64_t file_bytes = 0;
  int64_t parameters = 0;        ///< model parameters (quantizers' own left out)
  uint64_t float_bytes = 0;      ///< parameters * 4 (float32)
  std::vector<std::string> converted;  ///< layers running int8 kernels
  std::vector<std::string> float_layers;  ///< Conv2d / Linear layers without quantizers (stay float)
  int64_t int8_weights = 0;      ///< weights stored as int8
  int64_t calibration_examples = 0;
  uint64_t method_state_bytes = 0;
  std::string engine;            ///< "qnnpack", "onednn" or "onednn (n layers), qnnpack (m layers)"
  /// float_bytes / file_bytes.
  double rate() const { return file_bytes ? double(float_bytes) / double(file_bytes) : 0.0; }
};

/// Calibrates output ranges on the experiment's training split (test split without one),
/// converts every quantized Conv2d / Linear of `experiment.model` in place (kernels installed,
/// folded BatchNorms made the identity) and writes the file atomically. `method_state` is
/// stored as given (empty: none). UserError naming a layer that cannot run in int8.
Int8Export write_int8_model(const std::string& path, Experiment& experiment, const std::string& method_state,
                            const Int8Options& options = {});

/// Restores the checkpoint's experiment (recipe with `overrides`, methods' state, weights) and
/// writes its int8 model. Methods' state is stored only when the model's structure needs it.
Int8Export export_int8_model(const std::string& checkpoint, const std::string& output,
                             const std::vector<std::string>& overrides = {}, const Int8Options& options = {});

/// Whether `path` is a file that starts with the int8 model magic.
bool is_int8_model(const std::string& path);

/// Rebuilds the experiment of an int8 model file (DataNeeds::TestOnly): the stored recipe with
/// `overrides`, methods' state, prepare_experiment, tensors, kernels; the model is in eval mode.
/// A wrong, truncated or mismatching file is a UserError naming it.
Experiment load_int8_experiment(const std::string& path, const std::vector<std::string>& overrides = {});

/// Inference latency of an int8 model against the same architecture in float32 (the recipe's
/// model before compression, build_dense_model), timed alternately on test batches.
struct Int8Bench {
  int64_t batch_size = 0;
  int threads = 0;
  std::string engine;
  Timing int8_batch1, int8_batch, float_batch1, float_batch;
};
Int8Bench bench_int8_model(Experiment& experiment, int64_t repeats);
std::string int8_bench_text(const Int8Bench& result);
std::string int8_bench_json(const Int8Bench& result);

}  // namespace shrink::quant
