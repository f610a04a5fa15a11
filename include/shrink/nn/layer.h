#pragma once
// What every Shrink layer reports about its cost, for `shrink summary`. Layers remember the
// spatial size of their last output so MACs follow the recipe's input shape.
#include <cstdint>

namespace shrink::nn {

class CostedLayer {
 public:
  virtual ~CostedLayer() = default;
  /// Multiply-accumulates per input sample in the last forward (0 before any forward).
  virtual int64_t macs_per_sample() const = 0;
  /// Bits used to store one weight (32 for float weights; quantizers report fewer).
  virtual double bits_per_weight() const { return 32.0; }
};

}  // namespace shrink::nn
