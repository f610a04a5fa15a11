#pragma once
// OptionSchema<T>: one declaration per option drives parsing (with type and range checks and
// unknown-key errors) and documentation (`shrink list KIND NAME`, docs/recipes.md).
// The options struct stays a plain struct, so the C++ API works without YAML.
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "shrink/config/node.h"

namespace shrink {

/// Documentation of one option.
struct OptionDoc {
  std::string name;
  std::string type;           ///< "int", "float", "bool", "string", "list of string", ...
  std::string default_value;  ///< as it would be written in YAML
  std::string help;           ///< one line
};

namespace detail {
template <class V> struct OptionType;
template <> struct OptionType<bool> { static const char* name() { return "bool"; } };
template <> struct OptionType<int> { static const char* name() { return "int"; } };
template <> struct OptionType<int64_t> { static const char* name() { return "int"; } };
template <> struct OptionType<double> { static const char* name() { return "float"; } };
template <> struct OptionType<std::string> { static const char* name() { return "string"; } };
template <> struct OptionType<std::vector<std::string>> { static const char* name() { return "list of string"; } };
template <> struct OptionType<std::vector<int64_t>> { static const char* name() { return "list of int"; } };
template <> struct OptionType<std::vector<int>> { static const char* name() { return "list of int"; } };
template <> struct OptionType<std::vector<double>> { static const char* name() { return "list of float"; } };

std::string format_value(bool v);
std::string format_value(int v);
std::string format_value(int64_t v);
std::string format_value(double v);
std::string format_value(const std::string& v);
template <class V>
std::string format_value(const std::vector<V>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + format_value(v[i]);
  return out + "]";
}
template <class V> double as_number(const V& v) { return static_cast<double>(v); }
}  // namespace detail

template <class T>
class OptionSchema {
 public:
  /// Declares option `name` stored in `member`; its default is the member's value in T{}.
  template <class V>
  OptionSchema& add(const std::string& name, V T::*member, const std::string& help) {
    Option opt;
    opt.doc.name = name;
    opt.doc.type = detail::OptionType<V>::name();
    opt.doc.default_value = detail::format_value(T{}.*member);
    opt.doc.help = help;
    opt.parse = [member](const ConfigNode& node, T& out) { out.*member = node.template as<V>(); };
    options_.push_back(std::move(opt));
    return *this;
  }

  /// Range check on the last numeric option added (inclusive bounds).
  OptionSchema& range(double lo, double hi) {
    auto& opt = options_.back();
    auto previous = opt.parse;
    auto name = opt.doc.name;
    opt.parse = [previous, lo, hi](const ConfigNode& node, T& out) {
      previous(node, out);
      double v = node.as<double>();
      if (!(v >= lo && v <= hi)) {  // NaN fails too
        std::ostringstream msg;
        msg << "must be in [" << detail::format_value(lo) << ", " << detail::format_value(hi)
            << "] (got " << node.text() << ")";
        node.fail(msg.str());
      }
    };
    opt.doc.help += " Range [" + detail::format_value(lo) + ", " + detail::format_value(hi) + "].";
    return *this;
  }

  /// Lower bound only (inclusive).
  OptionSchema& min(double lo) {
    auto& opt = options_.back();
    auto previous = opt.parse;
    opt.parse = [previous, lo](const ConfigNode& node, T& out) {
      previous(node, out);
      if (!(node.as<double>() >= lo))  // NaN fails too
        node.fail("must be >= " + detail::format_value(lo) + " (got " + node.text() + ")");
    };
    opt.doc.help += " At least " + detail::format_value(lo) + ".";
    return *this;
  }

  /// Allowed values of the last string option added.
  OptionSchema& choices(const std::vector<std::string>& allowed) {
    auto& opt = options_.back();
    auto previous = opt.parse;
    opt.parse = [previous, allowed](const ConfigNode& node, T& out) {
      previous(node, out);
      auto v = node.as<std::string>();
      for (const auto& a : allowed)
        if (a == v) return;
      std::string msg = "must be one of ";
      for (size_t i = 0; i < allowed.size(); ++i) msg += (i ? ", " : "") + allowed[i];
      msg += " (got '" + v + "')";
      auto near = nearest_name(v, allowed);
      if (!near.empty()) msg += "; did you mean '" + near + "'?";
      node.fail(msg);
    };
    std::string list;
    for (size_t i = 0; i < allowed.size(); ++i) list += (i ? "|" : "") + allowed[i];
    opt.doc.type = "string (" + list + ")";
    return *this;
  }

  /// Parses `node` (a map, or null for all defaults) into `out`; keys outside the schema and
  /// `extra_keys` (handled by the caller) are errors.
  void parse_into(const ConfigNode& node, T& out, const std::vector<std::string>& extra_keys = {}) const {
    if (!node.valid() || node.is_null()) return;
    if (!node.is_map()) node.fail("expected a map of options");
    auto allowed = names();
    allowed.insert(allowed.end(), extra_keys.begin(), extra_keys.end());
    node.check_keys(allowed);
    for (const auto& opt : options_)
      if (node.has(opt.doc.name)) opt.parse(node[opt.doc.name], out);
  }

  T parse(const ConfigNode& node, const std::vector<std::string>& extra_keys = {}) const {
    T out{};
    parse_into(node, out, extra_keys);
    return out;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& opt : options_) out.push_back(opt.doc.name);
    return out;
  }

  std::vector<OptionDoc> docs() const {
    std::vector<OptionDoc> out;
    for (const auto& opt : options_) out.push_back(opt.doc);
    return out;
  }

 private:
  struct Option {
    OptionDoc doc;
    std::function<void(const ConfigNode&, T&)> parse;
  };
  std::vector<Option> options_;
};

}  // namespace shrink
