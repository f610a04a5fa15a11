#include "shrink/nn/layer_form.h"

#include <stdexcept>

namespace shrink::nn {

namespace {
struct KindName {
  ConvFormKind kind;
  const char* name;
  size_t sizes;
};
constexpr KindName kKinds[] = {
    {ConvFormKind::dense, "dense", 0},
    {ConvFormKind::jaderberg, "jaderberg", 1},
    {ConvFormKind::cp, "cp", 1},
    {ConvFormKind::tucker2, "tucker2", 2},
    {ConvFormKind::bn_low_rank, "bn_low_rank", 1},
    {ConvFormKind::depthwise_separable, "depthwise_separable", 0},
    {ConvFormKind::fire, "fire", 2},
    {ConvFormKind::crelu, "crelu", 0},
    {ConvFormKind::mba, "mba", 1},
    {ConvFormKind::cyclic, "cyclic", 0},
};
const KindName& entry(ConvFormKind kind) {
  for (const auto& k : kKinds)
    if (k.kind == kind) return k;
  throw std::invalid_argument("unknown conv form kind");
}
}  // namespace

const char* conv_form_name(ConvFormKind kind) { return entry(kind).name; }
size_t conv_form_size_count(ConvFormKind kind) { return entry(kind).sizes; }

ConvFormKind conv_form_kind(const std::string& name) {
  std::string known;
  for (const auto& k : kKinds) {
    if (name == k.name) return k.kind;
    known += known.empty() ? k.name : std::string(", ") + k.name;
  }
  throw std::invalid_argument("unknown conv form '" + name + "' (known: " + known + ")");
}

std::string ConvForm::str() const {
  std::string s = conv_form_name(kind);
  if (sizes.empty()) return s;
  s += "(";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "," : "") + std::to_string(sizes[i]);
  return s + ")";
}

ConvForm ConvForm::parse(const std::string& text) {
  ConvForm form;
  const auto open = text.find('(');
  form.kind = conv_form_kind(text.substr(0, open));
  if (open != std::string::npos) {
    if (text.back() != ')') throw std::invalid_argument("conv form '" + text + "': missing ')'");
    const std::string inner = text.substr(open + 1, text.size() - open - 2);
    size_t pos = 0;
    while (pos <= inner.size()) {
      const auto comma = inner.find(',', pos);
      const auto item = inner.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      size_t used = 0;
      int64_t v = 0;
      try {
        v = std::stoll(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != item.size() || v <= 0)
        throw std::invalid_argument("conv form '" + text + "': '" + item + "' is not a positive integer");
      form.sizes.push_back(v);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  if (form.sizes.size() != conv_form_size_count(form.kind))
    throw std::invalid_argument("conv form '" + text + "': " + conv_form_name(form.kind) + " takes " +
                                std::to_string(conv_form_size_count(form.kind)) + " size(s)");
  return form;
}

}  // namespace shrink::nn
