// filter_pruning (criteria, selection, the method's schedule, masks and checkpoints) and
// group_lasso, against slow references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <sstream>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/models/model.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/pruning/mask.h"
#include "shrink/structure/structured_pruning.h"
#include "shrink/train/checkpoint.h"
#include "shrink/train/trainer.h"
#include "train/train_test_util.h"

using namespace shrink;
using shrink::test::error_of;
using namespace shrink::structure;

namespace {

ModelPtr zoo(const std::string& yaml, std::vector<int64_t> shape = {3, 32, 32}) {
  torch::manual_seed(3);
  DataInfo info;
  info.sample_shape = std::move(shape);
  info.num_classes = 10;
  return build_model(ConfigNode(read_yaml_string(yaml, "model.yaml"), "model"), info);
}

ConfigNode entry(const std::string& yaml) {
  return ConfigNode(read_yaml_string(yaml, "recipe.yaml"), "compression[0]");
}

/// Random BatchNorm parameters and statistics (weights keep the zoo's random init).
void randomize(torch::nn::Module& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules(/*include_self=*/false))
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(-1.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
      bn->running_mean.uniform_(-0.2, 0.2);
      bn->running_var.uniform_(0.5, 1.5);
    }
}

ChannelGroup group_named(torch::nn::Module& model, const std::string& name) {
  for (auto& g : channel_groups(model))
    if (g.name == name) return g;
  ADD_FAILURE() << "no group " << name;
  return {};
}

torch::Tensor weight_of(const ChannelMember& m) {
  if (auto* c = m.module->as<nn::Conv2dImpl>()) return c->weight;
  return m.module->as<nn::LinearImpl>()->weight;
}

/// Removed channels given the kept ones.
std::vector<int64_t> complement(int64_t channels, const std::vector<int64_t>& keep) {
  std::vector<int64_t> out;
  for (int64_t c = 0; c < channels; ++c)
    if (!std::binary_search(keep.begin(), keep.end(), c)) out.push_back(c);
  return out;
}

TrainContext context(const ModelPtr& model, int64_t step = 0) {
  TrainContext ctx;
  ctx.model = model;
  ctx.step = step;
  ctx.steps_per_epoch = 10;
  ctx.total_steps = 100;
  return ctx;
}

}  // namespace

// ---- criteria and selection ----

TEST(FilterPruningCriteria, L1RemovesTheFiltersWithTheSmallestSummedNorm) {
  auto model = zoo("name: resnet20\nshortcut: B\n");
  randomize(*model, 21);
  for (const std::string name : {"stream.layer1", "layer2.1.conv1"}) {
    auto g = group_named(*model, name);
    const int64_t c = g.channels();
    // Slow reference: sum over the producers of sum |w| of filter i, element by element.
    std::vector<double> norm(static_cast<size_t>(c), 0.0);
    int64_t per_channel = 0;
    for (const auto* p : g.with_role(ChannelRole::producer)) {
      auto w = weight_of(*p).detach().reshape({c, -1});
      auto acc = w.accessor<float, 2>();
      for (int64_t i = 0; i < c; ++i)
        for (int64_t j = 0; j < w.size(1); ++j) norm[i] += std::abs(acc[i][j]);
      per_channel += w.size(1);
    }
    auto scores = channel_scores(g, "l1");
    for (int64_t i = 0; i < c; ++i) EXPECT_NEAR(scores[i].item<double>(), norm[i] / per_channel, 1e-6);
    const auto keep = select_channels({scores}, 0.25, false, 1)[0];
    ASSERT_EQ(static_cast<int64_t>(keep.size()), c - c / 4);
    const auto removed = complement(c, keep);
    for (int64_t r : removed)
      for (int64_t k : keep) EXPECT_LT(norm[r], norm[k]) << name << ": removed " << r << " kept " << k;
  }
}

TEST(FilterPruningCriteria, BnScaleRemovesTheSmallestAbsoluteGammas) {
  auto model = zoo("name: vgg11_bn_cifar\n");
  randomize(*model, 4);
  auto g = group_named(*model, "features.4");  // conv 64 -> 128, BN at features.5
  auto* bn = g.with_role(ChannelRole::norm)[0]->module->as<torch::nn::BatchNorm2dImpl>();
  const auto gamma = bn->weight.detach().abs();
  const auto keep = select_channels({channel_scores(g, "bn_scale")}, 0.5, false, 1)[0];
  ASSERT_EQ(keep.size(), 64u);
  const auto removed = complement(128, keep);
  const double largest_removed = gamma.index_select(0, torch::tensor(removed)).max().item<double>();
  const double smallest_kept = gamma.index_select(0, torch::tensor(keep)).min().item<double>();
  EXPECT_LT(largest_removed, smallest_kept);
}

TEST(FilterPruningCriteria, GlobalScopeRanksAllChannelsAndRespectsMinChannels) {
  // Group 0 is uniformly weak: a global ranking empties it down to min_channels.
  std::vector<torch::Tensor> scores = {torch::tensor({0.1, 0.2, 0.15, 0.05}),
                                       torch::tensor({1.0, 0.3, 2.0, 0.25, 3.0, 0.9})};
  auto keep = select_channels(scores, 0.5, true, 2);
  EXPECT_EQ(keep[0], (std::vector<int64_t>{1, 2}));        // 0.05 and 0.1 go, then the group is at 2
  EXPECT_EQ(keep[1], (std::vector<int64_t>{0, 2, 4}));     // 0.25, 0.3, 0.9 go: 5 of 10 in total
  auto per_group = select_channels(scores, 0.5, false, 1);
  EXPECT_EQ(per_group[0], (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(per_group[1], (std::vector<int64_t>{0, 2, 4}));
  // Ties: the lower index goes first; ratio 0 keeps all.
  EXPECT_EQ(select_channels({torch::ones({4})}, 0.5, false, 1)[0], (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(select_channels({torch::ones({4})}, 0.0, true, 1)[0], (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(select_channels({torch::ones({4})}, 1.0, false, 1)[0], (std::vector<int64_t>{3}));
}

// ---- the method ----

TEST(FilterPruningMethod, PrunesOnceAtTrainBeginAndReportsMacs) {
  auto model = zoo("name: resnet20\n");
  auto method = build_method(entry("method: filter_pruning\nratio: 0.5\n"));
  method->bind(model);
  auto* fp = dynamic_cast<FilterPruning*>(method.get());
  ASSERT_TRUE(fp);
  {
    torch::NoGradGuard no_grad;
    model->eval();
    model->forward(torch::zeros({1, 3, 32, 32}));  // MACs follow the last forward
  }
  const int64_t dense_macs = model_macs(*model);
  auto ctx = context(model);
  std::vector<std::string> log;
  ctx.log = [&](const std::string& line) { log.push_back(line); };
  method->prepare_model(ctx);
  EXPECT_FALSE(fp->pruned());
  method->on_train_begin(ctx);
  ASSERT_TRUE(fp->pruned());
  ASSERT_EQ(fp->kept().size(), 9u);
  for (const auto& k : fp->kept()) EXPECT_EQ(static_cast<int64_t>(k.keep.size()), k.channels / 2) << k.group;
  EXPECT_EQ(fp->channels_removed(), 3 * 8 + 3 * 16 + 3 * 32);
  EXPECT_EQ(model->named_parameters()["layer3.1.conv1.weight"].size(0), 32);
  ASSERT_FALSE(log.empty());
  EXPECT_NE(log[0].find("removed 168 of 336 channels in 9 groups"), std::string::npos) << log[0];
  EXPECT_NE(log[0].find("MACs/sample"), std::string::npos) << log[0];
  const int64_t thinned_macs = model_macs(*model);
  EXPECT_LT(thinned_macs, dense_macs * 0.55);
  method->on_epoch_end(ctx);
  EXPECT_EQ(ctx.metrics["channels_removed"], 168);
  EXPECT_EQ(ctx.metrics["macs"], thinned_macs);
  // Once only.
  method->on_step_begin(ctx);
  EXPECT_EQ(model->named_parameters()["layer3.1.conv1.weight"].size(0), 32);
}

TEST(FilterPruningMethod, WaitsForItsStartStepThenForgetsMomentum) {
  auto model = zoo("name: resnet20\nshortcut: B\n");
  auto method = build_method(entry("method: filter_pruning\ngroups: ['stream.layer3', 'layer1.*']\nstart_step: 2\n"));
  method->bind(model);
  auto* fp = dynamic_cast<FilterPruning*>(method.get());
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  torch::manual_seed(0);
  const auto x = torch::randn({4, 3, 32, 32});
  const auto y = torch::tensor({1, 2, 3, 4}, torch::kLong);
  for (int64_t step = 0; step < 4; ++step) {
    auto ctx = context(model, step);
    ctx.optimizer = &sgd;
    if (step == 0) method->on_train_begin(ctx);
    method->on_step_begin(ctx);
    EXPECT_EQ(fp->pruned(), step >= 2) << step;
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    method->on_before_optimizer_step(ctx);
    sgd.step();
    method->on_after_optimizer_step(ctx);
  }
  EXPECT_EQ(model->named_parameters()["fc.weight"].size(1), 32);
  EXPECT_EQ(model->named_parameters()["layer1.2.conv1.weight"].size(0), 8);
}

TEST(FilterPruningMethod, MaskModeKeepsChannelsAtZeroAndEqualsThinning) {
  auto masked = zoo("name: mobilenet_v2_cifar\n");
  randomize(*masked, 9);
  auto mm = build_method(entry("method: filter_pruning\nthin: false\nscope: global\nratio: 0.3\ngroups: ['*']\n"));
  mm->bind(masked);
  auto mctx = context(masked);
  mm->on_train_begin(mctx);
  auto* mfp = dynamic_cast<FilterPruning*>(mm.get());
  ASSERT_TRUE(mfp->pruned());
  EXPECT_FALSE(mfp->thinned());
  EXPECT_GT(mfp->channels_removed(), 0);
  // SGD steps with momentum and weight decay, as the trainer runs them: the masks hold the
  // weights, the method's hooks the removed biases and BN parameters.
  torch::optim::SGD sgd(masked->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(0.01));
  masked->train();
  torch::manual_seed(2);
  for (int i = 0; i < 2; ++i) {
    sgd.zero_grad();
    masked->forward(torch::randn({2, 3, 32, 32})).pow(2).mean().backward();
    mm->on_before_optimizer_step(mctx);
    pruning::mask_gradients(*masked);
    sgd.step();
    pruning::apply_masks(*masked);
    mm->on_after_optimizer_step(mctx);
  }
  for (const auto& k : mfp->kept()) {
    auto g = group_named(*masked, k.group);
    const auto removed = torch::tensor(complement(k.channels, k.keep));
    for (const auto* n : g.with_role(ChannelRole::norm)) {
      auto* bn = n->module->as<torch::nn::BatchNorm2dImpl>();
      EXPECT_EQ(bn->weight.index_select(0, removed).abs().sum().item<double>(), 0.0) << n->path;
      EXPECT_EQ(bn->bias.index_select(0, removed).abs().sum().item<double>(), 0.0) << n->path;
    }
  }

  // The saved state restores the masks on a fresh model (prepare_model, before weights load).
  auto fresh = zoo("name: mobilenet_v2_cifar\n");
  auto copy = build_method(entry("method: filter_pruning\nscope: global\nratio: 0.3\ngroups: ['*']\n"));
  copy->bind(fresh);
  torch::serialize::OutputArchive out;
  mm->save_state(out);
  std::stringstream stream;
  out.save_to(stream);
  torch::serialize::InputArchive in;
  in.load_from(stream);
  copy->load_state(in);
  auto fctx = context(fresh);
  copy->prepare_model(fctx);
  auto* restored = dynamic_cast<FilterPruning*>(copy.get());
  EXPECT_TRUE(restored->pruned());
  EXPECT_FALSE(restored->thinned());  // the run's mode, whatever the recipe says now
  EXPECT_EQ(restored->channels_removed(), mfp->channels_removed());
  auto mask_names = [](torch::nn::Module& m) {
    std::vector<std::string> out;
    for (const auto& b : m.named_buffers())
      if (b.key().size() > 11 && b.key().substr(b.key().size() - 11) == "weight_mask") out.push_back(b.key());
    return out;
  };
  EXPECT_FALSE(mask_names(*masked).empty());
  EXPECT_EQ(mask_names(*fresh), mask_names(*masked));

  // The trained masked model, thinned by the kept channels, computes the same function.
  auto thin_copy = zoo("name: mobilenet_v2_cifar\n");
  torch::NoGradGuard no_grad;
  {
    auto src = masked->named_parameters();
    for (auto& p : thin_copy->named_parameters()) p.value().copy_(src[p.key()]);
    auto bufs = masked->named_buffers();
    for (auto& b : thin_copy->named_buffers()) b.value().copy_(bufs[b.key()]);
  }
  for (const auto& k : mfp->kept()) thin(group_named(*thin_copy, k.group), k.keep);
  masked->eval();
  thin_copy->eval();
  torch::manual_seed(1);
  const auto x = torch::randn({2, 3, 32, 32});
  const auto masked_out = masked->forward(x), thinned_out = thin_copy->forward(x);
  const double scale = std::max(1.0, masked_out.abs().max().item<double>());
  EXPECT_TRUE(torch::allclose(thinned_out, masked_out, 1e-5, 1e-5 * scale))
      << (thinned_out - masked_out).abs().max().item<double>() << " at output scale " << scale;
}

// ---- recipe errors ----

TEST(FilterPruningMethod, RecipeErrorsNameTheKey) {
  auto model = zoo("name: resnet20\n");
  auto msg = error_of([&] { build_method(entry("method: filter_pruning\ncriterion: l2\n")); });
  EXPECT_NE(msg.find("compression[0].criterion: must be one of l1, bn_scale (got 'l2')"), std::string::npos) << msg;
  msg = error_of([&] { build_method(entry("method: filter_pruning\nratio: 1.5\n")); });
  EXPECT_NE(msg.find("recipe.yaml:2:8: compression[0].ratio: must be in [0, 1]"), std::string::npos) << msg;
  msg = error_of([&] { build_method(entry("method: filter_pruning\nmin_channels: 0\n")); });
  EXPECT_NE(msg.find("compression[0].min_channels"), std::string::npos) << msg;
  msg = error_of([&] { build_method(entry("method: filter_pruning\nscope: layer\n")); });
  EXPECT_NE(msg.find("compression[0].scope"), std::string::npos) << msg;
  msg = error_of([&] {
    build_method(entry("method: filter_pruning\ngroups: ['layer1.*', 'stream.*']\n"))->bind(model);
  });
  EXPECT_NE(msg.find("compression[0].groups[1]: 'stream.*' matches no channel group"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layer1.0.conv1"), std::string::npos) << msg;  // lists the groups
  auto lenet = zoo("name: lenet5\n", {1, 28, 28});
  msg = error_of([&] { build_method(entry("method: filter_pruning\ncriterion: bn_scale\n"))->bind(lenet); });
  EXPECT_NE(msg.find("compression[0].criterion: bn_scale needs a BatchNorm"), std::string::npos) << msg;
  msg = error_of([&] { build_method(entry("method: group_lasso\ngroups: rows\n")); });
  EXPECT_NE(msg.find("compression[0].groups: must be one of filters, channels"), std::string::npos) << msg;
  msg = error_of([&] { build_method(entry("method: group_lasso\ntargets: ['*.bias']\n"))->bind(lenet); });
  EXPECT_NE(msg.find("compression[0].targets: matches no conv or linear weight"), std::string::npos) << msg;
}

// ---- group lasso ----

TEST(GroupLasso, GradientIsStrengthTimesNormalizedGroupsAndZeroAtZero) {
  auto model = zoo("name: lenet5\n", {1, 28, 28});
  for (const std::string groups : {"filters", "channels"}) {
    auto method = build_method(entry("method: group_lasso\nstrength: 0.3\ntargets: ['conv2.weight', 'fc1.weight']\n"
                                     "groups: " + groups + "\n"));
    method->bind(model);
    const bool filters = groups == "filters";
    torch::NoGradGuard no_grad;
    auto conv = model->named_parameters()["conv2.weight"];  // [50, 20, 5, 5]
    auto fc = model->named_parameters()["fc1.weight"];      // [500, 800]
    conv.uniform_(-1, 1);
    fc.uniform_(-1, 1);
    conv[3].zero_();
    conv.select(1, 4).zero_();
    for (auto* p : {&conv, &fc}) p->mutable_grad() = torch::zeros_like(*p);
    auto ctx = context(model);
    method->on_before_optimizer_step(ctx);
    for (auto* p : {&conv, &fc}) {
      // Slow reference: group by group.
      auto w = p->detach();
      auto expected = torch::zeros_like(w);
      const int64_t n = filters ? w.size(0) : w.size(1);
      double norm_sum = 0;
      for (int64_t g = 0; g < n; ++g) {
        auto slice = filters ? w.select(0, g) : w.select(1, g);
        const double norm = std::sqrt(slice.pow(2).sum().item<double>());
        norm_sum += norm;
        if (norm > 0) (filters ? expected.select(0, g) : expected.select(1, g)).copy_(slice * (0.3 / norm));
      }
      EXPECT_TRUE(torch::allclose(p->grad(), expected, 1e-5, 1e-6)) << groups;
      EXPECT_NEAR(group_norm_sum(w, filters), norm_sum, 1e-3 * norm_sum);
      EXPECT_FALSE(p->grad().isnan().any().item<bool>());
    }
    method->on_epoch_end(ctx);
    const double total = group_norm_sum(conv, filters) + group_norm_sum(fc, filters);
    EXPECT_NEAR(ctx.metrics["group_norm_sum"], total, 1e-5 * total);
  }
}

// ---- checkpoints ----

TEST(FilterPruningMethod, ThinnedCheckpointReloadsThroughTheExperiment) {
  for (const bool thin : {true, false}) {
    SCOPED_TRACE(thin ? "thin" : "mask");
    test::TempDir tmp;
    const auto dir = tmp.file("run");
    const std::string extra = std::string("compression:\n  - method: filter_pruning\n    groups: ['*']\n") +
                              "    ratio: 0.4\n    start_step: 1\n    thin: " + (thin ? "true" : "false") + "\n";
    auto yaml = test::small_recipe(dir, extra, thin ? "resnet20\n  shortcut: B" : "lenet5", 128, 1);
    yaml.replace(yaml.find("test_subset: 500"), 16, "test_subset: 100");  // keeps the evaluation short
    auto trained = build_experiment(test::recipe_node(yaml));
    apply_runtime_settings(trained.recipe);
    TrainOptions options;
    options.run_dir = dir;
    options.quiet = true;
    train(trained, options);
    EXPECT_NE(test::read_file(dir + "/log.txt").find("filter_pruning at step 1"), std::string::npos);
    EXPECT_NE(test::read_file(dir + "/metrics.jsonl").find("\"channels_removed\""), std::string::npos);

    auto e = build_experiment(test::recipe_node(read_checkpoint_recipe(dir + "/last.pt")), DataNeeds::TestOnly);
    load_checkpoint_methods(dir + "/last.pt", e);
    prepare_experiment(e);
    load_checkpoint_model(dir + "/last.pt", e);
    auto a = trained.model->named_parameters(), b = e.model->named_parameters();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
    if (thin) EXPECT_LT(e.model->named_parameters()["layer2.1.conv1.weight"].size(0), 32);
    torch::NoGradGuard no_grad;
    trained.model->eval();
    e.model->eval();
    const auto x = torch::randn({3, 1, 28, 28});
    EXPECT_TRUE(torch::equal(trained.model->forward(x), e.model->forward(x)));
  }
}
