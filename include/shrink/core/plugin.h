#pragma once
#include <string>

namespace shrink {

/// Loads a user's shared library; its SHRINK_REGISTER_* statics run on load and add to the
/// registries. UserError naming the file when it cannot be loaded.
void load_plugin(const std::string& path);

}  // namespace shrink
