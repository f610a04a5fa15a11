#pragma once
// The ResNet family, built from Shrink's layers:
//   "resnet20" .. "resnet110"  CIFAR ResNets (He et al. 2016, Sec. 4.2): 3x3 conv 16 + BN + ReLU,
//                              three stages of n basic blocks (16, 32, 64 channels), global average
//                              pooling, fc; depth 6n + 2. ResNet-20 with 10 classes: 269,722
//                              parameters and 40.55M MACs (shortcut A), 272,474 and 40.81M (B).
//   "preact_resnet20"          pre-activation ResNet-20 (He et al. 2016b, "Identity mappings"):
//                              BN-ReLU-conv blocks, BN-ReLU before pooling.
//   "wrn16"                    Wide ResNet WRN-16-k (Zagoruyko & Komodakis 2016): pre-activation
//                              wide blocks, widths 16, 16k, 32k, 64k, optional dropout.
//   "resnet18", "resnet50"     ImageNet ResNets exactly as torchvision (v1.5: the stride of a
//                              bottleneck is on its 3x3 conv), with torchvision's parameter names,
//                              so torchvision state_dicts load by name. 11,689,512 and 25,557,032
//                              parameters with 1000 classes.
//
// Every model names its modules like torchvision (conv1, bn1, layer1.0.conv1, layer1.0.bn1, ...,
// layer2.0.downsample.0 (conv), layer2.0.downsample.1 (BN), fc). Stages and `downsample` are
// ModuleLists, not Sequentials. Stages are walked through their registered children in forward, so
// `stage->replace_module("3", block)` takes effect; the layers inside a block are members, so
// replacing one of them also needs the member assigned
// (`block->conv1 = block->replace_module("conv1", conv)`).
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "shrink/config/options.h"
#include "shrink/models/model.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"

namespace shrink {

namespace dynamic {
class BlockGateImpl;  // shrink/dynamic/block_gate.h
}

/// How a block's shortcut matches the branch's output when the block changes the shape.
enum class ShortcutKind {
  kIdentity,    ///< shapes match: the shortcut is x itself
  kZeroPad,     ///< option A: subsample by the stride and append zero channels (no parameters)
  kProjection,  ///< option B: 1x1 conv with the stride (+ BN in post-activation blocks)
};

/// A residual block, out = merge(branch(pre) + shortcut(x, pre)) with pre = preactivate(x).
/// The branch and the shortcut are computed apart so that stochastic depth or gating can scale or
/// skip the branch: `merge(shortcut(x, pre) + g * branch(pre))`.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride, ShortcutKind shortcut_kind)
      : in_channels(in_channels), out_channels(out_channels), stride(stride), shortcut_kind(shortcut_kind) {}

  /// What both paths read: x itself in post-activation blocks; relu(bn1(x)) in pre-activation
  /// blocks (computed once: its BN must see each batch once).
  virtual torch::Tensor preactivate(const torch::Tensor& x) { return x; }
  /// The residual branch F on `pre` = preactivate(x), without the final merge.
  virtual torch::Tensor branch(const torch::Tensor& pre) = 0;
  /// The shortcut: x for identity and zero padding; a pre-activation block's projection reads `pre`.
  virtual torch::Tensor shortcut(const torch::Tensor& x, const torch::Tensor& pre) = 0;
  /// Applied to branch + shortcut: ReLU in post-activation blocks, nothing in pre-activation ones.
  virtual torch::Tensor merge(const torch::Tensor& sum) { return sum; }

  /// merge(branch(pre) + shortcut(x, pre)) when survival_probability is 1 (the default).
  /// Below 1 (stochastic depth, Huang et al. 2016): in training, one draw per call decides
  /// whether the branch runs (`torch::rand({}, kFloat64) < survival_probability`, on the global
  /// CPU generator, so the recipe seed and checkpoints replay it); a dropped block returns
  /// merge(shortcut(x, pre)) and computes nothing of its branch (no conv, no BN statistics, no
  /// gradient), nor preactivate() unless shortcut_reads_pre() (else `pre` is undefined). In
  /// eval mode the branch is scaled: merge(shortcut(x, pre) + survival_probability * branch(pre)).
  ///
  /// With a `gate` (ConvNet-AIG), per input n: merge(shortcut(x, pre)_n + g_n * branch(pre)_n),
  /// g_n in {0, 1} from gate(x). In training the branch runs on the whole batch and is multiplied
  /// by g (the gate learns through g's straight-through gradient). In eval mode only the inputs
  /// with g_n = 1 run the branch (index_select, then index_add into the shortcut); the others
  /// compute nothing of it, and with none executing branch() is not called; preactivate() runs
  /// on the whole batch only when shortcut_reads_pre(), else on the executing inputs. Combined
  /// with stochastic depth, the gated forward is what survives: a dropped training forward is
  /// the shortcut (the gate does not run), and in eval mode the gated branch is scaled by
  /// survival_probability.
  virtual torch::Tensor forward(const torch::Tensor& x);

  /// Whether shortcut() reads `pre` (a pre-activation block's projection); false when it reads
  /// x only, so that a dropped block may skip preactivate().
  virtual bool shortcut_reads_pre() const { return false; }

  /// The block's last BatchNorm on the branch (zero-init of the residual), or empty.
  virtual torch::nn::BatchNorm2d last_bn() { return nullptr; }

  const int64_t in_channels;
  const int64_t out_channels;
  const int64_t stride;
  const ShortcutKind shortcut_kind;  ///< kIdentity when the block keeps the shape
  /// Probability that the branch runs in a training forward, in [0, 1]; also its scale at test
  /// time. 1 (default): a plain residual block. Set by the `stochastic_depth` method; not saved
  /// in the model's state (the recipe's method sets it again).
  double survival_probability = 1.0;
  /// Training forwards in which the branch ran / was dropped (the stochastic_depth method
  /// resets them each epoch); eval-mode forwards are not counted.
  int64_t branch_runs = 0, branch_drops = 0;
  /// The per-input gate, registered as the child "gate" (so its parameters are the model's and
  /// checkpoints hold them); null: the block is not gated. Set through set_gate().
  std::shared_ptr<dynamic::BlockGateImpl> gate;
  /// Registers `g` as the child "gate", replacing the one there; null removes the gate.
  void set_gate(std::shared_ptr<dynamic::BlockGateImpl> g);
  /// The gate's decisions [N] in the last training forward (0/1 values carrying the
  /// straight-through gradient), for the block_gating target-rate loss; whoever reads it resets
  /// it. Undefined when the last training forward did not run the gate.
  torch::Tensor last_gate_decisions;
  /// Inputs the gate decided on and inputs whose branch ran, in training and in eval-mode
  /// forwards apart (block_gating resets the training ones each epoch).
  int64_t gate_train_inputs = 0, gate_train_executed = 0;
  int64_t gate_eval_inputs = 0, gate_eval_executed = 0;
  /// Projection shortcut: "0" the 1x1 conv, "1" its BN (post-activation blocks only); null
  /// unless shortcut_kind is kProjection.
  torch::nn::ModuleList downsample{nullptr};

 protected:
  /// The shortcut of post-activation blocks and of zero padding, on x.
  torch::Tensor plain_shortcut(const torch::Tensor& x);
  /// Registers `downsample` for a projection; `with_bn` adds the BN as child "1".
  void make_downsample(bool with_bn);
  /// merge(shortcut + scale * branch), through the gate when there is one.
  torch::Tensor run_branch(const torch::Tensor& x, double scale);
  torch::Tensor gated_forward(const torch::Tensor& x, double scale);
};

/// Post-activation basic block (CIFAR ResNets, ResNet-18/34): relu(bn2(conv2(relu(bn1(conv1(x)))))
/// + shortcut(x)), the stride on conv1.
class BasicBlockImpl : public ResidualBlockImpl {
 public:
  /// `shortcut_when_needed` applies when stride != 1 or in_channels != out_channels (kZeroPad or
  /// kProjection); otherwise the shortcut is the identity.
  BasicBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride, ShortcutKind shortcut_when_needed);
  torch::Tensor branch(const torch::Tensor& pre) override;
  torch::Tensor shortcut(const torch::Tensor& x, const torch::Tensor& pre) override;
  torch::Tensor merge(const torch::Tensor& sum) override { return torch::relu(sum); }
  torch::nn::BatchNorm2d last_bn() override { return bn2; }

  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
};

/// torchvision's Bottleneck (v1.5): 1x1 conv (in -> planes), 3x3 conv with the stride, 1x1 conv
/// (planes -> 4 planes), each with BN; projection shortcut (1x1 conv + BN) when the shape changes.
class BottleneckImpl : public ResidualBlockImpl {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t in_channels, int64_t planes, int64_t stride);
  torch::Tensor branch(const torch::Tensor& pre) override;
  torch::Tensor shortcut(const torch::Tensor& x, const torch::Tensor& pre) override;
  torch::Tensor merge(const torch::Tensor& sum) override { return torch::relu(sum); }
  torch::nn::BatchNorm2d last_bn() override { return bn3; }

  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
};

/// Pre-activation basic block (He et al. 2016b; the wide block of WRN):
/// pre = relu(bn1(x)); out = conv2(dropout(relu(bn2(conv1(pre))))) + shortcut, the stride on conv1.
/// The projection shortcut is a 1x1 conv (no BN) on `pre`, as in the authors' code and WRN;
/// zero padding (option A) and the identity read x.
class PreActBlockImpl : public ResidualBlockImpl {
 public:
  PreActBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride, ShortcutKind shortcut_when_needed,
                  double dropout = 0.0);
  torch::Tensor preactivate(const torch::Tensor& x) override;
  torch::Tensor branch(const torch::Tensor& pre) override;
  torch::Tensor shortcut(const torch::Tensor& x, const torch::Tensor& pre) override;
  bool shortcut_reads_pre() const override { return shortcut_kind == ShortcutKind::kProjection; }

  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};  ///< bn1 on the input (in_channels), bn2 after conv1
  double dropout;  ///< between the two convs, in training only (WRN)
};

using ResidualBlockPtr = std::shared_ptr<ResidualBlockImpl>;

/// What all models here share: a stem, stages of residual blocks (ModuleLists "layer1", ...),
/// and a classifier.
class ResidualNetImpl : public ModelImpl {
 public:
  /// Every residual block in forward order.
  std::vector<ResidualBlockPtr> residual_blocks() const;
  /// The stages ("layer1", "layer2", ...) in order; each holds its blocks as children "0", "1", ...
  const std::vector<torch::nn::ModuleList>& stages() const { return stages_; }

 protected:
  /// Registers a stage as `name`.
  torch::nn::ModuleList add_stage(const std::string& name, const std::vector<ResidualBlockPtr>& blocks);
  /// Runs a stage's registered children (so that a replaced block is the one that runs).
  static torch::Tensor run_stage(const torch::nn::ModuleList& stage, torch::Tensor x);
  /// Kaiming-normal (fan_out, ReLU) convs, BN weight 1 and bias 0, as torchvision; then, when
  /// asked, each block's last BN weight 0 (Goyal et al. 2017).
  void init_weights(bool zero_init_residual);

  std::vector<torch::nn::ModuleList> stages_;
};

/// A CIFAR ResNet of depth 6n + 2 (He et al. 2016, Sec. 4.2). Registered as resnet20, resnet32,
/// resnet44, resnet56 and resnet110 (the subclasses below fix the depth).
class CifarResNetImpl : public ResidualNetImpl {
 public:
  struct Options {
    int64_t num_classes = 0;          ///< 0: take it from the data
    std::string shortcut = "A";       ///< "A": zero padding, "B": 1x1 conv + BN where shapes change
    bool zero_init_residual = false;  ///< start each block's last BN at weight 0
  };
  static OptionSchema<Options> schema();

  CifarResNetImpl(Options options, const DataInfo& data, int64_t depth);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  const int64_t depth;
  nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  nn::Linear fc{nullptr};
};

class ResNet20Impl : public CifarResNetImpl {
 public:
  ResNet20Impl(Options options, const DataInfo& data) : CifarResNetImpl(std::move(options), data, 20) {}
};
class ResNet32Impl : public CifarResNetImpl {
 public:
  ResNet32Impl(Options options, const DataInfo& data) : CifarResNetImpl(std::move(options), data, 32) {}
};
class ResNet44Impl : public CifarResNetImpl {
 public:
  ResNet44Impl(Options options, const DataInfo& data) : CifarResNetImpl(std::move(options), data, 44) {}
};
class ResNet56Impl : public CifarResNetImpl {
 public:
  ResNet56Impl(Options options, const DataInfo& data) : CifarResNetImpl(std::move(options), data, 56) {}
};
class ResNet110Impl : public CifarResNetImpl {
 public:
  ResNet110Impl(Options options, const DataInfo& data) : CifarResNetImpl(std::move(options), data, 110) {}
};

/// A pre-activation CIFAR ResNet of depth 6n + 2 (He et al. 2016b): 3x3 conv 16 (no BN: the first
/// block pre-activates), three stages of PreActBlocks, BN-ReLU, global average pooling, fc.
class PreActResNetImpl : public ResidualNetImpl {
 public:
  struct Options {
    int64_t num_classes = 0;     ///< 0: take it from the data
    std::string shortcut = "A";  ///< "A": zero padding, "B": 1x1 conv on the pre-activation
  };
  static OptionSchema<Options> schema();

  PreActResNetImpl(Options options, const DataInfo& data, int64_t depth);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  const int64_t depth;
  nn::Conv2d conv1{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};  ///< final BN before the ReLU and pooling
  nn::Linear fc{nullptr};
};

class PreActResNet20Impl : public PreActResNetImpl {
 public:
  PreActResNet20Impl(Options options, const DataInfo& data) : PreActResNetImpl(std::move(options), data, 20) {}
};

/// Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016) of depth 6n + 4: 3x3 conv 16, three stages of
/// n pre-activation wide blocks (16k, 32k, 64k channels, 1x1 conv shortcut where shapes change,
/// dropout between the convs), BN-ReLU, global average pooling, fc.
class WideResNetImpl : public ResidualNetImpl {
 public:
  struct Options {
    int64_t num_classes = 0;   ///< 0: take it from the data
    int64_t widen_factor = 4;  ///< k
    double dropout = 0.0;      ///< dropout probability inside each block
  };
  static OptionSchema<Options> schema();

  WideResNetImpl(Options options, const DataInfo& data, int64_t depth);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  const int64_t depth;
  nn::Conv2d conv1{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  nn::Linear fc{nullptr};
};

class WideResNet16Impl : public WideResNetImpl {
 public:
  WideResNet16Impl(Options options, const DataInfo& data) : WideResNetImpl(std::move(options), data, 16) {}
};

/// torchvision's ImageNet ResNet: 7x7/2 conv 64 + BN + ReLU + 3x3/2 max pooling, four stages
/// (64, 128, 256, 512 planes), adaptive average pooling, fc. Input channels follow the data.
class ImageNetResNetImpl : public ResidualNetImpl {
 public:
  struct Options {
    int64_t num_classes = 0;          ///< 0: take it from the data
    bool zero_init_residual = false;  ///< torchvision's zero_init_residual
  };
  static OptionSchema<Options> schema();

  /// `blocks`: blocks per stage ({2, 2, 2, 2} for ResNet-18); `bottleneck`: Bottleneck or BasicBlock.
  ImageNetResNetImpl(Options options, const DataInfo& data, std::vector<int64_t> blocks, bool bottleneck);
  torch::Tensor forward(const torch::Tensor& input) override;

  Options options;
  nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  nn::Linear fc{nullptr};
};

class ResNet18Impl : public ImageNetResNetImpl {
 public:
  ResNet18Impl(Options options, const DataInfo& data)
      : ImageNetResNetImpl(std::move(options), data, {2, 2, 2, 2}, /*bottleneck=*/false) {}
};
class ResNet50Impl : public ImageNetResNetImpl {
 public:
  ResNet50Impl(Options options, const DataInfo& data)
      : ImageNetResNetImpl(std::move(options), data, {3, 4, 6, 3}, /*bottleneck=*/true) {}
};

namespace detail {
/// Adds the models of this file to the registry under construction (model_registry.cpp).
void register_resnet_models(Registry<ModelFactory>& registry);
}  // namespace detail

}  // namespace shrink
