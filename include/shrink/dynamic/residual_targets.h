#pragma once
// What the methods acting on whole residual blocks (stochastic_depth, block_gating) share: finding
// the model's blocks and which of them the entry targets, and refusing a schedule.
#include <memory>
#include <string>
#include <vector>

#include "shrink/compression/method.h"
#include "shrink/models/resnet.h"

namespace shrink::dynamic {

struct TargetedBlock {
  std::string path;  ///< module path, e.g. "layer2.3"
  ResidualBlockPtr block;
  bool targeted = false;  ///< its path is among the method's target modules
};

/// The model's residual blocks in forward order. Errors at `method` when the model has none and
/// at `targets` when no block is targeted (listing the blocks).
std::vector<TargetedBlock> targeted_residual_blocks(const ModelPtr& model, const CompressionMethod& method);

/// Fails at the first schedule key of the entry (start/end epoch or step, frequency), set in the
/// recipe or from C++: `why` says why the method takes no schedule.
void reject_schedule(const MethodSpec& spec, const std::string& why);

}  // namespace shrink::dynamic
