#pragma once
// Marks compression methods that rebuild their target layers before training (low_rank,
// compact_filters): the layers' parameters are replaced, so other methods' targets bound to the
// old tensors are stale. The experiment checks, after every method prepared the model, that
// no other method still targets a rebuilt layer, and fails at that method's `targets`.
namespace shrink {

class RebuildsLayers {
 public:
  virtual ~RebuildsLayers() = default;
};

}  // namespace shrink
