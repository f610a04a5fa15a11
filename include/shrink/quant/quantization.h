#pragma once
// Quantization-aware training as a compression entry: fake quantizers (quantizers.h) on the
// weights, inputs and/or outputs of the targeted Shrink Conv2d and Linear layers. Several entries
// with different targets give mixed precision.
//
//   compression:
//     - method: quantization
//       targets: ["*"]                      # module paths of Conv2d / Linear layers
//       exclude: ["conv1", "fc"]            # e.g. keep the first and last layers in float
//       weights: {quantizer: uniform, bits: 8, per_channel: true}      # symmetric by default
//       inputs:  {quantizer: uniform, bits: 8, symmetric: false, range: moving_average}
//       fold_bn: true                       # Conv+BN folding (Jacob et al. 2018)
//       freeze_observers_epoch: 3           # ranges fixed from here on
//       freeze_bn_epoch: 4                  # BatchNorms use and keep their running statistics
//       start_epoch: 0                      # quantizers act from the schedule's start on
//
// The quantizers are attached whenever the recipe is built (prepare_model), so a checkpoint
// restores their ranges, step sizes and clipping levels (model buffers and parameters) and
// `shrink eval` / `export` see the quantized model. BinaryConnect and BWN weights are clipped
// to [-1, 1] after every optimizer step (Courbariaux et al. 2015).
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/quant/quantizers.h"

namespace shrink::nn {
class Conv2dImpl;
class LinearImpl;
}  // namespace shrink::nn

namespace shrink::quant {

class Quantization : public CompressionMethod {
 public:
  struct Options {
    std::optional<QuantizerOptions> weights, inputs, outputs;
    bool fold_bn = false;
    double freeze_observers_epoch = -1;  ///< -1: never
    double freeze_bn_epoch = -1;         ///< -1: never
  };
  /// Parses the recipe entry (`weights`, `inputs`, `outputs` maps); errors at file:line:key.
  static Options parse_options(const ConfigNode& entry);
  static std::vector<OptionDoc> docs();

  Quantization(MethodSpec spec, Options options);
  const Options& options() const { return options_; }

  /// Resolves the targeted Conv2d / Linear layers (composite low-rank/compact layers are skipped:
  /// target their inner layers) and, with fold_bn, the BatchNorm after each conv.
  void bind(const ModelPtr& model) override;
  /// Attaches the quantizers (and folds BatchNorms); idempotent.
  void prepare_model(TrainContext& ctx) override;
  void on_train_begin(TrainContext& ctx) override;
  void on_step_begin(TrainContext& ctx) override;
  void on_after_optimizer_step(TrainContext& ctx) override;

  struct Layer {
    std::string path;
    nn::Conv2dImpl* conv = nullptr;
    nn::LinearImpl* linear = nullptr;
    torch::nn::BatchNorm2d bn{nullptr};  ///< the BatchNorm after the conv (fold_bn), else null
  };
  const std::vector<Layer>& layers() const { return layers_; }

 private:
  void apply_step_state(const TrainContext& ctx);

  Options options_;
  std::vector<Layer> layers_;
  std::vector<torch::nn::BatchNorm2d> all_bns_;  ///< every BatchNorm2d of the model (freeze_bn_epoch)
  bool prepared_ = false;
};

}  // namespace shrink::quant
