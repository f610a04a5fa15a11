#pragma once
// Implemented by compression methods that need the input shape of one sample before training
// (prepare_model runs before any forward), e.g. to count MACs of candidate forms. The
// experiment passes the data's sample shape right after building such a method.
#include <cstdint>
#include <vector>

namespace shrink {

class SampleShapeConsumer {
 public:
  virtual ~SampleShapeConsumer() = default;
  /// [C, H, W] (or the data's shape) of one input sample.
  virtual void set_sample_shape(std::vector<int64_t> shape) = 0;
};

}  // namespace shrink
