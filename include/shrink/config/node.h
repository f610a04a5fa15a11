#pragma once
// The recipe tree. YAML is read into ConfigValue trees that remember, for every node, the
// file, line and column it came from (bases and `--set` overrides keep their own origins),
// and ConfigNode is the read-only view that knows the dotted key path, so that every error
// reads `file:line:col: key.path: message`. No torch here.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shrink/core/error.h"

namespace shrink {

struct ConfigValue;
using ConfigValuePtr = std::shared_ptr<ConfigValue>;

/// One node of a recipe tree.
struct ConfigValue {
  enum class Kind { Null, Scalar, Sequence, Map };
  Kind kind = Kind::Null;
  std::string scalar;                                    ///< Scalar: the text as written
  bool quoted = false;                                   ///< Scalar: written in quotes (always a string)
  std::vector<ConfigValuePtr> items;                     ///< Sequence
  std::vector<std::pair<std::string, ConfigValuePtr>> entries;  ///< Map, in file order
  SourceLocation location;                               ///< where the value starts
  SourceLocation key_location;                           ///< map entry: where its key is written (else unset)

  static ConfigValuePtr make_map(SourceLocation loc = {});
  static ConfigValuePtr make_sequence(SourceLocation loc = {});
  static ConfigValuePtr make_scalar(std::string text, SourceLocation loc = {});
  ConfigValuePtr find(const std::string& key) const;     ///< Map entry or nullptr
  void set(const std::string& key, ConfigValuePtr value);  ///< Map: replace or append
  bool erase(const std::string& key);                     ///< Map: remove; false if absent
  ConfigValuePtr deep_copy() const;
};

/// Read-only view of a ConfigValue with its dotted path (e.g. "compression[1].targets").
class ConfigNode {
 public:
  ConfigNode() = default;
  ConfigNode(ConfigValuePtr value, std::string path);

  bool valid() const { return value_ != nullptr; }
  bool is_null() const;
  bool is_scalar() const;
  bool is_sequence() const;
  bool is_map() const;

  const std::string& path() const { return path_; }
  const SourceLocation& location() const;
  const ConfigValuePtr& value() const { return value_; }

  /// Map access. operator[] of a missing key fails with "missing required key".
  bool has(const std::string& key) const;
  ConfigNode operator[](const std::string& key) const;
  /// Map entry or an invalid node (valid() == false) when absent.
  ConfigNode get(const std::string& key) const;
  std::vector<std::string> keys() const;

  /// Sequence access.
  size_t size() const;
  ConfigNode at(size_t index) const;

  /// Typed conversion with an error naming the expected type and the value found.
  /// Supported: bool, int, int64_t, double, std::string, std::vector<T> of those.
  /// A scalar where a sequence is expected is taken as a one-element sequence.
  template <class T>
  T as() const;

  /// Map value converted to T, or `fallback` when the key is absent.
  template <class T>
  T get_or(const std::string& key, T fallback) const {
    return has(key) ? (*this)[key].template as<T>() : fallback;
  }

  /// Throws ConfigError at this node.
  [[noreturn]] void fail(const std::string& message) const;

  /// Fails at the first key not in `allowed`, suggesting the nearest allowed name.
  void check_keys(const std::vector<std::string>& allowed) const;

  /// The scalar text (fails if not a scalar).
  const std::string& text() const;

 private:
  ConfigValuePtr value_;
  std::string path_;
};

template <> bool ConfigNode::as<bool>() const;
template <> int ConfigNode::as<int>() const;
template <> int64_t ConfigNode::as<int64_t>() const;
template <> double ConfigNode::as<double>() const;
template <> std::string ConfigNode::as<std::string>() const;
template <> std::vector<std::string> ConfigNode::as<std::vector<std::string>>() const;
template <> std::vector<int64_t> ConfigNode::as<std::vector<int64_t>>() const;
template <> std::vector<int> ConfigNode::as<std::vector<int>>() const;
template <> std::vector<double> ConfigNode::as<std::vector<double>>() const;

}  // namespace shrink
