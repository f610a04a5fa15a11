// k-means weight sharing (Deep Compression): 1-d k-means against a slow Lloyd reference, the
// three centroid initializations, clustering with pruned weights, the centroid gradient (sum of
// its members' gradients) against a hand computation, fixed assignments through training,
// checkpoint state round trip, recipe errors, and a tiny training run that still learns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>

#include "shrink/compression/method.h"
#include "shrink/config/recipe_file.h"
#include "shrink/core/error.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/sharing/weight_sharing.h"
#include "shrink/train/trainer.h"
#include "train/train_test_util.h"

using namespace shrink;
using shrink::test::StopAt;
using sharing::CentroidInit;
using sharing::WeightSharing;

namespace {

ConfigNode entry(const std::string& yaml) {
  return ConfigNode(read_yaml_string(yaml, "ws.yaml"), "compression[0]");
}

std::unique_ptr<WeightSharing> make_method(const std::string& yaml) {
  auto method = build_method(entry(yaml));
  auto* ws = dynamic_cast<WeightSharing*>(method.get());
  EXPECT_NE(ws, nullptr);
  method.release();
  return std::unique_ptr<WeightSharing>(ws);
}

struct TinyNet : ModelImpl {
  TinyNet() {
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(1, 4, 3)));
    fc1 = register_module("fc1", nn::Linear(4 * 4 * 4, 12));
    fc2 = register_module("fc2", nn::Linear(12, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto h = torch::relu(conv1(x)).flatten(1);
    return fc2(torch::relu(fc1(h)));
  }
  nn::Conv2d conv1{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
};

/// Slow reference Lloyd: nearest centroid by a scan (ties to the lower index), means, until the
/// assignments repeat or max_iterations updates.
std::pair<std::vector<double>, std::vector<int64_t>> reference_lloyd(const std::vector<double>& v,
                                                                     std::vector<double> c, int64_t max_iterations) {
  auto assign = [&](const std::vector<double>& cs) {
    std::vector<int64_t> a(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      size_t best = 0;
      for (size_t k = 1; k < cs.size(); ++k)
        if (std::abs(v[i] - cs[k]) < std::abs(v[i] - cs[best])) best = k;
      a[i] = static_cast<int64_t>(best);
    }
    return a;
  };
  auto a = assign(c);
  for (int64_t it = 0; it < max_iterations; ++it) {
    std::vector<double> sum(c.size(), 0.0);
    std::vector<int64_t> count(c.size(), 0);
    for (size_t i = 0; i < v.size(); ++i) sum[a[i]] += v[i], ++count[a[i]];
    for (size_t k = 0; k < c.size(); ++k)
      if (count[k] > 0) c[k] = sum[k] / count[k];
    auto next = assign(c);
    const bool same = next == a;
    a = next;
    if (same) break;
  }
  return {c, a};
}

std::vector<double> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::string error_of(const std::string& yaml) {
  try {
    build_method(entry(yaml));
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

int64_t distinct_nonzero(const torch::Tensor& t) {
  std::set<float> values;
  auto c = t.detach().to(torch::kFloat32).contiguous();
  for (int64_t i = 0; i < c.numel(); ++i)
    if (c.data_ptr<float>()[i] != 0.0f) values.insert(c.data_ptr<float>()[i]);
  return static_cast<int64_t>(values.size());
}

}  // namespace

TEST(WeightSharingKMeans, MatchesSlowReferenceLloyd) {
  torch::manual_seed(11);
  // Three blobs and some noise, so Lloyd needs several iterations.
  auto values = torch::cat({torch::randn({60}) * 0.1 - 1, torch::randn({50}) * 0.2 + 0.3, torch::rand({40}) * 3})
                    .to(torch::kFloat64);
  for (int64_t k : {2, 5, 8}) {
    auto init = sharing::init_centroids(values, k, CentroidInit::Linear);
    auto r = sharing::kmeans_1d(values, init, 100);
    auto [ref_c, ref_a] = reference_lloyd(to_vector(values), to_vector(init), 100);
    EXPECT_TRUE(r.converged) << k;
    auto c = to_vector(r.centroids);
    ASSERT_EQ(c.size(), ref_c.size());
    for (size_t i = 0; i < c.size(); ++i) EXPECT_NEAR(c[i], ref_c[i], 1e-12) << "k " << k << " centroid " << i;
    auto a = r.assignments.contiguous();
    EXPECT_EQ(std::vector<int64_t>(a.data_ptr<int64_t>(), a.data_ptr<int64_t>() + a.numel()), ref_a) << k;
    // Limited iterations stop early, like the reference.
    auto r2 = sharing::kmeans_1d(values, init, 2);
    auto [ref_c2, ref_a2] = reference_lloyd(to_vector(values), to_vector(init), 2);
    auto c2 = to_vector(r2.centroids);
    for (size_t i = 0; i < c2.size(); ++i) EXPECT_NEAR(c2[i], ref_c2[i], 1e-12);
  }
}

TEST(WeightSharingKMeans, InitializationValues) {
  auto v = torch::tensor({3.0, -1.0, 0.5, 2.0});
  EXPECT_EQ(to_vector(sharing::init_centroids(v, 3, CentroidInit::Linear)), (std::vector<double>{-1.0, 1.0, 3.0}));
  // Density: quantiles (j + 0.5) / k of 0..99 are at positions (j + 0.5) / 4 * 99.
  auto ramp = torch::arange(100, torch::kFloat32).flip(0);
  auto density = to_vector(sharing::init_centroids(ramp, 4, CentroidInit::Density));
  std::vector<double> expected{12.375, 37.125, 61.875, 86.625};
  for (size_t j = 0; j < 4; ++j) EXPECT_NEAR(density[j], expected[j], 1e-9);
  // Random: distinct weights of the layer, ascending, reproducible from the seed.
  torch::manual_seed(5);
  auto w = torch::randn({50});
  torch::manual_seed(1);
  auto r1 = to_vector(sharing::init_centroids(w, 6, CentroidInit::Random));
  torch::manual_seed(1);
  auto r2 = to_vector(sharing::init_centroids(w, 6, CentroidInit::Random));
  EXPECT_EQ(r1, r2);
  EXPECT_TRUE(std::is_sorted(r1.begin(), r1.end()));
  EXPECT_EQ(std::set<double>(r1.begin(), r1.end()).size(), 6u);
  auto wv = to_vector(w);
  for (double c : r1) EXPECT_NE(std::find(wv.begin(), wv.end(), c), wv.end()) << c;
}

TEST(WeightSharing, ClustersToAtMostTwoToTheBitsValuesAndKeepsPrunedZeros) {
  torch::manual_seed(2);
  auto model = std::make_shared<TinyNet>();
  // fc1: pruned through its mask; conv1: pruned by zeros only.
  model->fc1->enable_mask();
  {
    torch::NoGradGuard no_grad;
    model->fc1->weight_mask.copy_(torch::rand_like(model->fc1->weight).gt(0.6).to(torch::kFloat32));
    model->fc1->apply_mask();
    model->conv1->weight.mul_(torch::rand_like(model->conv1->weight).gt(0.3));
  }
  auto conv_zero = model->conv1->weight.eq(0).clone();
  auto ws = make_method("method: weight_sharing\ntargets: ['conv1', 'fc1.weight']\nbits: 3\ninit: density\n");
  ws->bind(model);
  EXPECT_EQ(ws->layer_paths(), (std::vector<std::string>{"conv1", "fc1"}));
  ws->cluster(*model);
  ASSERT_EQ(ws->layers().size(), 2u);
  EXPECT_LE(distinct_nonzero(model->conv1->weight), 8);
  EXPECT_LE(distinct_nonzero(model->fc1->weight), 8);
  EXPECT_GT(distinct_nonzero(model->fc1->weight), 1);
  EXPECT_GT(distinct_nonzero(model->fc2->weight), 8) << "fc2 is not a target";
  EXPECT_TRUE(torch::equal(model->conv1->weight.eq(0), conv_zero));
  EXPECT_TRUE(torch::equal(model->fc1->weight.ne(0), model->fc1->weight_mask.to(torch::kBool)));
  for (const auto& layer : ws->layers()) {
    EXPECT_EQ(layer.assignments.scalar_type(), torch::kUInt8);
    EXPECT_EQ(layer.centroids.numel(), 8);
    // Every kept weight is its centroid; the counts add up to the kept weights.
    auto expected = layer.centroids.index_select(0, layer.assignments.flatten().to(torch::kLong))
                        .view_as(layer.weight) * layer.kept;
    EXPECT_TRUE(torch::equal(layer.weight, expected)) << layer.name;
    EXPECT_EQ(layer.counts.sum().item<int64_t>(), layer.kept.sum().item<int64_t>());
  }
  EXPECT_EQ(ws->distinct_values(), (std::vector<int64_t>{distinct_nonzero(model->conv1->weight),
                                                          distinct_nonzero(model->fc1->weight)}));
}

TEST(WeightSharing, CentroidGradientIsTheSumOfItsWeightsGradients) {
  torch::manual_seed(4);
  auto model = std::make_shared<TinyNet>();
  model->fc2->enable_mask();
  {
    torch::NoGradGuard no_grad;
    model->fc2->weight_mask.copy_(torch::rand_like(model->fc2->weight).gt(0.5).to(torch::kFloat32));
    model->fc2->apply_mask();
  }
  auto ws = make_method("method: weight_sharing\ntargets: [fc2]\nbits: 2\n");
  ws->bind(model);
  ws->cluster(*model);
  const auto& layer = ws->layers().at(0);
  auto before = layer.centroids.clone();
  auto assignments = layer.assignments.clone();
  auto kept = layer.kept.clone();

  auto loss = model->forward(torch::randn({6, 1, 6, 6})).pow(2).sum();
  loss.backward();
  auto grad = model->fc2->weight.grad().clone();
  const double lr = 0.05;
  ws->fine_tune_step(lr);

  // Hand computation with plain SGD: c_k -= lr * sum of the gradients of kept weights in cluster k.
  auto g = grad.accessor<float, 2>();
  auto a = assignments.accessor<uint8_t, 2>();
  auto keep = kept.accessor<bool, 2>();
  std::vector<double> sums(4, 0.0);
  for (int64_t i = 0; i < grad.size(0); ++i)
    for (int64_t j = 0; j < grad.size(1); ++j)
      if (keep[i][j]) sums[a[i][j]] += g[i][j];
  for (int64_t k = 0; k < 4; ++k)
    EXPECT_NEAR(layer.centroids[k].item<double>(), before[k].item<double>() - lr * sums[k], 1e-6) << k;
  // Weights take the new centroid values; pruned weights stay exactly zero.
  auto w = model->fc2->weight.accessor<float, 2>();
  for (int64_t i = 0; i < grad.size(0); ++i)
    for (int64_t j = 0; j < grad.size(1); ++j) {
      if (keep[i][j]) {
        EXPECT_EQ(w[i][j], layer.centroids[a[i][j]].item<float>());
      } else {
        EXPECT_EQ(w[i][j], 0.0f);
      }
    }
  EXPECT_TRUE(torch::equal(layer.assignments, assignments));

  // gradient: mean divides by the cluster sizes.
  auto mean = make_method("method: weight_sharing\ntargets: [fc2]\nbits: 2\ngradient: mean\n");
  mean->bind(model);
  mean->cluster(*model);
  auto c0 = mean->layers()[0].centroids.clone();
  auto counts = mean->layers()[0].counts.to(torch::kFloat32);
  auto a2 = mean->layers()[0].assignments.flatten().to(torch::kLong);
  auto k2 = mean->layers()[0].kept.flatten();
  auto expected_grad = torch::zeros({4}).index_add_(0, a2.masked_select(k2), grad.flatten().masked_select(k2));
  mean->fine_tune_step(lr);
  EXPECT_TRUE(torch::allclose(mean->layers()[0].centroids, c0 - lr * expected_grad / counts.clamp_min(1), 1e-5, 1e-7));
}

TEST(WeightSharing, TrainingStepsKeepAssignmentsAndPrunedZeros) {
  torch::manual_seed(6);
  auto model = std::make_shared<TinyNet>();
  model->fc1->enable_mask();
  {
    torch::NoGradGuard no_grad;
    model->fc1->weight_mask.copy_(torch::rand_like(model->fc1->weight).gt(0.5).to(torch::kFloat32));
    model->fc1->apply_mask();
  }
  auto ws = make_method("method: weight_sharing\ntargets: ['*.weight']\nbits: 2\n");
  ws->bind(model);
  TrainContext ctx;
  ctx.model = model;
  ctx.steps_per_epoch = 5;
  ctx.total_steps = 10;
  ctx.lr = 0.1;
  ws->on_train_begin(ctx);
  ASSERT_TRUE(ws->clustered());
  std::vector<torch::Tensor> assignments;
  for (const auto& l : ws->layers()) assignments.push_back(l.assignments.clone());
  auto centroids0 = ws->layers()[1].centroids.clone();
  // Momentum and weight decay would move every weight on its own; the method undoes that.
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-3));
  for (int64_t step = 0; step < 10; ++step) {
    ctx.step = step;
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(torch::randn({8, 1, 6, 6})),
                                                     torch::randint(3, {8}));
    loss.backward();
    ws->on_before_optimizer_step(ctx);
    opt.step();
    ws->on_after_optimizer_step(ctx);
  }
  EXPECT_FALSE(torch::equal(ws->layers()[1].centroids, centroids0)) << "centroids are trained";
  for (size_t i = 0; i < ws->layers().size(); ++i) {
    const auto& l = ws->layers()[i];
    EXPECT_TRUE(torch::equal(l.assignments, assignments[i])) << l.name;
    EXPECT_LE(distinct_nonzero(l.weight), 4) << l.name;
  }
  EXPECT_TRUE(torch::equal(model->fc1->weight.ne(0), model->fc1->weight_mask.to(torch::kBool)));
  TrainContext end = ctx;
  ws->on_epoch_end(end);
  EXPECT_EQ(end.metrics.count("distinct_values.fc1.weight"), 1u);
  EXPECT_LE(end.metrics["distinct_values.fc1.weight"], 4);
}

TEST(WeightSharing, StateRoundTripRestoresCodebooksAndWeights) {
  torch::manual_seed(8);
  auto model = std::make_shared<TinyNet>();
  auto ws = make_method("method: weight_sharing\ntargets: ['fc*']\nbits: 4\ninit: random\n");
  ws->bind(model);
  ws->cluster(*model);
  // Move the centroids off their k-means values so the restored state is not a re-clustering.
  model->forward(torch::randn({4, 1, 6, 6})).sum().backward();
  ws->fine_tune_step(0.5);

  torch::serialize::OutputArchive out;
  ws->save_state(out);
  std::stringstream buffer;
  out.save_to(buffer);

  torch::manual_seed(99);
  auto fresh = std::make_shared<TinyNet>();
  auto restored = make_method("method: weight_sharing\ntargets: ['fc*']\nbits: 4\ninit: random\n");
  restored->bind(fresh);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  restored->load_state(in);
  ASSERT_TRUE(restored->clustered());
  TrainContext ctx;
  ctx.model = fresh;
  ctx.steps_per_epoch = 1;
  ctx.total_steps = 1;
  restored->on_train_begin(ctx);  // attaches and rewrites the weights
  ASSERT_EQ(restored->layers().size(), ws->layers().size());
  for (size_t i = 0; i < ws->layers().size(); ++i) {
    const auto &a = ws->layers()[i], &b = restored->layers()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_TRUE(torch::equal(a.centroids, b.centroids));
    EXPECT_TRUE(torch::equal(a.assignments, b.assignments));
    EXPECT_TRUE(torch::equal(a.kept, b.kept));
    EXPECT_TRUE(torch::equal(a.weight, b.weight)) << a.name;
  }
  // A state written before clustering restores as not clustered.
  auto unclustered = make_method("method: weight_sharing\ntargets: ['fc*']\n");
  torch::serialize::OutputArchive out2;
  unclustered->save_state(out2);
  std::stringstream buffer2;
  out2.save_to(buffer2);
  torch::serialize::InputArchive in2;
  in2.load_from(buffer2);
  unclustered->load_state(in2);
  EXPECT_FALSE(unclustered->clustered());
}

TEST(WeightSharing, RecipeErrorsNameTheKey) {
  EXPECT_NE(error_of("method: weight_sharing\nbits: 0\n").find("ws.yaml:2:7: compression[0].bits: must be in [1, 8]"),
            std::string::npos)
      << error_of("method: weight_sharing\nbits: 0\n");
  EXPECT_NE(error_of("method: weight_sharing\nbits: 9\n").find("compression[0].bits: must be in [1, 8] (got 9)"),
            std::string::npos);
  auto init = error_of("method: weight_sharing\ninit: lineal\n");
  EXPECT_NE(init.find("compression[0].init: must be one of linear, density, random (got 'lineal')"),
            std::string::npos)
      << init;
  EXPECT_NE(init.find("did you mean 'linear'"), std::string::npos) << init;
  EXPECT_NE(error_of("method: weight_sharing\nbitz: 4\n").find("bitz"), std::string::npos);
  // Targets without any Conv2d/Linear layer.
  auto model = std::make_shared<TinyNet>();
  auto ws = make_method("method: weight_sharing\ntargets: ['*.bias']\n");
  try {
    ws->bind(model);
    FAIL() << "expected an error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "compression[0].targets");
    EXPECT_NE(std::string(e.what()).find("no Shrink Conv2d or Linear"), std::string::npos) << e.what();
  }
}

namespace {

std::string tiny_mlp_recipe(const std::string& dir, int bits) {
  return "name: ws\nseed: 3\nthreads: 2\noutput: " + dir +
         "\ndata: {name: synthetic, channels: 1, height: 8, width: 8, num_classes: 4, train_size: 512, "
         "test_size: 256, noise: 0.5}\nmodel: {name: mlp, hidden: [32]}\n"
         "train:\n  epochs: 3\n  batch_size: 32\n  progress: none\n"
         "  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"
         "compression:\n  - {method: weight_sharing, targets: ['fc*.weight'], bits: " +
         std::to_string(bits) + ", start_epoch: 1}\n";
}

/// Asks the trainer to stop after optimizer step `step`.
TrainResult run_recipe(Experiment& e, const std::string& dir, bool resume) {
  apply_runtime_settings(e.recipe);
  TrainOptions options;
  options.run_dir = dir;
  options.quiet = true;
  options.resume = resume;
  auto result = train(e, options);
  clear_stop_request();
  return result;
}

}  // namespace

TEST(WeightSharing, TinyMlpStillLearnsWithSharedWeights) {
  test::TempDir tmp;
  const std::string dir = tmp.file("run");
  auto e = build_experiment(test::recipe_node(tiny_mlp_recipe(dir, 2)));
  auto result = run_recipe(e, dir, false);
  EXPECT_GT(result.final_eval.top1, 60.0) << "chance is 25%";
  auto* ws = dynamic_cast<WeightSharing*>(e.methods.at(0).get());
  ASSERT_NE(ws, nullptr);
  ASSERT_TRUE(ws->clustered());
  for (const auto& item : e.model->named_parameters())
    if (item.key().find("weight") != std::string::npos) EXPECT_LE(distinct_nonzero(item.value()), 4) << item.key();
  auto metrics = test::read_file(dir + "/metrics.csv");
  EXPECT_NE(metrics.find("distinct_values.fc1.weight"), std::string::npos);
}

TEST(WeightSharing, InterruptedAndResumedRunEqualsUninterrupted) {
  test::TempDir tmp;
  const std::string full_dir = tmp.file("full"), split_dir = tmp.file("split");
  auto full = build_experiment(test::recipe_node(tiny_mlp_recipe(full_dir, 3)));
  run_recipe(full, full_dir, false);
  // Stop mid-epoch after the clustering (step 16), resume in a fresh experiment.
  auto first = build_experiment(test::recipe_node(tiny_mlp_recipe(split_dir, 3)));
  first.callbacks.push_back(std::make_unique<StopAt>(24));
  ASSERT_TRUE(run_recipe(first, split_dir, false).interrupted);
  auto second = build_experiment(test::recipe_node(tiny_mlp_recipe(split_dir, 3)));
  run_recipe(second, split_dir, true);
  auto* a = dynamic_cast<WeightSharing*>(full.methods.at(0).get());
  auto* b = dynamic_cast<WeightSharing*>(second.methods.at(0).get());
  ASSERT_TRUE(a && b && b->clustered());
  for (size_t i = 0; i < a->layers().size(); ++i) {
    EXPECT_TRUE(torch::equal(a->layers()[i].centroids, b->layers()[i].centroids)) << i;
    EXPECT_TRUE(torch::equal(a->layers()[i].assignments, b->layers()[i].assignments)) << i;
  }
  auto pa = full.model->parameters(), pb = second.model->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "parameter " << i;
}
