#pragma once
// compact_filters: rebuilds targeted convolutions in a compact or transferred-filter form
// (include/shrink/nn/compact_conv.h) before the optimizer is built; the model then trains from
// scratch with fewer parameters per layer:
//   compression:
//     - method: compact_filters
//       targets: ["conv2"]          # Conv2d paths (globs); other matches are ignored
//       form: crelu                 # depthwise_separable | fire | crelu | mba | cyclic
//     - {method: compact_filters, targets: ["features.*"], form: fire, squeeze_ratio: 0.25,
//        expand1x1_fraction: 0.5}
//     - {method: compact_filters, targets: ["conv1"], form: mba, biases: 4}
//
// The forms set per layer are saved in checkpoints and set again in prepare_model, before the
// weights load, so eval, summary and resume rebuild the same layers.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/compression/rebuilds_layers.h"
#include "shrink/nn/conv.h"

namespace shrink::compact {

class CompactFilters : public CompressionMethod, public RebuildsLayers {
 public:
  struct Options {
    std::string form = "depthwise_separable";  ///< depthwise_separable | fire | crelu | mba | cyclic
    double squeeze_ratio = 0.25;      ///< fire: squeeze channels = max(1, round(out * ratio))
    double expand1x1_fraction = 0.5;  ///< fire: 1x1 expand channels = clamp(round(out * f), 1, out - 1)
    int64_t biases = 2;               ///< mba: biases per filter (K); K must divide out
  };
  static OptionSchema<Options> schema();
  /// Rejects schedule keys (the layers are built before training) and options of other forms.
  CompactFilters(MethodSpec spec, Options options);

  /// Resolves the targets to Conv2d layers; errors at `targets` for a pattern matching no Conv2d
  /// and at `form` for a layer the form does not fit (naming the layer and why).
  void bind(const ModelPtr& model) override;
  /// Sets the forms (fresh initialization), or on a restored run exactly the saved ones; a layer
  /// already in its form is left alone.
  void prepare_model(TrainContext& ctx) override;
  /// Logs one line per layer prepare_model changed (parameters before -> after): the trainer's
  /// prepare_model context has no log.
  void on_train_begin(TrainContext& ctx) override;
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  /// The form the options give a layer with these (host) options.
  nn::ConvForm form_for(const nn::Conv2dOptions& layer) const;
  /// Per layer path, the form set (after prepare_model, or as loaded from a checkpoint).
  const std::vector<std::pair<std::string, nn::ConvForm>>& forms() const { return forms_; }

 private:
  /// Sets `form` on the layer at `path` unless it has it already; returns whether it changed.
  bool apply(const std::string& path, nn::Conv2dImpl& layer, const nn::ConvForm& form);

  Options options_;
  nn::ConvFormKind kind_;
  std::vector<std::pair<std::string, std::shared_ptr<nn::Conv2dImpl>>> layers_;  ///< targeted, model order
  std::vector<std::pair<std::string, nn::ConvForm>> forms_;
  bool loaded_ = false;  ///< forms_ came from a checkpoint and are re-applied as they are
  std::vector<std::string> changes_;  ///< log lines of prepare_model, written at train begin
};

}  // namespace shrink::compact
