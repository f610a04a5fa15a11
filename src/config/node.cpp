#include "shrink/config/node.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace shrink {

// ---------------------------------------------------------------------------------------------
// ConfigValue

ConfigValuePtr ConfigValue::make_map(SourceLocation loc) {
  auto v = std::make_shared<ConfigValue>();
  v->kind = Kind::Map;
  v->location = std::move(loc);
  return v;
}

ConfigValuePtr ConfigValue::make_sequence(SourceLocation loc) {
  auto v = std::make_shared<ConfigValue>();
  v->kind = Kind::Sequence;
  v->location = std::move(loc);
  return v;
}

ConfigValuePtr ConfigValue::make_scalar(std::string text, SourceLocation loc) {
  auto v = std::make_shared<ConfigValue>();
  v->kind = Kind::Scalar;
  v->scalar = std::move(text);
  v->location = std::move(loc);
  return v;
}

ConfigValuePtr ConfigValue::find(const std::string& key) const {
  for (const auto& kv : entries)
    if (kv.first == key) return kv.second;
  return nullptr;
}

void ConfigValue::set(const std::string& key, ConfigValuePtr value) {
  for (auto& kv : entries) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

bool ConfigValue::erase(const std::string& key) {
  auto it = std::find_if(entries.begin(), entries.end(),
                         [&key](const auto& kv) { return kv.first == key; });
  if (it == entries.end()) return false;
  entries.erase(it);
  return true;
}

ConfigValuePtr ConfigValue::deep_copy() const {
  auto v = std::make_shared<ConfigValue>();
  v->kind = kind;
  v->scalar = scalar;
  v->quoted = quoted;
  v->location = location;
  v->key_location = key_location;
  v->items.reserve(items.size());
  for (const auto& item : items) v->items.push_back(item ? item->deep_copy() : nullptr);
  v->entries.reserve(entries.size());
  for (const auto& kv : entries) v->entries.emplace_back(kv.first, kv.second ? kv.second->deep_copy() : nullptr);
  return v;
}

// ---------------------------------------------------------------------------------------------
// ConfigNode

namespace {

std::string child_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

std::string item_path(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

/// What a value is, for "expected X (got ...)" messages.
std::string describe(const ConfigValuePtr& v) {
  if (!v) return "nothing";
  switch (v->kind) {
    case ConfigValue::Kind::Null: return "null";
    case ConfigValue::Kind::Map: return "a map";
    case ConfigValue::Kind::Sequence: return "a list";
    case ConfigValue::Kind::Scalar:
      if (v->quoted) return "the string \"" + v->scalar + "\"";
      return "'" + v->scalar + "'";
  }
  return "?";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool parse_int64(const std::string& text, int64_t& out, bool& overflow) {
  overflow = false;
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (end != text.c_str() + text.size()) return false;
  if (errno == ERANGE) {
    overflow = true;
    return false;
  }
  out = static_cast<int64_t>(v);
  return true;
}

bool parse_double(const std::string& text, double& out) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return false;
  // YAML spellings of infinity and not-a-number.
  std::string l = lower(text);
  if (l == ".inf" || l == "+.inf") {
    out = std::numeric_limits<double>::infinity();
    return true;
  }
  if (l == "-.inf") {
    out = -std::numeric_limits<double>::infinity();
    return true;
  }
  if (l == ".nan") {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return false;
  out = v;
  return true;
}

const SourceLocation& unknown_location() {
  static const SourceLocation loc;
  return loc;
}

}  // namespace

ConfigNode::ConfigNode(ConfigValuePtr value, std::string path)
    : value_(std::move(value)), path_(std::move(path)) {}

bool ConfigNode::is_null() const { return !value_ || value_->kind == ConfigValue::Kind::Null; }
bool ConfigNode::is_scalar() const { return value_ && value_->kind == ConfigValue::Kind::Scalar; }
bool ConfigNode::is_sequence() const { return value_ && value_->kind == ConfigValue::Kind::Sequence; }
bool ConfigNode::is_map() const { return value_ && value_->kind == ConfigValue::Kind::Map; }

const SourceLocation& ConfigNode::location() const {
  return value_ ? value_->location : unknown_location();
}

void ConfigNode::fail(const std::string& message) const {
  throw ConfigError(location(), path_, message);
}

bool ConfigNode::has(const std::string& key) const {
  if (is_null()) return false;
  if (!is_map()) fail("expected a map (got " + describe(value_) + ")");
  return value_->find(key) != nullptr;
}

ConfigNode ConfigNode::get(const std::string& key) const {
  if (is_null()) return ConfigNode();
  if (!is_map()) fail("expected a map (got " + describe(value_) + ")");
  auto child = value_->find(key);
  if (!child) return ConfigNode();
  return ConfigNode(child, child_path(path_, key));
}

ConfigNode ConfigNode::operator[](const std::string& key) const {
  if (is_map() || is_null()) {
    auto child = is_map() ? value_->find(key) : nullptr;
    if (!child) throw ConfigError(location(), child_path(path_, key), "missing required key '" + key + "'");
    return ConfigNode(child, child_path(path_, key));
  }
  fail("expected a map (got " + describe(value_) + ")");
}

std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> out;
  if (is_null()) return out;
  if (!is_map()) fail("expected a map (got " + describe(value_) + ")");
  for (const auto& kv : value_->entries) out.push_back(kv.first);
  return out;
}

size_t ConfigNode::size() const {
  if (is_null()) return 0;
  if (is_scalar()) return 1;  // a scalar reads as a one-element list
  if (!is_sequence()) fail("expected a list (got " + describe(value_) + ")");
  return value_->items.size();
}

ConfigNode ConfigNode::at(size_t index) const {
  size_t n = size();
  if (index >= n)
    fail("index " + std::to_string(index) + " out of range (list has " + std::to_string(n) +
         (n == 1 ? " item)" : " items)"));
  if (is_scalar()) return *this;
  return ConfigNode(value_->items[index], item_path(path_, index));
}

const std::string& ConfigNode::text() const {
  if (!is_scalar()) fail("expected a scalar (got " + describe(value_) + ")");
  return value_->scalar;
}

void ConfigNode::check_keys(const std::vector<std::string>& allowed) const {
  if (is_null()) return;
  if (!is_map()) fail("expected a map (got " + describe(value_) + ")");
  for (const auto& kv : value_->entries) {
    if (std::find(allowed.begin(), allowed.end(), kv.first) != allowed.end()) continue;
    std::string message = "unknown key '" + kv.first + "'";
    auto near = nearest_name(kv.first, allowed);
    if (!near.empty()) {
      message += " (did you mean '" + near + "'?)";
    } else {
      message += "; valid keys: ";
      for (size_t i = 0; i < allowed.size(); ++i) message += (i ? ", " : "") + allowed[i];
    }
    // Point at the key itself where it is known (not at its value).
    const SourceLocation& where = kv.second && kv.second->key_location.line > 0 ? kv.second->key_location
                                  : kv.second                                     ? kv.second->location
                                                                                  : location();
    throw ConfigError(where, child_path(path_, kv.first), message);
  }
}

// ---------------------------------------------------------------------------------------------
// Typed conversions

template <>
bool ConfigNode::as<bool>() const {
  if (is_scalar() && !value_->quoted) {
    std::string l = lower(value_->scalar);
    if (l == "true" || l == "yes" || l == "on") return true;
    if (l == "false" || l == "no" || l == "off") return false;
  }
  fail("expected true or false (got " + describe(value_) + ")");
}

template <>
int64_t ConfigNode::as<int64_t>() const {
  if (is_scalar() && !value_->quoted) {
    int64_t v = 0;
    bool overflow = false;
    if (parse_int64(value_->scalar, v, overflow)) return v;
    if (overflow) fail("integer out of range (got " + describe(value_) + ")");
  }
  fail("expected an integer (got " + describe(value_) + ")");
}

template <>
int ConfigNode::as<int>() const {
  int64_t v = as<int64_t>();
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail("integer out of range (got " + describe(value_) + ")");
  return static_cast<int>(v);
}

template <>
double ConfigNode::as<double>() const {
  if (is_scalar() && !value_->quoted) {
    double v = 0;
    if (parse_double(value_->scalar, v)) return v;
  }
  fail("expected a number (got " + describe(value_) + ")");
}

template <>
std::string ConfigNode::as<std::string>() const {
  if (is_scalar()) return value_->scalar;
  fail("expected a string (got " + describe(value_) + ")");
}

namespace {

template <class T>
std::vector<T> as_list(const ConfigNode& node) {
  std::vector<T> out;
  if (node.is_null()) return out;
  if (node.is_scalar()) {
    out.push_back(node.as<T>());
    return out;
  }
  if (!node.is_sequence()) node.fail("expected a list (got " + describe(node.value()) + ")");
  size_t n = node.size();
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(node.at(i).as<T>());
  return out;
}

}  // namespace

template <>
std::vector<std::string> ConfigNode::as<std::vector<std::string>>() const {
  return as_list<std::string>(*this);
}
template <>
std::vector<int64_t> ConfigNode::as<std::vector<int64_t>>() const {
  return as_list<int64_t>(*this);
}
template <>
std::vector<int> ConfigNode::as<std::vector<int>>() const {
  return as_list<int>(*this);
}
template <>
std::vector<double> ConfigNode::as<std::vector<double>>() const {
  return as_list<double>(*this);
}

}  // namespace shrink
