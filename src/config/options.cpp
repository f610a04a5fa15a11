#include "shrink/config/options.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace shrink::detail {

std::string format_value(bool v) { return v ? "true" : "false"; }

std::string format_value(int v) { return std::to_string(v); }

std::string format_value(int64_t v) { return std::to_string(v); }

std::string format_value(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  // The shortest %g text that reads back as the same double (0.1 -> "0.1", 1e-4 -> "0.0001",
  // 3.0 -> "3": integers are valid floats for every float option).
  char buffer[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buffer, sizeof buffer, "%.0f", v);
    return buffer;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, v);
    if (std::strtod(buffer, nullptr) == v) break;
  }
  return buffer;
}

namespace {

bool looks_like_number(const std::string& s) {
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == ".inf" || l == "+.inf" || l == "-.inf" || l == ".nan") return true;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  if (end == s.c_str() + s.size()) return true;
  return false;
}

bool is_reserved_word(const std::string& s) {
  std::string l;
  for (char c : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const char* const words[] = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"};
  for (const char* w : words)
    if (l == w) return true;
  return false;
}

bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  if (std::isspace(static_cast<unsigned char>(s.front())) || std::isspace(static_cast<unsigned char>(s.back())))
    return true;
  if (is_reserved_word(s) || looks_like_number(s)) return true;
  if (s.front() == '-' || s.front() == '?') return true;
  for (char c : s) {
    if (std::strchr(":#[]{},&*!|>'\"%@`", c)) return true;
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

std::string format_value(const std::string& v) {
  if (!needs_quotes(v)) return v;
  std::string out = "\"";
  for (char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
          out += hex;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace shrink::detail
