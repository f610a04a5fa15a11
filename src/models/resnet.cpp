#include "shrink/models/resnet.h"

#include "shrink/models/model_input.h"

#include <cmath>
#include <string>
#include <vector>

#include "shrink/dynamic/block_gate.h"

#include "shrink/core/error.h"

namespace shrink {
namespace {

using torch::nn::BatchNorm2d;

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

nn::Conv2d conv1x1(int64_t in, int64_t out, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

/// The effective shortcut of a block: identity when the shape is kept.
ShortcutKind needed(int64_t in, int64_t out, int64_t stride, ShortcutKind when_needed) {
  return (stride != 1 || in != out) ? when_needed : ShortcutKind::kIdentity;
}

ShortcutKind parse_shortcut(const std::string& model, const std::string& option) {
  if (option == "A") return ShortcutKind::kZeroPad;
  if (option == "B") return ShortcutKind::kProjection;
  throw UserError(model + ": shortcut must be A or B (got '" + option + "')");
}

torch::Tensor global_pool(const torch::Tensor& x) { return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Blocks

torch::Tensor ResidualBlockImpl::plain_shortcut(const torch::Tensor& x) {
  switch (shortcut_kind) {
    case ShortcutKind::kIdentity:
      return x;
    case ShortcutKind::kZeroPad: {
      // Option A (fb.resnet.torch): keep every stride-th pixel, append zero channels, so that
      // output channel c < in_channels is input channel c.
      auto s = stride == 1 ? x : x.slice(2, 0, c10::nullopt, stride).slice(3, 0, c10::nullopt, stride);
      return out_channels == in_channels ? s
                                         : torch::constant_pad_nd(s, {0, 0, 0, 0, 0, out_channels - in_channels});
    }
    case ShortcutKind::kProjection: {
      // Looked up among the registered children so that a replaced layer is the one that runs.
      const auto parts = downsample->children();
      auto* conv = parts.at(0)->as<nn::Conv2dImpl>();
      TORCH_CHECK(conv != nullptr, "downsample.0 must be a shrink::nn::Conv2d");
      auto y = conv->forward(x);
      if (parts.size() > 1) {
        auto* bn = parts[1]->as<torch::nn::BatchNorm2dImpl>();
        TORCH_CHECK(bn != nullptr, "downsample.1 must be a torch::nn::BatchNorm2d");
        y = bn->forward(y);
      }
      return y;
    }
  }
  TORCH_CHECK(false, "unknown shortcut kind");
}

torch::Tensor ResidualBlockImpl::forward(const torch::Tensor& x) {
  const double p = survival_probability;
  if (p == 1.0) {
    if (is_training()) ++branch_runs;
    return run_branch(x, 1.0);
  }
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "survival_probability must be in [0, 1], got ", p);
  if (!is_training()) return run_branch(x, p);
  // One draw on the global CPU generator per training forward, whatever the model's device:
  // the trainer checkpoints that generator, so a resumed run draws the same sequence.
  if (torch::rand({}, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kCPU)).item<double>() < p) {
    ++branch_runs;
    return run_branch(x, 1.0);
  }
  ++branch_drops;
  // The identity path only: preactivate() (a BN with running statistics) runs only when the
  // shortcut needs it.
  return merge(shortcut(x, shortcut_reads_pre() ? preactivate(x) : torch::Tensor()));
}

torch::Tensor ResidualBlockImpl::run_branch(const torch::Tensor& x, double scale) {
  if (gate) return gated_forward(x, scale);
  const auto pre = preactivate(x);
  if (scale == 1.0) return merge(branch(pre) + shortcut(x, pre));
  return merge(shortcut(x, pre) + scale * branch(pre));
}

torch::Tensor ResidualBlockImpl::gated_forward(const torch::Tensor& x, double scale) {
  const int64_t n = x.size(0);
  if (is_training()) {
    const auto g = gate->forward(x);
    last_gate_decisions = g;
    gate_train_inputs += n;
    gate_train_executed += std::llround(g.detach().sum().item<double>());
    const auto pre = preactivate(x);
    auto b = branch(pre);
    std::vector<int64_t> shape(static_cast<size_t>(b.dim()), 1);
    shape[0] = n;
    b = b * g.view(shape);
    if (scale != 1.0) b = b * scale;
    return merge(shortcut(x, pre) + b);
  }
  torch::Tensor executing;
  {
    torch::NoGradGuard no_grad;  // hard decisions: nothing to differentiate
    executing = gate->forward(x).nonzero().flatten();
  }
  const int64_t k = executing.numel();
  gate_eval_inputs += n;
  gate_eval_executed += k;
  // Pre-activate the whole batch only where the shortcut reads it, or where every input runs.
  const auto pre = shortcut_reads_pre() || k == n ? preactivate(x) : torch::Tensor();
  auto out = shortcut(x, pre);
  if (k == 0) return merge(out);
  if (k == n) {
    const auto b = branch(pre);
    return merge(out + (scale == 1.0 ? b : scale * b));
  }
  auto b = branch(pre.defined() ? pre.index_select(0, executing) : preactivate(x.index_select(0, executing)));
  if (scale != 1.0) b = b * scale;
  return merge(out.index_add(0, executing, b));
}

void ResidualBlockImpl::set_gate(std::shared_ptr<dynamic::BlockGateImpl> g) {
  const bool registered = named_children().contains("gate");
  if (!g) {
    if (registered) unregister_module("gate");
  } else if (registered) {
    replace_module("gate", g);
  } else {
    register_module("gate", g);
  }
  gate = std::move(g);
  last_gate_decisions = torch::Tensor();
}

void ResidualBlockImpl::make_downsample(bool with_bn) {
  if (shortcut_kind != ShortcutKind::kProjection) return;
  downsample = torch::nn::ModuleList();
  downsample->push_back(conv1x1(in_channels, out_channels, stride));
  if (with_bn) downsample->push_back(BatchNorm2d(out_channels));
  register_module("downsample", downsample);
}

BasicBlockImpl::BasicBlockImpl(int64_t in, int64_t out, int64_t stride_, ShortcutKind shortcut_when_needed)
    : ResidualBlockImpl(in, out, stride_, needed(in, out, stride_, shortcut_when_needed)) {
  TORCH_CHECK(out >= in || shortcut_kind != ShortcutKind::kZeroPad,
              "zero-padding shortcut cannot reduce channels (", in, " -> ", out, ")");
  conv1 = register_module("conv1", conv3x3(in, out, stride));
  bn1 = register_module("bn1", BatchNorm2d(out));
  conv2 = register_module("conv2", conv3x3(out, out, 1));
  bn2 = register_module("bn2", BatchNorm2d(out));
  make_downsample(/*with_bn=*/true);
}

torch::Tensor BasicBlockImpl::branch(const torch::Tensor& pre) {
  return bn2(conv2(torch::relu(bn1(conv1(pre)))));
}

torch::Tensor BasicBlockImpl::shortcut(const torch::Tensor& x, const torch::Tensor&) { return plain_shortcut(x); }

BottleneckImpl::BottleneckImpl(int64_t in, int64_t planes, int64_t stride_)
    : ResidualBlockImpl(in, planes * kExpansion, stride_,
                        needed(in, planes * kExpansion, stride_, ShortcutKind::kProjection)) {
  conv1 = register_module("conv1", conv1x1(in, planes, 1));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  conv2 = register_module("conv2", conv3x3(planes, planes, stride));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  conv3 = register_module("conv3", conv1x1(planes, out_channels, 1));
  bn3 = register_module("bn3", BatchNorm2d(out_channels));
  make_downsample(/*with_bn=*/true);
}

torch::Tensor BottleneckImpl::branch(const torch::Tensor& pre) {
  auto y = torch::relu(bn1(conv1(pre)));
  y = torch::relu(bn2(conv2(y)));
  return bn3(conv3(y));
}

torch::Tensor BottleneckImpl::shortcut(const torch::Tensor& x, const torch::Tensor&) { return plain_shortcut(x); }

PreActBlockImpl::PreActBlockImpl(int64_t in, int64_t out, int64_t stride_, ShortcutKind shortcut_when_needed,
                                 double dropout_)
    : ResidualBlockImpl(in, out, stride_, needed(in, out, stride_, shortcut_when_needed)), dropout(dropout_) {
  TORCH_CHECK(out >= in || shortcut_kind != ShortcutKind::kZeroPad,
              "zero-padding shortcut cannot reduce channels (", in, " -> ", out, ")");
  TORCH_CHECK(dropout >= 0 && dropout <= 1, "dropout must be in [0, 1], got ", dropout);
  bn1 = register_module("bn1", BatchNorm2d(in));
  conv1 = register_module("conv1", conv3x3(in, out, stride));
  bn2 = register_module("bn2", BatchNorm2d(out));
  conv2 = register_module("conv2", conv3x3(out, out, 1));
  make_downsample(/*with_bn=*/false);
}

torch::Tensor PreActBlockImpl::preactivate(const torch::Tensor& x) { return torch::relu(bn1(x)); }

torch::Tensor PreActBlockImpl::branch(const torch::Tensor& pre) {
  auto y = torch::relu(bn2(conv1(pre)));
  if (dropout > 0) y = torch::dropout(y, dropout, is_training());
  return conv2(y);
}

torch::Tensor PreActBlockImpl::shortcut(const torch::Tensor& x, const torch::Tensor& pre) {
  // The projection reads the shared pre-activation (He et al.'s code, WRN); identity and zero
  // padding keep the un-normalized x.
  return plain_shortcut(shortcut_kind == ShortcutKind::kProjection ? pre : x);
}

// ---------------------------------------------------------------------------------------------
// Shared model plumbing

std::vector<ResidualBlockPtr> ResidualNetImpl::residual_blocks() const {
  std::vector<ResidualBlockPtr> out;
  for (const auto& stage : stages_)
    for (const auto& child : stage->children()) {
      auto block = std::dynamic_pointer_cast<ResidualBlockImpl>(child);
      TORCH_CHECK(block != nullptr, "a stage holds a module that is not a residual block: ", child->name());
      out.push_back(std::move(block));
    }
  return out;
}

torch::nn::ModuleList ResidualNetImpl::add_stage(const std::string& name, const std::vector<ResidualBlockPtr>& blocks) {
  torch::nn::ModuleList stage;
  for (const auto& b : blocks) stage->push_back(std::static_pointer_cast<torch::nn::Module>(b));
  register_module(name, stage);
  stages_.push_back(stage);
  return stage;
}

torch::Tensor ResidualNetImpl::run_stage(const torch::nn::ModuleList& stage, torch::Tensor x) {
  for (const auto& child : stage->children()) {
    auto* block = child->as<ResidualBlockImpl>();
    TORCH_CHECK(block != nullptr, "a stage holds a module that is not a residual block: ", child->name());
    x = block->forward(x);
  }
  return x;
}

void ResidualNetImpl::init_weights(bool zero_init_residual) {
  torch::NoGradGuard no_grad;
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    }
  }
  if (zero_init_residual)
    for (const auto& block : residual_blocks())
      if (auto bn = block->last_bn(); !bn.is_empty()) torch::nn::init::zeros_(bn->weight);
}

// ---------------------------------------------------------------------------------------------
// CIFAR ResNets

OptionSchema<CifarResNetImpl::Options> CifarResNetImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("shortcut", &Options::shortcut,
        "Shortcut where a block changes the shape: A = subsample and zero-pad channels (no parameters, as "
        "in the paper's CIFAR experiments), B = 1x1 conv + BN projection.")
      .choices({"A", "B"});
  s.add("zero_init_residual", &Options::zero_init_residual,
        "Start the last BN of every block at weight 0, so each block starts as the identity.");
  return s;
}

CifarResNetImpl::CifarResNetImpl(Options options_, const DataInfo& data, int64_t depth_)
    : options(std::move(options_)), depth(depth_) {
  const std::string model = "resnet" + std::to_string(depth);
  TORCH_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "CIFAR ResNet depth must be 6n + 2, got ", depth);
  const int64_t channels = image_channels(model, data);
  const int64_t classes = model_num_classes(model, options.num_classes, data);
  const int64_t n = (depth - 2) / 6;
  const ShortcutKind kind = parse_shortcut(model, options.shortcut);

  conv1 = register_module("conv1", conv3x3(channels, 16, 1));
  bn1 = register_module("bn1", BatchNorm2d(16));
  int64_t in = 16;
  auto stage = [&](int64_t width, int64_t stride) {
    std::vector<ResidualBlockPtr> blocks;
    for (int64_t i = 0; i < n; ++i) {
      blocks.push_back(std::make_shared<BasicBlockImpl>(in, width, i == 0 ? stride : 1, kind));
      in = width;
    }
    return blocks;
  };
  layer1 = add_stage("layer1", stage(16, 1));
  layer2 = add_stage("layer2", stage(32, 2));
  layer3 = add_stage("layer3", stage(64, 2));
  fc = register_module("fc", nn::Linear(64, classes));
  init_weights(options.zero_init_residual);
  declare_taps({"stem", "layer1", "layer2", "layer3", "features", "logits"});
}

torch::Tensor CifarResNetImpl::forward(const torch::Tensor& input) {
  auto x = tap_point("stem", torch::relu(bn1(conv1(input))));
  x = tap_point("layer1", run_stage(layer1, x));
  x = tap_point("layer2", run_stage(layer2, x));
  x = tap_point("layer3", run_stage(layer3, x));
  x = tap_point("features", global_pool(x));
  return tap_point("logits", fc(x));
}

// ---------------------------------------------------------------------------------------------
// Pre-activation ResNet

OptionSchema<PreActResNetImpl::Options> PreActResNetImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("shortcut", &Options::shortcut,
        "Shortcut where a block changes the shape: A = subsample and zero-pad channels (no parameters), "
        "B = 1x1 conv on the block's pre-activation.")
      .choices({"A", "B"});
  return s;
}

PreActResNetImpl::PreActResNetImpl(Options options_, const DataInfo& data, int64_t depth_)
    : options(std::move(options_)), depth(depth_) {
  const std::string model = "preact_resnet" + std::to_string(depth);
  TORCH_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "pre-activation ResNet depth must be 6n + 2, got ", depth);
  const int64_t channels = image_channels(model, data);
  const int64_t classes = model_num_classes(model, options.num_classes, data);
  const int64_t n = (depth - 2) / 6;
  const ShortcutKind kind = parse_shortcut(model, options.shortcut);

  conv1 = register_module("conv1", conv3x3(channels, 16, 1));
  int64_t in = 16;
  auto stage = [&](int64_t width, int64_t stride) {
    std::vector<ResidualBlockPtr> blocks;
    for (int64_t i = 0; i < n; ++i) {
      blocks.push_back(std::make_shared<PreActBlockImpl>(in, width, i == 0 ? stride : 1, kind));
      in = width;
    }
    return blocks;
  };
  layer1 = add_stage("layer1", stage(16, 1));
  layer2 = add_stage("layer2", stage(32, 2));
  layer3 = add_stage("layer3", stage(64, 2));
  bn = register_module("bn", BatchNorm2d(64));
  fc = register_module("fc", nn::Linear(64, classes));
  init_weights(/*zero_init_residual=*/false);
  declare_taps({"stem", "layer1", "layer2", "layer3", "features", "logits"});
}

torch::Tensor PreActResNetImpl::forward(const torch::Tensor& input) {
  auto x = tap_point("stem", conv1(input));
  x = tap_point("layer1", run_stage(layer1, x));
  x = tap_point("layer2", run_stage(layer2, x));
  x = tap_point("layer3", run_stage(layer3, x));
  x = tap_point("features", global_pool(torch::relu(bn(x))));
  return tap_point("logits", fc(x));
}

// ---------------------------------------------------------------------------------------------
// Wide ResNet

OptionSchema<WideResNetImpl::Options> WideResNetImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("widen_factor", &Options::widen_factor, "k: the stages have 16k, 32k and 64k channels.").min(1);
  s.add("dropout", &Options::dropout, "Dropout probability between the two convs of each block (training only).")
      .range(0, 1);
  return s;
}

WideResNetImpl::WideResNetImpl(Options options_, const DataInfo& data, int64_t depth_)
    : options(std::move(options_)), depth(depth_) {
  const std::string model = "wrn" + std::to_string(depth);
  TORCH_CHECK(depth >= 10 && (depth - 4) % 6 == 0, "Wide ResNet depth must be 6n + 4, got ", depth);
  if (options.widen_factor < 1)
    throw UserError(model + ": widen_factor must be at least 1 (got " + std::to_string(options.widen_factor) + ")");
  if (!(options.dropout >= 0 && options.dropout <= 1))
    throw UserError(model + ": dropout must be in [0, 1] (got " + std::to_string(options.dropout) + ")");
  const int64_t channels = image_channels(model, data);
  const int64_t classes = model_num_classes(model, options.num_classes, data);
  const int64_t n = (depth - 4) / 6;
  const int64_t k = options.widen_factor;

  conv1 = register_module("conv1", conv3x3(channels, 16, 1));
  int64_t in = 16;
  auto stage = [&](int64_t width, int64_t stride) {
    std::vector<ResidualBlockPtr> blocks;
    for (int64_t i = 0; i < n; ++i) {
      blocks.push_back(std::make_shared<PreActBlockImpl>(in, width, i == 0 ? stride : 1, ShortcutKind::kProjection,
                                                         options.dropout));
      in = width;
    }
    return blocks;
  };
  layer1 = add_stage("layer1", stage(16 * k, 1));
  layer2 = add_stage("layer2", stage(32 * k, 2));
  layer3 = add_stage("layer3", stage(64 * k, 2));
  bn = register_module("bn", BatchNorm2d(64 * k));
  fc = register_module("fc", nn::Linear(64 * k, classes));
  init_weights(/*zero_init_residual=*/false);
  declare_taps({"stem", "layer1", "layer2", "layer3", "features", "logits"});
}

torch::Tensor WideResNetImpl::forward(const torch::Tensor& input) {
  auto x = tap_point("stem", conv1(input));
  x = tap_point("layer1", run_stage(layer1, x));
  x = tap_point("layer2", run_stage(layer2, x));
  x = tap_point("layer3", run_stage(layer3, x));
  x = tap_point("features", global_pool(torch::relu(bn(x))));
  return tap_point("logits", fc(x));
}

// ---------------------------------------------------------------------------------------------
// ImageNet ResNets (torchvision)

OptionSchema<ImageNetResNetImpl::Options> ImageNetResNetImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("zero_init_residual", &Options::zero_init_residual,
        "Start the last BN of every block at weight 0 (torchvision's zero_init_residual).");
  return s;
}

ImageNetResNetImpl::ImageNetResNetImpl(Options options_, const DataInfo& data, std::vector<int64_t> blocks,
                                       bool bottleneck)
    : options(std::move(options_)) {
  TORCH_CHECK(blocks.size() == 4, "an ImageNet ResNet has 4 stages, got ", blocks.size());
  int64_t total_blocks = 0;
  for (int64_t b : blocks) total_blocks += b;
  const std::string model = "resnet" + std::to_string((bottleneck ? 3 : 2) * total_blocks + 2);
  const int64_t channels = image_channels(model, data);
  const int64_t classes = model_num_classes(model, options.num_classes, data);

  conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(channels, 64, 7).stride(2).padding(3).bias(false)));
  bn1 = register_module("bn1", BatchNorm2d(64));
  int64_t in = 64;
  auto stage = [&](int64_t planes, int64_t count, int64_t stride) {
    std::vector<ResidualBlockPtr> out;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t s = i == 0 ? stride : 1;
      if (bottleneck) {
        out.push_back(std::make_shared<BottleneckImpl>(in, planes, s));
        in = planes * BottleneckImpl::kExpansion;
      } else {
        out.push_back(std::make_shared<BasicBlockImpl>(in, planes, s, ShortcutKind::kProjection));
        in = planes;
      }
    }
    return out;
  };
  layer1 = add_stage("layer1", stage(64, blocks[0], 1));
  layer2 = add_stage("layer2", stage(128, blocks[1], 2));
  layer3 = add_stage("layer3", stage(256, blocks[2], 2));
  layer4 = add_stage("layer4", stage(512, blocks[3], 2));
  fc = register_module("fc", nn::Linear(in, classes));
  init_weights(options.zero_init_residual);
  declare_taps({"stem", "layer1", "layer2", "layer3", "layer4", "features", "logits"});
}

torch::Tensor ImageNetResNetImpl::forward(const torch::Tensor& input) {
  auto x = torch::relu(bn1(conv1(input)));
  x = tap_point("stem", torch::max_pool2d(x, 3, 2, 1));
  x = tap_point("layer1", run_stage(layer1, x));
  x = tap_point("layer2", run_stage(layer2, x));
  x = tap_point("layer3", run_stage(layer3, x));
  x = tap_point("layer4", run_stage(layer4, x));
  x = tap_point("features", global_pool(x));
  return tap_point("logits", fc(x));
}

// ---------------------------------------------------------------------------------------------

namespace detail {

void register_resnet_models(Registry<ModelFactory>& registry) {
  add_builtin_model<ResNet20Impl>(registry, "resnet20",
                                  "CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64 channels "
                                  "(269,722 parameters with shortcut A, 272,474 with B; 10 classes)");
  add_builtin_model<ResNet32Impl>(registry, "resnet32", "CIFAR ResNet-32: 3 stages x 5 basic blocks (0.46M parameters)");
  add_builtin_model<ResNet44Impl>(registry, "resnet44", "CIFAR ResNet-44: 3 stages x 7 basic blocks (0.66M parameters)");
  add_builtin_model<ResNet56Impl>(registry, "resnet56", "CIFAR ResNet-56: 3 stages x 9 basic blocks (0.85M parameters)");
  add_builtin_model<ResNet110Impl>(registry, "resnet110",
                                   "CIFAR ResNet-110: 3 stages x 18 basic blocks (1.7M parameters)");
  add_builtin_model<PreActResNet20Impl>(
      registry, "preact_resnet20",
      "Pre-activation ResNet-20 (He et al. 2016b): BN-ReLU-conv blocks, BN-ReLU before pooling");
  add_builtin_model<WideResNet16Impl>(
      registry, "wrn16",
      "Wide ResNet WRN-16-k (Zagoruyko & Komodakis 2016): pre-activation wide blocks, widths 16k/32k/64k");
  add_builtin_model<ResNet18Impl>(registry, "resnet18",
                                  "ImageNet ResNet-18 as torchvision (11,689,512 parameters with 1000 classes; "
                                  "torchvision parameter names)");
  add_builtin_model<ResNet50Impl>(registry, "resnet50",
                                  "ImageNet ResNet-50 (v1.5) as torchvision (25,557,032 parameters with 1000 "
                                  "classes; torchvision parameter names)");
}

}  // namespace detail
}  // namespace shrink
