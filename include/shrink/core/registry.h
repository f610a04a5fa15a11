#pragma once
// One registry per kind of pluggable thing (models, datasets, optimizers, LR schedules,
// compression methods, callbacks). Built-ins are registered explicitly when a registry is
// first used (static self-registration inside a library is dropped by the linker);
// users register with the SHRINK_REGISTER_* macros from their own executable or plug-in.
#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "shrink/config/node.h"
#include "shrink/config/options.h"
#include "shrink/core/error.h"

namespace shrink {

template <class Factory>
class Registry {
 public:
  struct Entry {
    std::string name;
    std::string description;  ///< one line, shown by `shrink list`
    Factory factory;
    std::vector<OptionDoc> options;  ///< documented options, shown by `shrink list KIND NAME`
  };

  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  /// Registers an entry; a second entry with the same name replaces the first (a plug-in may
  /// override a built-in deliberately).
  void add(Entry entry) { entries_[entry.name] = std::move(entry); }

  bool contains(const std::string& name) const { return entries_.count(name) > 0; }

  /// Looks a name up; an unknown name is a ConfigError at `where` listing what exists.
  const Entry& get(const std::string& name, const ConfigNode& where) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) where.fail(unknown_message(name));
    return it->second;
  }

  /// Looks a name up from C++ code; throws UserError when unknown.
  const Entry& get(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw UserError(unknown_message(name));
    return it->second;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }

  std::vector<const Entry*> entries() const {
    std::vector<const Entry*> out;
    for (const auto& kv : entries_) out.push_back(&kv.second);
    return out;
  }

  const std::string& kind() const { return kind_; }

 private:
  std::string unknown_message(const std::string& name) const {
    std::string msg = "unknown " + kind_ + " '" + name + "'";
    auto near = nearest_name(name, names());
    if (!near.empty()) msg += " (did you mean '" + near + "'?)";
    msg += "; registered: ";
    bool first = true;
    for (const auto& kv : entries_) {
      msg += (first ? "" : ", ") + kv.first;
      first = false;
    }
    return msg;
  }

  std::string kind_;
  std::map<std::string, Entry> entries_;
};

}  // namespace shrink

#define SHRINK_CONCAT_INNER(a, b) a##b
#define SHRINK_CONCAT(a, b) SHRINK_CONCAT_INNER(a, b)
/// A name unique within one translation unit, for static registration objects.
#define SHRINK_UNIQUE_NAME(prefix) SHRINK_CONCAT(prefix, __COUNTER__)
