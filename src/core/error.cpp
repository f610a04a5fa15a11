#include "shrink/core/error.h"

#include <algorithm>
#include <utility>

namespace shrink {

std::string SourceLocation::str() const {
  std::string out = file;
  auto append = [&out](int part) {
    if (!out.empty()) out += ':';
    out += std::to_string(part);
  };
  if (line > 0) {
    append(line);
    if (column > 0) append(column);
  }
  return out;
}

namespace {

std::string config_error_text(const SourceLocation& location, const std::string& key_path,
                              const std::string& message) {
  std::string out;
  std::string where = location.str();
  if (!where.empty()) out += where + ": ";
  if (!key_path.empty()) out += key_path + ": ";
  return out + message;
}

}  // namespace

ConfigError::ConfigError(SourceLocation location, std::string key_path, std::string message)
    : UserError(config_error_text(location, key_path, message)),
      location_(std::move(location)),
      key_path_(std::move(key_path)),
      message_(std::move(message)) {}

size_t edit_distance(const std::string& a, const std::string& b) {
  // One row of the Levenshtein table at a time.
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t substitution = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitution});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string nearest_name(const std::string& name, const std::vector<std::string>& candidates) {
  const size_t limit = std::max<size_t>(2, name.size() / 3);
  std::string best;
  size_t best_distance = limit + 1;
  for (const auto& candidate : candidates) {
    if (candidate.empty()) continue;
    size_t d = edit_distance(name, candidate);
    // Never suggest a complete rewrite ("x" -> "a", "lr" -> "wd").
    if (d >= std::max(name.size(), candidate.size())) continue;
    if (d < best_distance) {  // strict: the first of equally close candidates wins
      best = candidate;
      best_distance = d;
    }
  }
  return best;
}

}  // namespace shrink
