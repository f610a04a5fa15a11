#pragma once
// Knowledge distillation as a compression entry, combinable with every other method: the
// student is the recipe's model, the teacher a zoo model with weights or a TorchScript file, and
// the loss a weighted sum of terms, each active in its own epoch window:
//
//   compression:
//     - method: distillation
//       teacher: {model: {name: resnet56, weights: runs/resnet56/best.pt}}  # or {torchscript: t.pt}
//       terms:
//         - {loss: cross_entropy, weight: 0.1}                  # the recipe's labelled loss
//         - {loss: kd, weight: 0.9, temperature: 4}             # Hinton et al. 2015 (T^2 scaled)
//         - {loss: hint, student: layer2, teacher: layer2, end_epoch: 1}   # FitNets hint stage
//         - {loss: attention, student: [layer1, layer2, layer3], teacher: [layer1, layer2, layer3], weight: 1000}
//         - {loss: similarity, student: layer3, teacher: layer3, weight: 3000}
//
// Taps are the names the models declare (`shrink summary RECIPE` lists them; e.g. layer1..layer3,
// features, logits); each term pairs student and teacher taps one by one. Shapes are checked when
// the experiment is built: a mismatch names both taps and shapes. A hint term trains a regressor
// (1x1 conv for [N, C, H, W] taps, linear for [N, C]) from the student tap to the teacher's; the
// regressors are trained only while a hint term is active and are kept in checkpoints. Steps where
// no term is active train on the recipe's cross-entropy alone.
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "shrink/compression/bench_parts.h"
#include "shrink/compression/method.h"
#include "shrink/compression/sample_shape.h"
#include "shrink/compression/trainable_state.h"
#include "shrink/compression/training_setup.h"

namespace shrink::distill {

class Teacher;

/// One weighted term of the loss.
struct LossTerm {
  std::string loss;                  ///< cross_entropy | kd | hint | attention | similarity
  double weight = 1.0;
  double temperature = 4.0;          ///< kd
  double p = 2.0;                    ///< attention: power of |a| in the map
  std::vector<std::string> student;  ///< taps (hint, attention, similarity), paired with `teacher`
  std::vector<std::string> teacher;
  double start_epoch = -1, end_epoch = -1;  ///< active window in (fractional) epochs; -1: open
  ConfigNode where;                  ///< the recipe entry (for errors); may be invalid from C++

  bool active(double epoch) const {
    return (start_epoch < 0 || epoch >= start_epoch) && (end_epoch < 0 || epoch < end_epoch);
  }
};

/// A FitNets regressor: a 1x1 conv for [N, C, H, W] taps, a linear layer for [N, C] taps.
struct HintRegressor {
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear linear{nullptr};
  torch::Tensor forward(const torch::Tensor& x) { return conv ? conv->forward(x) : linear->forward(x); }
  std::shared_ptr<torch::nn::Module> module() const {
    return conv ? std::static_pointer_cast<torch::nn::Module>(conv.ptr())
                : std::static_pointer_cast<torch::nn::Module>(linear.ptr());
  }
};

struct DistillationOptions {
  ConfigNode teacher_model;          ///< `teacher.model`: a model section with `weights`
  std::string teacher_torchscript;   ///< `teacher.torchscript`: a TorchScript file
  ModelPtr teacher;                  ///< C++ API: a ready teacher (used when set)
  std::vector<LossTerm> terms;
};

class Distillation : public CompressionMethod,
                     public SampleShapeConsumer,
                     public NeedsTrainingSetup,
                     public OwnsTrainableTensors,
                     public HasBenchParts {
 public:
  using Options = DistillationOptions;
  /// Parses a compression entry (teacher, terms; the common keys are the framework's).
  static Options parse_options(const ConfigNode& entry);
  static std::vector<OptionDoc> docs();

  Distillation(MethodSpec spec, Options options);
  ~Distillation() override;

  void bind(const ModelPtr& model) override;
  void set_sample_shape(std::vector<int64_t> shape) override { sample_shape_ = std::move(shape); }
  /// Builds the teacher, checks every tap pair on a probe batch, creates the hint regressors.
  /// Only for training (eval, summary and export of the student need no teacher).
  void setup_for_training() override;
  std::vector<std::pair<std::string, torch::Tensor>> trainable_tensors() const override;
  std::vector<std::pair<std::string, std::function<void(const torch::Tensor&)>>> bench_parts() override;

  void prepare_model(TrainContext& ctx) override;
  void on_train_begin(TrainContext& ctx) override;
  void on_step_begin(TrainContext& ctx) override;
  torch::Tensor on_loss(TrainContext& ctx, torch::Tensor loss) override;
  void on_before_optimizer_step(TrainContext& ctx) override;
  void on_step_end(TrainContext& ctx) override;
  void on_epoch_end(TrainContext& ctx) override;
  void save_state(torch::serialize::OutputArchive& archive) const override;
  void load_state(torch::serialize::InputArchive& archive) override;

  const Teacher& teacher() const { return *teacher_; }
  /// Null until setup_for_training (eval, summary and export never build it).
  /// Hint regressors in term order (one per student/teacher pair of each hint term).
  const std::vector<HintRegressor>& regressors() const { return regressors_; }
  /// The active terms' values at the last step (loss name, unweighted value), for tests.
  std::vector<std::pair<std::string, double>> last_terms() const;

 private:
  void fail_term(size_t term, const std::string& key, const std::string& message) const;
  std::vector<std::string> student_taps_needed(double epoch) const;
  std::vector<std::string> teacher_taps_needed(double epoch) const;

  Options options_;
  ModelPtr student_;
  std::unique_ptr<Teacher> teacher_;
  std::vector<HintRegressor> regressors_;
  std::vector<size_t> regressor_of_term_;  ///< first regressor index of each term
  std::vector<int64_t> sample_shape_;
  /// The teacher's outputs for the current batch, computed in on_step_begin (before the
  /// student's forward, so that the student's forward and backward run back to back).
  std::map<std::string, torch::Tensor> teacher_out_;
  std::vector<std::pair<std::string, torch::Tensor>> last_terms_;
  /// Per term, the sum of its values this epoch (detached, on the device: read once per epoch)
  /// and the steps it was active.
  std::vector<torch::Tensor> epoch_sums_;
  std::vector<int64_t> epoch_counts_;
  bool prepared_ = false;
};

}  // namespace shrink::distill
