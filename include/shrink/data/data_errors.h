#pragma once
// Errors of dataset factories, placed at the option they are about.
#include <string>

#include "shrink/config/node.h"

namespace shrink {

/// Throws a ConfigError at `data.<key>` when that key is written, else at the `data` section;
/// a plain UserError when `data` is not a node (datasets built from C++).
[[noreturn]] void fail_at_key(const ConfigNode& data, const std::string& key, const std::string& message);

}  // namespace shrink
