#pragma once
// One way for compression methods to reject an option: at the recipe entry's key (file, line,
// dotted key path) when the method came from a recipe, else as a UserError naming the method.
#include <cstdint>
#include <string>

#include "shrink/compression/method.h"

namespace shrink {

/// Fails at `key` of the method's recipe entry (element `index` when the key holds a list and
/// index >= 0); from C++ (no recipe entry), throws UserError("<method>: <key>: <message>").
[[noreturn]] void fail_at_option(const MethodSpec& spec, const std::string& key, const std::string& message,
                                 int64_t index = -1);

}  // namespace shrink
