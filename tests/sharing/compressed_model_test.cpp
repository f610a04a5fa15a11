// The compressed model file: export and load give bitwise-equal tensors and equal outputs
// (codebook, raw-float and mask layers), method state is stored when the structure needs it,
// and wrong files are named errors.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/models/lenet.h"
#include "shrink/sharing/compressed_model.h"
#include "shrink/train/checkpoint.h"
#include "train/train_test_util.h"
#include "test_util.h"

using namespace shrink;
using shrink::test::error_of;
using namespace shrink::sharing;
using shrink::test::TempDir;

namespace {

const std::string kRecipe =
    "name: dc\nseed: 5\nthreads: 2\n"
    "data: {name: synthetic, channels: 1, height: 28, width: 28, num_classes: 10, train_size: 64, test_size: 32}\n"
    "model: {name: lenet5}\n"
    "train: {epochs: 1, batch_size: 32, progress: none}\n";

ConfigNode node(const std::string& yaml) { return ConfigNode(read_yaml_string(yaml, "dc.yaml"), ""); }

/// The recipe's experiment, restored from a checkpoint when given (as `shrink eval` does).
Experiment experiment(const std::string& yaml, const std::string& checkpoint = "") {
  auto e = build_experiment(node(yaml), DataNeeds::TestOnly);
  apply_runtime_settings(e.recipe);
  if (!checkpoint.empty()) load_checkpoint_methods(checkpoint, e);
  prepare_experiment(e);
  if (!checkpoint.empty()) load_checkpoint_model(checkpoint, e);
  return e;
}

/// Pruned and shared weights: conv2 and fc1 ~10% kept with a few shared values; conv1 80% kept
/// with ~400 distinct values (raw floats); fc2 dense. fc1 carries a mask.
void compress_by_hand(Experiment& e) {
  auto* net = dynamic_cast<LeNet5Impl*>(e.model.get());
  ASSERT_NE(net, nullptr);
  torch::NoGradGuard g;
  torch::manual_seed(3);
  auto prune_share = [](torch::Tensor w, double keep, bool share) {
    auto v = share ? torch::round(w * 40) / 40 : w.clone();
    w.copy_(v * (torch::rand_like(w) < keep));  // negative weights become -0.0
  };
  prune_share(net->conv1->weight, 0.8, false);
  prune_share(net->conv2->weight, 0.1, true);
  prune_share(net->fc1->weight, 0.1, true);
  net->fc1->enable_mask();
  net->fc1->weight_mask.copy_((net->fc1->weight != 0).to(torch::kFloat32));
}

/// Bits of a tensor with negative zeros made positive (the sparse format stores no zeros).
torch::Tensor canonical_bits(const torch::Tensor& t) {
  auto c = t.detach().cpu().contiguous();
  if (c.is_floating_point()) c = c + 0.0;  // -0.0 + 0.0 == +0.0, every other value unchanged
  return c;
}

void expect_bitwise_equal(const torch::Tensor& a, const torch::Tensor& b, const std::string& name) {
  auto x = canonical_bits(a), y = canonical_bits(b);
  ASSERT_EQ(x.sizes(), y.sizes()) << name;
  ASSERT_EQ(x.scalar_type(), y.scalar_type()) << name;
  EXPECT_EQ(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()), 0) << name;
}

void expect_same_model(Experiment& a, Experiment& b) {
  auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) expect_bitwise_equal(item.value(), pb[item.key()], item.key());
  auto ba = a.model->named_buffers(), bb = b.model->named_buffers();
  ASSERT_EQ(ba.size(), bb.size());
  for (const auto& item : ba) expect_bitwise_equal(item.value(), bb[item.key()], item.key());
  torch::NoGradGuard g;
  a.model->eval();
  b.model->eval();
  auto x = torch::rand({8, 1, 28, 28});
  EXPECT_TRUE(torch::equal(a.model->forward(x), b.model->forward(x)));
}

/// A test method whose state shapes the model: prepare_model registers a buffer of `grown_`
/// elements (like a thinning step re-applied from saved state).
class GrowBuffer : public CompressionMethod {
 public:
  struct Options {};
  static OptionSchema<Options> schema() { return {}; }
  GrowBuffer(MethodSpec spec, Options) : CompressionMethod(std::move(spec)) {}
  void prepare_model(TrainContext& ctx) override {
    if (grown_ > 0) ctx.model->register_buffer("grown", torch::arange(grown_).to(torch::kFloat32) * 0.5);
  }
  void save_state(torch::serialize::OutputArchive& a) const override { a.write("grown", c10::IValue(grown_)); }
  void load_state(torch::serialize::InputArchive& a) override {
    c10::IValue v;
    a.read("grown", v);
    grown_ = v.toInt();
  }
  int64_t grown_ = 0;
};

}  // namespace

TEST(CompressedModel, WriteThenLoadGivesBitwiseEqualTensorsAndOutputs) {
  TempDir tmp;
  auto e = experiment(kRecipe);
  compress_by_hand(e);
  const auto path = tmp.file("m.sdc");
  auto r = write_compressed_model(path, e, "");
  EXPECT_EQ(r.file_bytes, std::filesystem::file_size(path));
  EXPECT_EQ(r.parameters, 431080);
  EXPECT_EQ(r.coded_tensors, 4);  // conv1, conv2, fc1, fc2 weights
  EXPECT_EQ(r.raw_tensors, 4);    // biases; fc1's mask is left out
  EXPECT_GT(r.rate(), 1.0);
  EXPECT_TRUE(is_compressed_model(path));
  EXPECT_NE(read_compressed_recipe(path).find("lenet5"), std::string::npos);

  auto loaded = load_compressed_experiment(path);
  auto* net = dynamic_cast<LeNet5Impl*>(loaded.model.get());
  ASSERT_TRUE(net->fc1->masked());  // re-derived from the zeros
  expect_same_model(e, loaded);

  // Storage kinds as expected: codebook for the shared layers, raw floats for the others.
  ASSERT_EQ(r.storage.layers.size(), 4u);
  EXPECT_FALSE(r.storage.layers[0].coded.codebook);
  EXPECT_TRUE(r.storage.layers[1].coded.codebook);
  EXPECT_TRUE(r.storage.layers[2].coded.codebook);
  EXPECT_FALSE(r.storage.layers[3].coded.codebook);
  // The file is close to the accounting: headers, names and shapes add little.
  const double accounted = double(r.storage.huffman_bits) / 8.0;
  EXPECT_LT(double(r.file_bytes), accounted * 1.05 + 4096) << r.file_bytes << " vs " << accounted;
  std::cout << "LeNet-5 (conv1 80%, conv2/fc1 10% shared, fc2 dense): file " << r.file_bytes << " bytes, "
            << r.rate() << "x; accounting " << r.storage.huffman_rate() << "x\n";
}

TEST(CompressedModel, ExportFromCheckpointAndMismatchErrors) {
  TempDir tmp;
  auto e = experiment(kRecipe);
  compress_by_hand(e);
  const auto ckpt = tmp.file("last.pt");
  save_checkpoint(ckpt, e, nullptr, TrainerState{});
  const auto path = tmp.file("m.sdc");
  DeepCompressionOptions options;
  options.conv_index_bits = 4;
  options.fc_index_bits = 3;
  auto r = export_compressed_model(ckpt, path, {}, options);
  EXPECT_EQ(r.method_state_bytes, 0u);  // no method: the recipe alone gives the structure
  auto loaded = load_compressed_experiment(path);
  // The checkpoint restores no mask here (no pruning method enables one), so neither does the file.
  auto from_checkpoint = experiment(kRecipe, ckpt);
  expect_same_model(from_checkpoint, loaded);
  auto a = evaluate(from_checkpoint.model, from_checkpoint.test_data, 16, torch::kCPU);
  auto b = evaluate(loaded.model, loaded.test_data, 16, torch::kCPU);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.top1, b.top1);

  // Another model through an override: the first tensor it lacks is named with the file.
  auto msg = error_of([&] { load_compressed_experiment(path, {"model.name=lenet300"}); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("'conv1.weight'"), std::string::npos) << msg;
  msg = error_of([&] { load_compressed_experiment(path, {"model.num_classes=5"}); });
  EXPECT_NE(msg.find("'fc2.weight' is 10x500 in the file but 5x500"), std::string::npos) << msg;

  // Not a compressed file; truncated file.
  EXPECT_FALSE(is_compressed_model(ckpt));
  EXPECT_FALSE(is_compressed_model(tmp.file("missing")));
  msg = error_of([&] { load_compressed_experiment(ckpt); });
  EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;
  auto text = shrink::test::read_file(path);
  shrink::test::write_file(tmp.file("cut.sdc"), text.substr(0, text.size() - 100));
  msg = error_of([&] { load_compressed_experiment(tmp.file("cut.sdc")); });
  EXPECT_NE(msg.find("cut.sdc"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_THROW(export_compressed_model(ckpt, path, {}, DeepCompressionOptions{0, 5}), c10::Error);
}

TEST(CompressedModel, StoresMethodStateWhenItShapesTheModel) {
  register_method<GrowBuffer>("test_grow_buffer", "test: registers a buffer sized by its state");
  TempDir tmp;
  const auto yaml = kRecipe + "compression:\n  - method: l1_regularization\n  - method: test_grow_buffer\n";
  auto e = build_experiment(node(yaml), DataNeeds::TestOnly);
  apply_runtime_settings(e.recipe);
  dynamic_cast<GrowBuffer*>(e.methods.at(1).get())->grown_ = 7;
  prepare_experiment(e);
  compress_by_hand(e);
  const auto ckpt = tmp.file("last.pt");
  save_checkpoint(ckpt, e, nullptr, TrainerState{});
  const auto path = tmp.file("m.sdc");
  auto r = export_compressed_model(ckpt, path);
  EXPECT_GT(r.method_state_bytes, 0u);
  EXPECT_EQ(r.method_state_of, std::vector<std::string>{"test_grow_buffer"});  // l1's state is not needed
  auto loaded = load_compressed_experiment(path);
  auto from_checkpoint = experiment(yaml, ckpt);
  expect_same_model(from_checkpoint, loaded);
  EXPECT_EQ(loaded.model->named_buffers()["grown"].numel(), 7);
}
