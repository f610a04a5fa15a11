#include "shrink/models/model.h"

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
