#pragma once
#include <string>

#include "shrink/core/error.h"

namespace shrink::test {

/// what() of the ConfigError that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace shrink::test
