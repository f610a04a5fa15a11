#include "shrink/models/model.h"
#include "shrink/models/model_input.h"

#include <algorithm>

#include "shrink/core/error.h"

namespace shrink {
namespace {
std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? std::string("(none)") : out;
}
}  // namespace

void ModelImpl::record_taps(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (std::find(tap_names_.begin(), tap_names_.end(), n) == tap_names_.end()) {
      const auto near = nearest_name(n, tap_names_);
      throw UserError("model has no tap '" + n + "'" + (near.empty() ? "" : " (did you mean '" + near + "'?)") +
                      "; its taps are: " + joined(tap_names_));
    }
  recording_ = names;
  taps_.clear();
}

void ModelImpl::store_tap(const char* name, const torch::Tensor& value) {
  if (std::find(recording_.begin(), recording_.end(), name) == recording_.end()) return;
  for (auto& [n, t] : taps_)
    if (n == name) {
      t = value;
      return;
    }
  taps_.emplace_back(name, value);
}

const torch::Tensor& ModelImpl::tap(const std::string& name) const {
  for (const auto& [n, t] : taps_)
    if (n == name) return t;
  if (std::find(recording_.begin(), recording_.end(), name) == recording_.end())
    throw UserError("tap '" + name + "' is not recorded; call record_taps({\"" + name +
                    "\", ...}) before the forward (taps of this model: " + joined(tap_names_) + ")");
  throw UserError("tap '" + name + "' was not reached by the last forward (no forward yet?)");
}

}  // namespace shrink

namespace shrink {

int64_t model_num_classes(const std::string& model, int64_t from_options, const DataInfo& data) {
  const int64_t n = from_options > 0 ? from_options : data.num_classes;
  if (n <= 0)
    throw UserError(model + ": the number of classes is unknown (the data does not say); set model.num_classes");
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s.empty() ? "(empty)" : s;
}

int64_t image_channels(const std::string& model, const DataInfo& data) {
  const auto& s = data.sample_shape;
  if (s.size() != 3 || s[0] <= 0 || s[1] <= 0 || s[2] <= 0)
    throw UserError(model + ": needs images [C, H, W], got input shape " + shape_text(s));
  return s[0];
}

}  // namespace shrink
