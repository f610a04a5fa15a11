#pragma once
// A compression method is a training callback with targets (glob patterns over module and
// parameter paths) and a schedule. Each method parses its own options struct through an
// OptionSchema, so it can be used from C++ without YAML:
//
//   struct MyMethod : shrink::CompressionMethod {
//     struct Options { double strength = 1e-4; };
//     static shrink::OptionSchema<Options> schema();
//     MyMethod(shrink::MethodSpec spec, Options options);
//     ...
//   };
//   SHRINK_REGISTER_METHOD("my_method", MyMethod, "one line description");
#include <torch/torch.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/train/callback.h"

namespace shrink {

/// When a method acts. Epochs may be fractional; steps are optimizer steps. Unset ends mean
/// "from the start" and "until the end of training".
struct MethodSchedule {
  double start_epoch = -1, end_epoch = -1;  ///< -1: unset
  int64_t start_step = -1, end_step = -1;   ///< -1: unset
  int64_t frequency = 1;                    ///< act every N steps while active

  /// First and one-past-last active step, given the run's steps per epoch and total steps.
  int64_t begin(int64_t steps_per_epoch) const;
  int64_t end(int64_t steps_per_epoch, int64_t total_steps) const;
  /// Whether `step` lies in [begin, end).
  bool active(int64_t step, int64_t steps_per_epoch, int64_t total_steps) const;
  /// Whether the method should update at `step`: active and on its frequency.
  bool due(int64_t step, int64_t steps_per_epoch, int64_t total_steps) const;
};

/// The keys every compression entry has, parsed by the framework.
struct MethodSpec {
  std::string method;
  std::vector<std::string> targets;  ///< globs over module and parameter paths ("*" = all)
  std::vector<std::string> exclude;
  MethodSchedule schedule;
  ConfigNode where;                  ///< the recipe entry (for errors); may be invalid from C++
};

/// Keys of a compression entry handled by the framework, not by the method's options.
const std::vector<std::string>& common_method_keys();

/// Parses the common keys of `compression[i]` (checks schedule order and frequency).
MethodSpec parse_method_spec(const ConfigNode& entry);

class CompressionMethod : public Callback {
 public:
  explicit CompressionMethod(MethodSpec spec) : spec_(std::move(spec)) {}
  std::string name() const override { return spec_.method; }
  const MethodSpec& spec() const { return spec_; }

  /// Resolves targets against the model; unmatched patterns are errors at the recipe entry.
  /// Called by the trainer before prepare_model.
  virtual void bind(const ModelPtr& model);

  /// Parameters matched by the targets (full dotted names), in model order.
  const std::vector<std::pair<std::string, torch::Tensor>>& target_parameters() const {
    return target_parameters_;
  }
  /// Modules matched by the targets (dotted paths), in model order.
  const std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>& target_modules() const {
    return target_modules_;
  }

 protected:
  bool active(const TrainContext& ctx) const {
    return spec_.schedule.active(ctx.step, ctx.steps_per_epoch, ctx.total_steps);
  }
  bool due(const TrainContext& ctx) const {
    return spec_.schedule.due(ctx.step, ctx.steps_per_epoch, ctx.total_steps);
  }

  MethodSpec spec_;
  std::vector<std::pair<std::string, torch::Tensor>> target_parameters_;
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> target_modules_;
};
using MethodPtr = std::unique_ptr<CompressionMethod>;

/// Glob match with '*' (any run of characters, dots included) and '?'.
bool glob_match(const std::string& pattern, const std::string& text);

using MethodFactory = std::function<MethodPtr(const MethodSpec& spec, const ConfigNode& options)>;
Registry<MethodFactory>& method_registry();

/// Builds `compression[i]`: common keys, then the method's own options.
MethodPtr build_method(const ConfigNode& entry);

/// The registry entry for a method class C: `C::Options`, `static OptionSchema<Options> schema()`,
/// and a constructor `C(MethodSpec, Options)`.
template <class C>
Registry<MethodFactory>::Entry method_entry(const std::string& name, const std::string& description) {
  return {name, description,
          [](const MethodSpec& spec, const ConfigNode& node) -> MethodPtr {
            return std::make_unique<C>(spec, C::schema().parse(node, common_method_keys()));
          },
          C::schema().docs()};
}

template <class C>
bool register_method(const std::string& name, const std::string& description) {
  method_registry().add(method_entry<C>(name, description));
  return true;
}

}  // namespace shrink

/// Registers a compression method class from a user's executable or plug-in library.
#define SHRINK_REGISTER_METHOD(NAME, CLASS, DESCRIPTION) \
  static const bool SHRINK_UNIQUE_NAME(shrink_method_) = ::shrink::register_method<CLASS>(NAME, DESCRIPTION)
