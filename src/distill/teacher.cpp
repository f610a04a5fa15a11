#include "shrink/distill/teacher.h"

#include <fmt/format.h>
#include <torch/script.h>

#include <filesystem>

#include "shrink/core/error.h"

namespace shrink::distill {

Teacher::~Teacher() = default;

std::unique_ptr<Teacher> Teacher::from_model(ModelPtr model) {
  TORCH_CHECK(model, "Teacher::from_model: null model");
  std::unique_ptr<Teacher> t(new Teacher());
  model->eval();
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  t->model_ = std::move(model);
  t->model_name_ = t->model_->name();
  return t;
}

std::unique_ptr<Teacher> Teacher::from_model_section(const ConfigNode& model, const DataInfo& data) {
  auto t = from_model(build_model(model, data));
  t->model_name_ = model["name"].as<std::string>();
  return t;
}

std::unique_ptr<Teacher> Teacher::from_torchscript(const std::string& path, const ConfigNode& where) {
  auto fail = [&](const std::string& message) -> void {
    if (where.valid()) where.fail(message);
    throw UserError("teacher " + path + ": " + message);
  };
  if (!std::filesystem::is_regular_file(path)) fail("no such file '" + path + "'");
  std::unique_ptr<Teacher> t(new Teacher());
  try {
    t->script_ = std::make_unique<torch::jit::Module>(torch::jit::load(path, torch::Device(torch::kCPU)));
  } catch (const std::exception& e) {
    std::string what = e.what();
    fail("'" + path + "' is not a TorchScript module (" + what.substr(0, what.find('\n')) + ")");
  }
  if (!t->script_->find_method("forward"))
    fail("'" + path +
         "' has no forward method (a Shrink checkpoint is not a TorchScript model: use teacher.model with "
         "`weights` for it)");
  t->script_->eval();
  for (auto p : t->script_->parameters()) p.set_requires_grad(false);
  t->script_path_ = path;
  return t;
}

std::vector<std::string> Teacher::tap_names() const {
  if (model_) {
    auto names = model_->tap_names();
    if (std::find(names.begin(), names.end(), "logits") == names.end()) names.push_back("logits");
    return names;
  }
  return script_taps_.empty() ? std::vector<std::string>{"logits"} : script_taps_;
}

std::map<std::string, torch::Tensor> Teacher::forward(const torch::Tensor& inputs, const std::vector<std::string>& taps) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> out;
  if (model_) {
    std::vector<std::string> own;
    for (const auto& name : taps)
      if (name != "logits") own.push_back(name);  // the forward's output is the logits
    if (own != model_->recorded_taps()) model_->record_taps(own);
    out["logits"] = model_->forward(inputs);
    for (const auto& name : own) out[name] = model_->tap(name);
    return out;
  }
  auto result = script_->forward({inputs});
  if (result.isTensor()) {
    out["logits"] = result.toTensor();
    script_taps_ = {"logits"};
  } else if (result.isGenericDict()) {
    script_taps_.clear();
    for (const auto& item : result.toGenericDict()) {
      if (!item.key().isString() || !item.value().isTensor())
        throw UserError("TorchScript teacher " + script_path_ + ": its forward must return a Tensor or a Dict[str, Tensor]");
      script_taps_.push_back(item.key().toStringRef());
      out[item.key().toStringRef()] = item.value().toTensor();
    }
    if (!out.count("logits"))
      throw UserError("TorchScript teacher " + script_path_ + ": its forward returns a dict without \"logits\"");
  } else {
    throw UserError("TorchScript teacher " + script_path_ + ": its forward must return a Tensor or a Dict[str, Tensor] (got " +
                    result.tagKind() + ")");
  }
  for (const auto& name : taps)
    if (!out.count(name))
      throw UserError(fmt::format("TorchScript teacher {}: no tap '{}' in its output (it returns {})", script_path_, name,
                                  fmt::join(script_taps_, ", ")));
  return out;
}

void Teacher::to(torch::Device device) {
  if (model_) model_->to(device);
  if (script_) script_->to(device);
}

bool Teacher::is_training() const { return model_ ? model_->is_training() : script_->is_training(); }

int64_t Teacher::parameter_count() const {
  int64_t n = 0;
  if (model_)
    for (const auto& p : model_->parameters()) n += p.numel();
  if (script_)
    for (const auto& p : script_->parameters()) n += p.numel();
  return n;
}

std::string Teacher::describe() const {
  if (model_) return fmt::format("{} ({} parameters)", model_name_, parameter_count());
  return fmt::format("TorchScript {} ({} parameters)", script_path_, parameter_count());
}

}  // namespace shrink::distill
