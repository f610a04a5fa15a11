#include "shrink/dynamic/residual_targets.h"

#include <map>
#include <set>

#include "shrink/compression/method_errors.h"

namespace shrink::dynamic {

namespace {
/// Whether the C++ spec carries a schedule other than the default.
bool schedule_key_set(const MethodSchedule& s, const std::string& key) {
  if (key == "start_epoch") return s.start_epoch >= 0;
  if (key == "end_epoch") return s.end_epoch >= 0;
  if (key == "start_step") return s.start_step >= 0;
  if (key == "end_step") return s.end_step >= 0;
  return s.frequency != 1;
}
}  // namespace

std::vector<TargetedBlock> targeted_residual_blocks(const ModelPtr& model, const CompressionMethod& method) {
  const auto& spec = method.spec();
  auto* net = dynamic_cast<ResidualNetImpl*>(model.get());
  const auto residual = net ? net->residual_blocks() : std::vector<ResidualBlockPtr>();
  if (residual.empty())
    fail_at_option(spec, "method", "needs a model with residual blocks; " + model->name() + " has none");
  std::map<const torch::nn::Module*, std::string> paths;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) paths.emplace(item.value().get(), item.key());
  std::set<std::string> targeted;
  for (const auto& item : method.target_modules()) targeted.insert(item.first);

  std::vector<TargetedBlock> out;
  std::string names;
  bool any = false;
  for (const auto& block : residual) {
    TargetedBlock b{paths.at(block.get()), block, false};
    b.targeted = targeted.count(b.path) > 0;
    any |= b.targeted;
    names += (names.empty() ? "" : ", ") + b.path;
    out.push_back(std::move(b));
  }
  if (!any) fail_at_option(spec, "targets", "matches no residual block; the model's blocks: " + names);
  return out;
}

void reject_schedule(const MethodSpec& spec, const std::string& why) {
  for (const char* key : {"start_epoch", "end_epoch", "start_step", "end_step", "frequency"}) {
    const bool in_recipe = spec.where.valid() && spec.where.is_map() && spec.where.has(key);
    if (in_recipe || schedule_key_set(spec.schedule, key)) fail_at_option(spec, key, why);
  }
}

}  // namespace shrink::dynamic
