#include "shrink/compression/method.h"

#include <algorithm>
#include <cmath>

#include "shrink/compression/builtin.h"
#include "shrink/compression/method_errors.h"

namespace shrink {

int64_t MethodSchedule::begin(int64_t steps_per_epoch) const {
  if (start_step >= 0) return start_step;
  if (start_epoch >= 0) return static_cast<int64_t>(std::llround(start_epoch * steps_per_epoch));
  return 0;
}

int64_t MethodSchedule::end(int64_t steps_per_epoch, int64_t total_steps) const {
  if (end_step >= 0) return end_step;
  if (end_epoch >= 0) return static_cast<int64_t>(std::llround(end_epoch * steps_per_epoch));
  return std::max<int64_t>(total_steps, begin(steps_per_epoch) + 1);
}

bool MethodSchedule::active(int64_t step, int64_t steps_per_epoch, int64_t total_steps) const {
  return step >= begin(steps_per_epoch) && step < end(steps_per_epoch, total_steps);
}

bool MethodSchedule::due(int64_t step, int64_t steps_per_epoch, int64_t total_steps) const {
  return active(step, steps_per_epoch, total_steps) && (step - begin(steps_per_epoch)) % frequency == 0;
}

const std::vector<std::string>& common_method_keys() {
  static const std::vector<std::string> keys = {"method",     "targets",  "exclude",  "start_epoch",
                                                "end_epoch",  "start_step", "end_step", "frequency"};
  return keys;
}

MethodSpec parse_method_spec(const ConfigNode& entry) {
  if (!entry.is_map()) entry.fail("expected a map with at least 'method'");
  MethodSpec spec;
  spec.where = entry;
  spec.method = entry["method"].as<std::string>();
  spec.targets = entry.get_or<std::vector<std::string>>("targets", {"*"});
  spec.exclude = entry.get_or<std::vector<std::string>>("exclude", {});
  auto& s = spec.schedule;
  auto non_negative = [&](const char* key) {
    if (entry.has(key) && entry[key].as<double>() < 0) entry[key].fail("must be >= 0 (got " + entry[key].text() + ")");
  };
  for (const char* key : {"start_epoch", "end_epoch", "start_step", "end_step"}) non_negative(key);
  if (entry.has("start_epoch") && entry.has("start_step"))
    entry["start_step"].fail("give start_epoch or start_step, not both");
  if (entry.has("end_epoch") && entry.has("end_step")) entry["end_step"].fail("give end_epoch or end_step, not both");
  s.start_epoch = entry.get_or<double>("start_epoch", -1);
  s.end_epoch = entry.get_or<double>("end_epoch", -1);
  s.start_step = entry.get_or<int64_t>("start_step", -1);
  s.end_step = entry.get_or<int64_t>("end_step", -1);
  s.frequency = entry.get_or<int64_t>("frequency", 1);
  if (s.frequency < 1) entry["frequency"].fail("must be >= 1 (got " + entry["frequency"].text() + ")");
  if (s.start_epoch >= 0 && s.end_epoch >= 0 && s.end_epoch <= s.start_epoch)
    entry["end_epoch"].fail("must be greater than start_epoch (got " + entry["end_epoch"].text() +
                            " <= " + entry["start_epoch"].text() + ")");
  if (s.start_step >= 0 && s.end_step >= 0 && s.end_step <= s.start_step)
    entry["end_step"].fail("must be greater than start_step (got " + entry["end_step"].text() + " <= " +
                           entry["start_step"].text() + ")");
  return spec;
}

bool glob_match(const std::string& pattern, const std::string& text) {
  // Iterative wildcard match with backtracking on the last '*'.
  size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace {
bool matches_any(const std::vector<std::string>& patterns, const std::string& name) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const auto& p) { return glob_match(p, name); });
}
}  // namespace

void CompressionMethod::bind(const ModelPtr& model) {
  target_parameters_.clear();
  target_modules_.clear();
  std::vector<bool> used(spec_.targets.size(), false);
  auto note = [&](const std::string& name) {
    bool any = false;
    for (size_t i = 0; i < spec_.targets.size(); ++i)
      if (glob_match(spec_.targets[i], name)) used[i] = any = true;
    return any && !matches_any(spec_.exclude, name);
  };
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    if (note(item.key())) target_modules_.emplace_back(item.key(), item.value());
  for (const auto& item : model->named_parameters())
    if (note(item.key())) target_parameters_.emplace_back(item.key(), item.value());
  for (size_t i = 0; i < used.size(); ++i) {
    if (used[i]) continue;
    std::string available;
    for (const auto& item : model->named_parameters()) available += (available.empty() ? "" : ", ") + item.key();
    fail_at_option(spec_, "targets",
                   "'" + spec_.targets[i] + "' matches no module or parameter of the model; parameters: " + available,
                   static_cast<int64_t>(i));
  }
}

void fail_at_option(const MethodSpec& spec, const std::string& key, const std::string& message, int64_t index) {
  if (spec.where.valid() && spec.where.is_map() && spec.where.has(key)) {
    auto node = spec.where[key];
    if (index >= 0 && node.is_sequence() && static_cast<size_t>(index) < node.size()) node.at(index).fail(message);
    node.fail(message);
  }
  throw UserError(spec.method + ": " + key + ": " + message);
}

Registry<MethodFactory>& method_registry() {
  static Registry<MethodFactory>* registry = [] {
    auto* r = new Registry<MethodFactory>("compression method");
    detail::register_builtin_methods(*r);
    return r;
  }();
  return *registry;
}

MethodPtr build_method(const ConfigNode& entry) {
  auto spec = parse_method_spec(entry);
  const auto& registered = method_registry().get(spec.method, entry["method"]);
  return registered.factory(spec, entry);
}

}  // namespace shrink
