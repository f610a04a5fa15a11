#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "shrink/config/node.h"
#include "shrink/models/lenet.h"
#include "shrink/report/summary.h"

namespace {

const shrink::DataInfo kMnist{{1, 28, 28}, 10};
const std::vector<int64_t> kSample{1, 28, 28};

shrink::ModelPtr lenet300() { return std::make_shared<shrink::LeNet300Impl>(shrink::LeNet300Impl::Options{}, kMnist); }
shrink::ModelPtr lenet5() { return std::make_shared<shrink::LeNet5Impl>(shrink::LeNet5Impl::Options{}, kMnist); }

TEST(Summary, LeNet300) {
  // Seeded: a float drawn from U(-b, b) is exactly 0 once in ~10^7 draws, which made an
  // unseeded 266K-weight model fail "no exact zeros" about once in 50 runs.
  torch::manual_seed(0);
  auto model = lenet300();
  for (const auto& p : model->parameters()) ASSERT_EQ(p.count_nonzero().item<int64_t>(), p.numel());
  auto s = shrink::summarize(model, kSample);
  ASSERT_EQ(s.layers.size(), 3u);
  const std::vector<std::string> names{"fc1", "fc2", "fc3"};
  const std::vector<std::string> shapes{"300x784", "100x300", "10x100"};
  const std::vector<int64_t> params{235500, 30100, 1010};
  const std::vector<int64_t> macs{235200, 30000, 1000};
  for (size_t i = 0; i < 3; ++i) {
    const auto& l = s.layers[i];
    EXPECT_EQ(l.name, names[i]);
    EXPECT_EQ(l.type, "Linear");
    EXPECT_EQ(l.shape, shapes[i]);
    EXPECT_EQ(l.parameters, params[i]);
    EXPECT_EQ(l.nonzero, params[i]);  // uniform init: no exact zeros
    EXPECT_DOUBLE_EQ(l.sparsity, 0.0);
    EXPECT_EQ(l.bits_per_weight, 32.0);
    EXPECT_EQ(l.stored_bits, params[i] * 32);
    EXPECT_EQ(l.macs, macs[i]);
  }
  EXPECT_EQ(s.parameters, 266610);
  EXPECT_EQ(s.nonzero, 266610);
  EXPECT_EQ(s.stored_bits, 266610 * 32);
  EXPECT_EQ(s.macs, 266200);
}

TEST(Summary, LeNet5) {
  torch::manual_seed(0);  // see LeNet300
  auto model = lenet5();
  for (const auto& p : model->parameters()) ASSERT_EQ(p.count_nonzero().item<int64_t>(), p.numel());
  auto s = shrink::summarize(model, kSample);
  ASSERT_EQ(s.layers.size(), 4u);
  const std::vector<std::string> names{"conv1", "conv2", "fc1", "fc2"};
  const std::vector<std::string> types{"Conv2d", "Conv2d", "Linear", "Linear"};
  const std::vector<std::string> shapes{"20x1x5x5", "50x20x5x5", "500x800", "10x500"};
  const std::vector<int64_t> params{520, 25050, 400500, 5010};
  const std::vector<int64_t> macs{288000, 1600000, 400000, 5000};
  for (size_t i = 0; i < 4; ++i) {
    const auto& l = s.layers[i];
    EXPECT_EQ(l.name, names[i]);
    EXPECT_EQ(l.type, types[i]);
    EXPECT_EQ(l.shape, shapes[i]);
    EXPECT_EQ(l.parameters, params[i]);
    EXPECT_EQ(l.macs, macs[i]);
  }
  EXPECT_EQ(s.parameters, 431080);
  EXPECT_EQ(s.macs, 2293000);
}

TEST(Summary, RestoresTrainingModeAndHandlesTorchModules) {
  struct Net : shrink::ModelImpl {
    Net() {
      conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3).bias(false)));
      bn = register_module("bn", torch::nn::BatchNorm2d(2));
    }
    torch::Tensor forward(const torch::Tensor& x) override { return bn(conv(x)); }
    torch::nn::Conv2d conv{nullptr};
    torch::nn::BatchNorm2d bn{nullptr};
  };
  auto net = std::make_shared<Net>();
  net->train();
  net->bn->eval();  // mixed modes survive
  auto s = shrink::summarize(net, {1, 5, 5});
  EXPECT_TRUE(net->is_training());
  EXPECT_TRUE(net->conv->is_training());
  EXPECT_FALSE(net->bn->is_training());
  ASSERT_EQ(s.layers.size(), 2u);
  EXPECT_EQ(s.layers[0].type, "Conv2d");
  EXPECT_EQ(s.layers[0].macs, 0);  // not a Shrink layer: no cost reported
  EXPECT_EQ(s.layers[1].name, "bn");
  EXPECT_EQ(s.layers[1].type, "BatchNorm2d");
  EXPECT_EQ(s.layers[1].shape, "2");
  EXPECT_EQ(s.layers[1].parameters, 4);
  EXPECT_EQ(s.layers[1].stored_bits, 4 * 32);
}

TEST(Summary, CompareAfterZeroingHalfOfFc1) {
  auto dense_model = lenet300();
  auto dense = shrink::summarize(dense_model, kSample);
  auto model = lenet300();
  auto* net = dynamic_cast<shrink::LeNet300Impl*>(model.get());
  {
    torch::NoGradGuard g;
    net->fc1->weight.narrow(0, 0, 150).zero_();  // 150 * 784 = 117600 weights
  }
  auto s = shrink::summarize(model, kSample);
  EXPECT_EQ(s.layers[0].nonzero, 235500 - 117600);
  EXPECT_DOUBLE_EQ(s.layers[0].sparsity, 117600.0 / 235500.0);
  EXPECT_EQ(s.nonzero, 266610 - 117600);
  EXPECT_DOUBLE_EQ(s.sparsity(), 117600.0 / 266610.0);

  auto c = shrink::compare(dense, s);
  EXPECT_DOUBLE_EQ(c.compression_rate, 266610.0 / 149010.0);
  EXPECT_DOUBLE_EQ(c.index_space_saving, 117600.0 / 149010.0);
  EXPECT_DOUBLE_EQ(c.storage_rate, 1.0);  // dense storage: zeros still cost 32 bits
  EXPECT_DOUBLE_EQ(c.mac_reduction, 1.0);
  EXPECT_DOUBLE_EQ(c.sparsity, 117600.0 / 266610.0);

  auto same = shrink::compare(dense, dense);
  EXPECT_DOUBLE_EQ(same.compression_rate, 1.0);
  EXPECT_DOUBLE_EQ(same.index_space_saving, 0.0);
}

TEST(Summary, TableAndJson) {
  auto dense = shrink::summarize(lenet5(), kSample);
  auto c = shrink::compare(dense, dense);
  auto table = shrink::summary_table(dense, c);
  EXPECT_NE(table.find("conv2"), std::string::npos) << table;
  EXPECT_NE(table.find("50x20x5x5"), std::string::npos) << table;
  EXPECT_NE(table.find("1600000"), std::string::npos) << table;
  EXPECT_NE(table.find("431080"), std::string::npos) << table;
  EXPECT_NE(table.find("Compression rate"), std::string::npos) << table;
  EXPECT_EQ(shrink::summary_table(dense).find("Compression rate"), std::string::npos);

  auto j = nlohmann::json::parse(shrink::summary_json(dense, c));
  EXPECT_EQ(j["sample_shape"], nlohmann::json({1, 28, 28}));
  ASSERT_EQ(j["layers"].size(), 4u);
  EXPECT_EQ(j["layers"][1]["name"], "conv2");
  EXPECT_EQ(j["layers"][1]["macs"], 1600000);
  EXPECT_EQ(j["total"]["parameters"], 431080);
  EXPECT_EQ(j["total"]["stored_bits"], 431080 * 32);
  EXPECT_DOUBLE_EQ(j["comparison"]["compression_rate"].get<double>(), 1.0);
  EXPECT_FALSE(nlohmann::json::parse(shrink::summary_json(dense)).contains("comparison"));
}

}  // namespace
