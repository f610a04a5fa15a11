#pragma once
// Channel groups: the sets of channels that structured pruning removes together.
//
// A group is a number of channels C and the layers that hold them:
//   producer     a Shrink Conv2d (groups 1) or Linear whose outputs are the channels: dim 0 of
//                weight (and of bias and weight_mask)
//   norm         a BatchNorm2d normalizing them: weight, bias, running_mean, running_var
//   passthrough  a depthwise Conv2d (groups = in = out = C) carrying them through: dim 0 of its
//                weight; in/out channels and groups shrink together
//   consumer     a Conv2d (groups 1) or Linear reading them: dim 1 of weight. A Linear after a
//                flatten reads `block` inputs per channel (the spatial size); a consumer of a
//                concatenation reads the channels after those of the `offset_after` producers
//                (SqueezeNet's expand1x1 / expand3x3).
// Residual additions tie channels: every producer writing into a residual stream belongs to one
// group of kind `stream` ("stream.layer2": the stage's downsample conv + BN and the last conv +
// BN of each of its blocks). Groups inside one block or between two plain layers are
// `internal` and named after their first producer ("layer1.0.conv1", "features.3").
//
// Built-in descriptions cover the model zoo:
//   resnet20..110, preact_resnet20, wrn16, resnet18, resnet50: the internal groups of every block
//     and, with projection shortcuts (B; always for wrn16, resnet18, resnet50), the stream groups
//     ("stream.stem" when the stem's channels feed a projection directly, as in resnet50 and
//     wrn16 with k > 1; otherwise the stem joins "stream.layer1"). With shortcut A (zero
//     padding) the residual stream crosses stages without a conv, so those models offer only
//     the block-internal groups (what Li et al. 2017 prune on CIFAR ResNets).
//   vgg16, vgg11_bn_cifar, vgg16_bn_cifar, alexnet, lenet5, lenet300: every conv and every
//     Linear whose output feeds another layer (a Linear after a flatten consumes `block`
//     inputs per channel).
//   mobilenet_v1(_cifar): the stem and each block's pointwise conv, passing through the next
//     block's depthwise conv. mobilenet_v2(_cifar): each expansion (through its depthwise conv),
//     the stem (through features.1's depthwise), and the projections: a projection followed by
//     blocks with a residual add is tied to their projections in "stream.features.<i>" (i the
//     first block); a projection without one is internal ("features.1.conv.1").
//   squeezenet1_1(_cifar): the stem, each Fire's squeeze, expand1x1 and expand3x3 (the next
//     layer reads expand3x3's channels after expand1x1's).
// Other models are described with register_channel_groups().
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <typeindex>
#include <vector>

namespace shrink::structure {

using ModulePtr = std::shared_ptr<torch::nn::Module>;

/// How a layer holds a group's channels (see the file comment).
enum class ChannelRole { producer, norm, passthrough, consumer };

/// internal: channels of one block or between two layers; stream: tied by residual additions.
enum class GroupKind { internal, stream };

const char* to_string(ChannelRole role);
const char* to_string(GroupKind kind);

struct ChannelMember {
  ChannelRole role = ChannelRole::producer;
  ModulePtr module;
  std::string path;   ///< dotted module path in the model (filled by channel_groups())
  int64_t block = 1;  ///< consumer: inputs per channel (spatial positions of a flatten)
  /// consumer: producers whose channels precede this group's in a concatenation; the group's
  /// channels start at the sum of their current output channels.
  std::vector<ModulePtr> offset_after;
};

/// A set of channels pruned together, and every layer that holds them.
struct ChannelGroup {
  std::string name;  ///< stable name for recipes (globs); "" = the first producer's path
  GroupKind kind = GroupKind::internal;
  std::vector<ChannelMember> members;

  /// Builders (return *this so calls chain).
  ChannelGroup& producer(ModulePtr module);
  ChannelGroup& norm(ModulePtr module);
  ChannelGroup& passthrough(ModulePtr module);
  ChannelGroup& consumer(ModulePtr module, int64_t block = 1, std::vector<ModulePtr> offset_after = {});

  /// Current number of channels (output channels of the first producer).
  int64_t channels() const;
  /// Members with `role`, in order.
  std::vector<const ChannelMember*> with_role(ChannelRole role) const;
  /// Whether some member is `module`.
  bool contains(const torch::nn::Module& module) const;
};

/// Describes a model's groups. Names may be left empty (they become the first producer's
/// path); paths are filled in by channel_groups().
using ChannelGroupFn = std::function<std::vector<ChannelGroup>(torch::nn::Module& model)>;
using ModelPredicate = std::function<bool(const torch::nn::Module& model)>;

/// Registers a description for models that `matches`. Registrations made later are tried
/// first, and all of them before the built-ins, so a user may override a zoo model.
void register_channel_groups(ModelPredicate matches, ChannelGroupFn describe);
/// For models whose dynamic type is exactly `type` (typeid(MyModelImpl)).
void register_channel_groups(std::type_index type, ChannelGroupFn describe);
/// For models that are an `Impl` (or derive from it).
template <class Impl>
void register_channel_groups(ChannelGroupFn describe) {
  register_channel_groups([](const torch::nn::Module& m) { return dynamic_cast<const Impl*>(&m) != nullptr; },
                          std::move(describe));
}

/// Whether some description (registered or built-in) applies to `model`.
bool has_channel_groups(const torch::nn::Module& model);

/// The prunable channel groups of `model` (built-ins: in forward order; for ResNets the
/// block-internal groups first, then the stream groups), with member paths and names filled in
/// and shapes checked. UserError when no description applies (naming the model's type).
std::vector<ChannelGroup> channel_groups(torch::nn::Module& model);

/// Checks a group's members against each other (types, channel counts, block sizes);
/// UserError naming the group and the layer otherwise.
void check_group(const ChannelGroup& group);

}  // namespace shrink::structure
