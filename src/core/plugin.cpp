#include "shrink/core/plugin.h"

#include <dlfcn.h>

#include "shrink/core/error.h"

namespace shrink {

void load_plugin(const std::string& path) {
  // A name without a slash would be searched on the library path; users mean a file.
  std::string file = path.find('/') == std::string::npos ? "./" + path : path;
  if (!dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
    const char* err = dlerror();
    throw UserError("cannot load plugin '" + path + "': " + (err ? err : "unknown error"));
  }
}

}  // namespace shrink
