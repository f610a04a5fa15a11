#include "shrink/structure/channel_groups.h"

#include <algorithm>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

#include "shrink/core/error.h"
#include "shrink/models/alexnet.h"
#include "shrink/models/lenet.h"
#include "shrink/models/mobilenet.h"
#include "shrink/models/resnet.h"
#include "shrink/models/squeezenet.h"
#include "shrink/models/vgg.h"
#include "shrink/models/zoo_blocks.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink::structure {

const char* to_string(ChannelRole role) {
  switch (role) {
    case ChannelRole::producer:
      return "producer";
    case ChannelRole::norm:
      return "norm";
    case ChannelRole::passthrough:
      return "passthrough";
    case ChannelRole::consumer:
      return "consumer";
  }
  return "?";
}

const char* to_string(GroupKind kind) { return kind == GroupKind::stream ? "stream" : "internal"; }

ChannelGroup& ChannelGroup::producer(ModulePtr module) {
  members.push_back({ChannelRole::producer, std::move(module), "", 1, {}});
  return *this;
}
ChannelGroup& ChannelGroup::norm(ModulePtr module) {
  members.push_back({ChannelRole::norm, std::move(module), "", 1, {}});
  return *this;
}
ChannelGroup& ChannelGroup::passthrough(ModulePtr module) {
  members.push_back({ChannelRole::passthrough, std::move(module), "", 1, {}});
  return *this;
}
ChannelGroup& ChannelGroup::consumer(ModulePtr module, int64_t block, std::vector<ModulePtr> offset_after) {
  members.push_back({ChannelRole::consumer, std::move(module), "", block, std::move(offset_after)});
  return *this;
}

namespace {

/// Output channels of a producer layer (-1 if it is none).
int64_t out_channels_of(const torch::nn::Module& m) {
  if (auto* c = dynamic_cast<const nn::Conv2dImpl*>(&m)) return c->options.out_channels();
  if (auto* l = dynamic_cast<const nn::LinearImpl*>(&m)) return l->options.out_features();
  return -1;
}

}  // namespace

int64_t ChannelGroup::channels() const {
  for (const auto& m : members)
    if (m.role == ChannelRole::producer) return out_channels_of(*m.module);
  return 0;
}

std::vector<const ChannelMember*> ChannelGroup::with_role(ChannelRole role) const {
  std::vector<const ChannelMember*> out;
  for (const auto& m : members)
    if (m.role == role) out.push_back(&m);
  return out;
}

bool ChannelGroup::contains(const torch::nn::Module& module) const {
  return std::any_of(members.begin(), members.end(), [&](const auto& m) { return m.module.get() == &module; });
}

namespace {

using PathMap = std::unordered_map<const torch::nn::Module*, std::string>;

PathMap module_paths(torch::nn::Module& model) {
  PathMap out;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) out.emplace(item.value().get(), item.key());
  return out;
}

std::string path_in(const PathMap& paths, const torch::nn::Module* m) {
  auto it = paths.find(m);
  return it == paths.end() ? std::string() : it->second;
}

// ---------------------------------------------------------------------------------------------
// Layers in forward order (VGG, AlexNet, LeNets, MobileNets, SqueezeNet): a conv or Linear closes
// the open groups as their consumer and opens its own; BN and depthwise convs join the open
// group; element-wise and pooling layers keep the channels; anything else ends the open groups.

class ChainWalker {
 public:
  explicit ChainWalker(const PathMap& paths) : paths_(paths) {}

  void visit(const ModulePtr& m) {
    if (auto* conv = m->as<nn::Conv2dImpl>()) {
      const auto& o = conv->options;
      if (o.groups() == 1) {
        consume(m, o.in_channels());
        open_single(m);
      } else if (o.groups() == o.in_channels() && o.groups() == o.out_channels() && open_.size() == 1 &&
                 groups_[open_[0].index].channels() == o.in_channels()) {
        groups_[open_[0].index].passthrough(m);
      } else {
        barrier();
      }
    } else if (auto* fc = m->as<nn::LinearImpl>()) {
      consume(m, fc->options.in_features());
      open_single(m);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      if (open_.size() == 1 && groups_[open_[0].index].channels() == bn->options.num_features())
        groups_[open_[0].index].norm(m);
      else
        barrier();
    } else if (m->as<torch::nn::ReLUImpl>() || m->as<torch::nn::ReLU6Impl>() || m->as<torch::nn::MaxPool2dImpl>() ||
               m->as<torch::nn::AvgPool2dImpl>() || m->as<torch::nn::AdaptiveAvgPool2dImpl>() ||
               m->as<torch::nn::DropoutImpl>() || m->as<torch::nn::FlattenImpl>() ||
               m->as<torch::nn::IdentityImpl>()) {
      // channels pass unchanged
    } else if (auto* cba = m->as<ConvBNActImpl>()) {
      visit(cba->conv.ptr());
      visit(cba->bn.ptr());
    } else if (auto* ds = m->as<DepthwiseSeparableImpl>()) {
      visit(ds->depthwise.ptr());
      visit(ds->depthwise_bn.ptr());
      visit(ds->pointwise.ptr());
      visit(ds->pointwise_bn.ptr());
    } else if (auto* ir = m->as<InvertedResidualImpl>()) {
      visit_inverted_residual(*ir);
    } else if (auto* fire = m->as<FireImpl>()) {
      visit_fire(*fire);
    } else if (m->as<torch::nn::ModuleListImpl>()) {
      for (const auto& child : m->children()) visit(child);
    } else {
      barrier();
    }
  }

  /// Complete groups: closed by a consumer, not ended by a barrier. Open groups (the logits)
  /// are left out.
  std::vector<ChannelGroup> finish() {
    barrier();
    std::vector<ChannelGroup> out;
    for (size_t i = 0; i < groups_.size(); ++i)
      if (!dropped_[i] && !groups_[i].with_role(ChannelRole::consumer).empty()) out.push_back(std::move(groups_[i]));
    return out;
  }

 private:
  struct Open {
    size_t index;
    std::vector<ModulePtr> offset_after;  ///< concatenation: producers whose channels come first
  };

  /// `m` reads the open groups' channels (concatenated in order) as its `inputs` inputs.
  void consume(const ModulePtr& m, int64_t inputs) {
    if (open_.empty()) return;
    int64_t total = 0;
    for (const auto& o : open_) total += groups_[o.index].channels();
    if (total <= 0 || inputs % total != 0) return barrier();
    const int64_t block = inputs / total;
    if (block != 1 && !m->as<nn::LinearImpl>()) return barrier();  // a conv reads each channel once
    for (const auto& o : open_) groups_[o.index].consumer(m, block, o.offset_after);
    open_.clear();
  }

  size_t open_single(const ModulePtr& producer) {
    groups_.emplace_back();
    groups_.back().producer(producer);
    dropped_.push_back(false);
    opener_.push_back(block_path_.empty() ? path_in(paths_, producer.get()) : block_path_);
    open_ = {{groups_.size() - 1, {}}};
    return groups_.size() - 1;
  }

  /// Channels past this point cannot be followed: the open groups are not prunable.
  void barrier() {
    for (const auto& o : open_) dropped_[o.index] = true;
    open_.clear();
  }

  void visit_inverted_residual(InvertedResidualImpl& ir) {
    const auto saved = block_path_;
    block_path_ = path_in(paths_, &ir);
    if (!ir.use_residual || open_.size() != 1) {
      visit(ir.conv.ptr());
    } else {
      // The block's output is added to its input: its projection writes the input's channels.
      const size_t hold = open_[0].index;
      visit(ir.conv.ptr());
      const bool fresh = open_.size() == 1 && open_[0].index + 1 == groups_.size() && open_[0].index != hold;
      if (fresh && !dropped_[hold]) {
        ChannelGroup added = std::move(groups_.back());
        groups_.pop_back();
        dropped_.pop_back();
        opener_.pop_back();
        auto& tied = groups_[hold];
        for (auto& member : added.members) tied.members.push_back(std::move(member));
        tied.kind = GroupKind::stream;
        tied.name = "stream." + opener_[hold];
        open_ = {{hold, {}}};
      } else {
        dropped_[hold] = true;
        barrier();
      }
    }
    block_path_ = saved;
  }

  void visit_fire(FireImpl& fire) {
    consume(fire.squeeze.ptr(), fire.squeeze->options.in_channels());
    const size_t squeeze = open_single(fire.squeeze.ptr());
    groups_[squeeze].consumer(fire.expand1x1.ptr()).consumer(fire.expand3x3.ptr());
    open_.clear();
    // The block's output is cat(expand1x1, expand3x3): the next layer reads expand3x3's
    // channels after expand1x1's.
    const size_t e1 = open_single(fire.expand1x1.ptr());
    const size_t e3 = open_single(fire.expand3x3.ptr());
    open_ = {{e1, {}}, {e3, {fire.expand1x1.ptr()}}};
  }

  const PathMap& paths_;
  std::vector<ChannelGroup> groups_;
  std::vector<bool> dropped_;
  std::vector<std::string> opener_;  ///< block (or layer) that opened each group
  std::vector<Open> open_;
  std::string block_path_;  ///< the InvertedResidual being visited
};

// ---------------------------------------------------------------------------------------------
// Residual networks

struct ResNetParts {
  nn::Conv2d stem{nullptr};
  torch::nn::BatchNorm2d stem_bn{nullptr};   ///< post-activation nets
  torch::nn::BatchNorm2d final_bn{nullptr};  ///< pre-activation nets
  nn::Linear fc{nullptr};
};

std::vector<ChannelGroup> resnet_groups(const ResidualNetImpl& net, const ResNetParts& parts, const PathMap& paths) {
  std::vector<ChannelGroup> internal;
  bool streams_known = true;  // false: zero padding or a block of unknown type
  for (const auto& block : net.residual_blocks()) {
    if (auto* b = dynamic_cast<BasicBlockImpl*>(block.get())) {
      internal.push_back(ChannelGroup().producer(b->conv1.ptr()).norm(b->bn1.ptr()).consumer(b->conv2.ptr()));
    } else if (auto* b = dynamic_cast<BottleneckImpl*>(block.get())) {
      internal.push_back(ChannelGroup().producer(b->conv1.ptr()).norm(b->bn1.ptr()).consumer(b->conv2.ptr()));
      internal.push_back(ChannelGroup().producer(b->conv2.ptr()).norm(b->bn2.ptr()).consumer(b->conv3.ptr()));
    } else if (auto* b = dynamic_cast<PreActBlockImpl*>(block.get())) {
      internal.push_back(ChannelGroup().producer(b->conv1.ptr()).norm(b->bn2.ptr()).consumer(b->conv2.ptr()));
    } else {
      streams_known = false;
    }
    if (block->shortcut_kind == ShortcutKind::kZeroPad) streams_known = false;
  }
  if (!streams_known || parts.stem.is_empty() || parts.fc.is_empty()) return internal;

  // The residual stream: the stem (or a stage's projection) and every block's last conv write
  // it; the next block's first conv (and BN in pre-activation blocks) and projection read it.
  std::vector<ChannelGroup> streams;
  auto fresh = [](const ModulePtr& producer, const ModulePtr& bn) {
    ChannelGroup g;
    g.kind = GroupKind::stream;
    g.producer(producer);
    if (bn) g.norm(bn);
    return g;
  };
  ChannelGroup current = fresh(parts.stem.ptr(), parts.stem_bn.is_empty() ? nullptr : parts.stem_bn.ptr());
  std::string writer = "stem";  // the stage whose blocks last wrote `current`
  for (const auto& stage : net.stages()) {
    const std::string stage_name = path_in(paths, stage.get());
    for (const auto& child : stage->children()) {
      auto* block = dynamic_cast<ResidualBlockImpl*>(child.get());
      if (!block) return internal;
      auto* basic = dynamic_cast<BasicBlockImpl*>(block);
      auto* bottleneck = dynamic_cast<BottleneckImpl*>(block);
      auto* preact = dynamic_cast<PreActBlockImpl*>(block);
      // Inputs of the block.
      if (basic) current.consumer(basic->conv1.ptr());
      if (bottleneck) current.consumer(bottleneck->conv1.ptr());
      if (preact) current.norm(preact->bn1.ptr()).consumer(preact->conv1.ptr());
      if (block->shortcut_kind == ShortcutKind::kProjection) {
        const auto ds = block->downsample->children();
        auto conv = ds.empty() ? nullptr : std::dynamic_pointer_cast<nn::Conv2dImpl>(ds[0]);
        auto bn = ds.size() > 1 ? std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(ds[1]) : nullptr;
        if (!conv || (ds.size() > 1 && !bn) || ds.size() > 2) return internal;
        current.consumer(conv);
        current.name = "stream." + writer;
        streams.push_back(std::move(current));
        current = fresh(conv, bn);
      }
      // Output of the block's branch.
      if (basic) current.producer(basic->conv2.ptr()).norm(basic->bn2.ptr());
      if (bottleneck) current.producer(bottleneck->conv3.ptr()).norm(bottleneck->bn3.ptr());
      if (preact) current.producer(preact->conv2.ptr());
      writer = stage_name;
    }
  }
  if (!parts.final_bn.is_empty()) current.norm(parts.final_bn.ptr());
  current.consumer(parts.fc.ptr());
  current.name = "stream." + writer;
  streams.push_back(std::move(current));
  internal.insert(internal.end(), std::make_move_iterator(streams.begin()), std::make_move_iterator(streams.end()));
  return internal;
}

// ---------------------------------------------------------------------------------------------

std::vector<ChannelGroup> walk(const PathMap& paths, const std::vector<ModulePtr>& layers) {
  ChainWalker walker(paths);
  for (const auto& layer : layers) walker.visit(layer);
  return walker.finish();
}

bool builtin_known(const torch::nn::Module& m) {
  return dynamic_cast<const CifarResNetImpl*>(&m) || dynamic_cast<const PreActResNetImpl*>(&m) ||
         dynamic_cast<const WideResNetImpl*>(&m) || dynamic_cast<const ImageNetResNetImpl*>(&m) ||
         dynamic_cast<const VggImpl*>(&m) || dynamic_cast<const VggCifarImpl*>(&m) ||
         dynamic_cast<const AlexNetImpl*>(&m) || dynamic_cast<const MobileNetV1Impl*>(&m) ||
         dynamic_cast<const MobileNetV2Impl*>(&m) || dynamic_cast<const SqueezeNetImpl*>(&m) ||
         dynamic_cast<const LeNet5Impl*>(&m) || dynamic_cast<const LeNet300Impl*>(&m);
}

std::vector<ChannelGroup> builtin_groups(torch::nn::Module& model, const PathMap& paths) {
  if (auto* m = model.as<CifarResNetImpl>()) return resnet_groups(*m, {m->conv1, m->bn1, nullptr, m->fc}, paths);
  if (auto* m = model.as<PreActResNetImpl>()) return resnet_groups(*m, {m->conv1, nullptr, m->bn, m->fc}, paths);
  if (auto* m = model.as<WideResNetImpl>()) return resnet_groups(*m, {m->conv1, nullptr, m->bn, m->fc}, paths);
  if (auto* m = model.as<ImageNetResNetImpl>()) return resnet_groups(*m, {m->conv1, m->bn1, nullptr, m->fc}, paths);
  if (auto* m = model.as<VggImpl>()) return walk(paths, {m->features.ptr(), m->classifier.ptr()});
  if (auto* m = model.as<VggCifarImpl>()) return walk(paths, {m->features.ptr(), m->classifier.ptr()});
  if (auto* m = model.as<AlexNetImpl>()) return walk(paths, {m->features.ptr(), m->classifier.ptr()});
  if (auto* m = model.as<MobileNetV1Impl>()) return walk(paths, {m->features.ptr(), m->classifier.ptr()});
  if (auto* m = model.as<MobileNetV2Impl>()) return walk(paths, {m->features.ptr(), m->classifier.ptr()});
  if (auto* m = model.as<SqueezeNetImpl>()) return walk(paths, {m->features.ptr(), m->classifier.ptr()});
  if (auto* m = model.as<LeNet5Impl>())
    return walk(paths, {m->conv1.ptr(), m->conv2.ptr(), m->fc1.ptr(), m->fc2.ptr()});
  if (auto* m = model.as<LeNet300Impl>()) return walk(paths, {m->fc1.ptr(), m->fc2.ptr(), m->fc3.ptr()});
  return {};
}

struct Registration {
  ModelPredicate matches;
  ChannelGroupFn describe;
};

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::vector<Registration>& registrations() {
  static std::vector<Registration> r;
  return r;
}

/// The latest registration matching `model`, or an empty function.
ChannelGroupFn registered_for(const torch::nn::Module& model) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  const auto& r = registrations();
  for (auto it = r.rbegin(); it != r.rend(); ++it)
    if (it->matches(model)) return it->describe;
  return {};
}

[[noreturn]] void group_error(const ChannelGroup& g, const ChannelMember& m, const std::string& what) {
  throw UserError("channel group '" + g.name + "': " + to_string(m.role) + " '" + m.path + "' " + what);
}

}  // namespace

void register_channel_groups(ModelPredicate matches, ChannelGroupFn describe) {
  TORCH_CHECK(matches && describe, "register_channel_groups: empty function");
  std::lock_guard<std::mutex> lock(registry_mutex());
  registrations().push_back({std::move(matches), std::move(describe)});
}

void register_channel_groups(std::type_index type, ChannelGroupFn describe) {
  register_channel_groups([type](const torch::nn::Module& m) { return std::type_index(typeid(m)) == type; },
                          std::move(describe));
}

bool has_channel_groups(const torch::nn::Module& model) {
  return static_cast<bool>(registered_for(model)) || builtin_known(model);
}

void check_group(const ChannelGroup& g) {
  if (g.with_role(ChannelRole::producer).empty())
    throw UserError("channel group '" + g.name + "' has no producer (a Conv2d or Linear writing its channels)");
  if (g.with_role(ChannelRole::consumer).empty())
    throw UserError("channel group '" + g.name + "' has no consumer (a layer reading its channels)");
  const int64_t c = g.channels();
  for (const auto& m : g.members) {
    const auto* conv = m.module->as<nn::Conv2dImpl>();
    const auto* fc = m.module->as<nn::LinearImpl>();
    switch (m.role) {
      case ChannelRole::producer:
        if (!conv && !fc) group_error(g, m, "is not a shrink::nn::Conv2d or shrink::nn::Linear");
        if (conv && conv->options.groups() != 1) group_error(g, m, "is a grouped convolution (use passthrough)");
        if (out_channels_of(*m.module) != c)
          group_error(g, m, "has " + std::to_string(out_channels_of(*m.module)) + " outputs, the group " +
                                std::to_string(c) + " channels");
        break;
      case ChannelRole::norm: {
        const auto* bn = m.module->as<torch::nn::BatchNorm2dImpl>();
        if (!bn) group_error(g, m, "is not a torch::nn::BatchNorm2d");
        if (bn->options.num_features() != c)
          group_error(g, m, "has " + std::to_string(bn->options.num_features()) + " features, the group " +
                                std::to_string(c) + " channels");
        break;
      }
      case ChannelRole::passthrough:
        if (!conv || conv->options.groups() != c || conv->options.in_channels() != c ||
            conv->options.out_channels() != c)
          group_error(g, m, "is not a depthwise shrink::nn::Conv2d with " + std::to_string(c) + " channels");
        break;
      case ChannelRole::consumer: {
        if (!conv && !fc) group_error(g, m, "is not a shrink::nn::Conv2d or shrink::nn::Linear");
        if (conv && conv->options.groups() != 1) group_error(g, m, "is a grouped convolution");
        if (m.block < 1 || (conv && m.block != 1)) group_error(g, m, "has an invalid block " + std::to_string(m.block));
        int64_t offset = 0;
        for (const auto& before : m.offset_after) {
          const int64_t n = before ? out_channels_of(*before) : -1;
          if (n < 0) group_error(g, m, "has an offset layer that is not a Conv2d or Linear");
          offset += n;
        }
        const int64_t inputs = conv ? conv->options.in_channels() : fc->options.in_features();
        if ((offset + c) * m.block > inputs)
          group_error(g, m, "reads " + std::to_string(inputs) + " inputs, fewer than (offset " +
                                std::to_string(offset) + " + " + std::to_string(c) + " channels) x block " +
                                std::to_string(m.block));
        break;
      }
    }
  }
}

std::vector<ChannelGroup> channel_groups(torch::nn::Module& model) {
  const auto paths = module_paths(model);
  // The descriptions name dense layers; a factorized or compact layer changes the wiring.
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const auto* conv = item.value()->as<nn::Conv2dImpl>();
    const auto* fc = item.value()->as<nn::LinearImpl>();
    if ((conv && conv->composite()) || (fc && fc->composite()))
      throw UserError("layer '" + item.key() + "' is " +
                      (conv ? "in the " + conv->options.form().str() + " form"
                            : "factorized (rank " + std::to_string(fc->options.rank()) + ")") +
                      "; channel groups (filter pruning, group lasso, thinning) need dense layers: prune before "
                      "factorizing or use unstructured pruning");
  }
  std::vector<ChannelGroup> groups;
  if (auto describe = registered_for(model)) {
    groups = describe(model);
  } else if (builtin_known(model)) {
    groups = builtin_groups(model, paths);
  } else {
    throw UserError("no channel groups are known for models of type " + model.name() +
                    "; describe them with shrink::structure::register_channel_groups (see "
                    "include/shrink/structure/channel_groups.h)");
  }
  std::set<std::string> names;
  for (auto& g : groups) {
    for (auto& m : g.members) {
      TORCH_CHECK(m.module, "channel group '", g.name, "' has a null module");
      m.path = path_in(paths, m.module.get());
      if (m.path.empty())
        throw UserError("channel group '" + g.name + "': a " + to_string(m.role) + " (" + m.module->name() +
                        ") is not a submodule of the model");
    }
    if (g.name.empty()) {
      auto producers = g.with_role(ChannelRole::producer);
      if (!producers.empty()) g.name = producers.front()->path;
    }
    check_group(g);
    if (!names.insert(g.name).second) throw UserError("two channel groups are named '" + g.name + "'");
  }
  return groups;
}

}  // namespace shrink::structure
