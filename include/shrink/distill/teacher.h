#pragma once
// The teacher of a distillation: a zoo model (with `weights`, e.g. a Shrink checkpoint) or a
// TorchScript module exported from PyTorch. Always in eval mode and without gradients.
//
// A TorchScript teacher's forward returns the logits, or a Dict[str, Tensor] holding "logits"
// and any feature taps the recipe pairs with the student's.
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/models/model.h"

namespace shrink::distill {

class Teacher {
 public:
  /// A zoo model, built from a `model:` section (name, options, weights) for `data`.
  static std::unique_ptr<Teacher> from_model_section(const ConfigNode& model, const DataInfo& data);
  /// A model object (the C++ API); put in eval mode, gradients switched off.
  static std::unique_ptr<Teacher> from_model(ModelPtr model);
  /// A TorchScript file; `where` is the recipe key for errors (may be invalid).
  static std::unique_ptr<Teacher> from_torchscript(const std::string& path, const ConfigNode& where = {});
  ~Teacher();

  /// Taps the teacher offers (a zoo model's taps; a scripted teacher's dict keys, known after
  /// the first forward), "logits" included.
  std::vector<std::string> tap_names() const;
  /// Runs the teacher on `inputs` without gradients; returns "logits" and the requested taps.
  std::map<std::string, torch::Tensor> forward(const torch::Tensor& inputs, const std::vector<std::string>& taps);
  void to(torch::Device device);
  int64_t parameter_count() const;
  /// The zoo teacher (null for a TorchScript one).
  const ModelPtr& model() const { return model_; }
  /// Whether the teacher is in training mode (never, unless someone switched it).
  bool is_training() const;
  /// "mlp (2,395,210 parameters)" or "TorchScript teacher.pt".
  std::string describe() const;

 private:
  Teacher() = default;
  ModelPtr model_;
  std::unique_ptr<torch::jit::Module> script_;
  std::string script_path_;
  std::string model_name_;
  std::vector<std::string> script_taps_;
};

}  // namespace shrink::distill
