#pragma once
// Errors a user can cause. They carry a location so that every message reads
// `file:line:col: key.path: message`; the CLI prints what() and exits with status 2.
#include <stdexcept>
#include <string>
#include <vector>

namespace shrink {

/// Where a value came from: a recipe file, a base config, or a `--set` override.
struct SourceLocation {
  std::string file;  ///< path as given, or "--set" for command-line overrides
  int line = 0;      ///< 1-based; 0 when unknown
  int column = 0;    ///< 1-based; 0 when unknown
  std::string str() const;  ///< "file:line:col" (parts that are unknown are left out)
};

/// A wrong user input: recipe, flag, data file, checkpoint.
class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& message) : std::runtime_error(message) {}
};

/// A recipe error at a known key: what() is "file:line:col: key.path: message".
class ConfigError : public UserError {
 public:
  ConfigError(SourceLocation location, std::string key_path, std::string message);
  const SourceLocation& location() const { return location_; }
  const std::string& key_path() const { return key_path_; }
  const std::string& message() const { return message_; }

 private:
  SourceLocation location_;
  std::string key_path_;
  std::string message_;
};

/// The closest candidate by edit distance, or "" when none is close enough to suggest.
std::string nearest_name(const std::string& name, const std::vector<std::string>& candidates);

/// Levenshtein distance.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace shrink
