#include <gtest/gtest.h>

#include <stdexcept>

#include "shrink/core/error.h"
#include "shrink/models/lenet.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/layer_form.h"
#include "shrink/nn/linear.h"
#include "shrink/pruning/mask.h"
#include "shrink/structure/channel_groups.h"

namespace {

using shrink::nn::ConvForm;
using shrink::nn::ConvFormKind;

TEST(LayerForm, TextRoundTripsForEveryKind) {
  const std::vector<std::string> texts = {"dense", "jaderberg(8)", "cp(12)", "tucker2(16,32)", "bn_low_rank(4)",
                                          "depthwise_separable", "fire(8,16)", "crelu", "mba(4)", "cyclic"};
  for (const auto& t : texts) {
    const auto form = ConvForm::parse(t);
    EXPECT_EQ(form.str(), t);
    EXPECT_EQ(ConvForm::parse(form.str()), form);
  }
  EXPECT_TRUE(ConvForm::parse("dense").dense());
  EXPECT_EQ(ConvForm::parse("tucker2(16,32)").sizes, (std::vector<int64_t>{16, 32}));
}

TEST(LayerForm, BadTextIsRejectedWithTheReason) {
  auto message = [](const std::string& text) {
    try {
      ConvForm::parse(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("tucker3(4,4)").find("known: dense"), std::string::npos);
  EXPECT_NE(message("tucker2(4)").find("takes 2 size(s)"), std::string::npos);
  EXPECT_NE(message("cp(0)").find("not a positive integer"), std::string::npos);
  EXPECT_NE(message("cp(x)").find("not a positive integer"), std::string::npos);
  EXPECT_NE(message("cp(3").find("missing ')'"), std::string::npos);
  EXPECT_NE(message("crelu(2)").find("takes 0 size(s)"), std::string::npos);
}

TEST(LayerForm, LinearRankFormHasTwoFactorsAndNoOwnWeight) {
  torch::manual_seed(0);
  shrink::nn::Linear fc(shrink::nn::LinearOptions(20, 10));
  fc->set_rank(4);
  EXPECT_TRUE(fc->composite());
  EXPECT_FALSE(fc->weight.defined());
  const auto names = fc->named_parameters().keys();
  EXPECT_EQ(names, (std::vector<std::string>{"first.weight", "second.weight", "second.bias"}));
  EXPECT_EQ(fc->first->weight.sizes(), (std::vector<int64_t>{4, 20}));
  EXPECT_EQ(fc->second->weight.sizes(), (std::vector<int64_t>{10, 4}));
  auto x = torch::randn({3, 20});
  auto y = fc->forward(x);
  auto expected = torch::linear(torch::linear(x, fc->first->weight), fc->second->weight, fc->second->bias);
  EXPECT_TRUE(torch::allclose(y, expected));
  // MACs: the factors report theirs, the host none.
  EXPECT_EQ(fc->macs_per_sample(), 0);
  EXPECT_EQ(fc->first->macs_per_sample() + fc->second->macs_per_sample(), 20 * 4 + 4 * 10);
  // clone() rebuilds the form and copies the factors.
  auto copy = std::dynamic_pointer_cast<shrink::nn::LinearImpl>(fc->clone());
  ASSERT_TRUE(copy);
  EXPECT_TRUE(torch::equal(copy->forward(x), y));
  EXPECT_NE(copy->first->weight.data_ptr(), fc->first->weight.data_ptr());
  // Back to dense.
  fc->set_rank(0);
  EXPECT_FALSE(fc->composite());
  EXPECT_EQ(fc->named_parameters().keys(), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_TRUE(fc->named_children().is_empty());
}

TEST(LayerForm, CompositeLayersCannotBeMaskedAndMaskedLayersKeepTheirForm) {
  shrink::nn::Linear fc(shrink::nn::LinearOptions(8, 8).rank(2));
  EXPECT_THROW(fc->enable_mask(), c10::Error);
  shrink::nn::Linear masked(shrink::nn::LinearOptions(8, 8).masked(true));
  EXPECT_THROW(masked->set_rank(2), c10::Error);
  shrink::nn::Conv2d conv(shrink::nn::Conv2dOptions(4, 4, 3).masked(true));
  EXPECT_THROW(conv->set_form(ConvForm::parse("tucker2(2,2)")), c10::Error);
  EXPECT_FALSE(conv->composite());
  EXPECT_TRUE(conv->weight.defined());
}

TEST(LayerForm, MasksSkipCompositeLayersAndChannelGroupsRefuseThem) {
  torch::manual_seed(0);
  auto model = std::make_shared<shrink::LeNet300Impl>(shrink::LeNet300Impl::Options(), shrink::DataInfo{{1, 28, 28}, 10});
  model->fc1->set_rank(10);
  // The factors are ordinary layers: masks go on them, not on the host.
  shrink::pruning::enable_masks_named(*model, {"fc1.first.weight_mask", "fc2.weight_mask"});
  EXPECT_TRUE(model->fc1->first->masked());
  const auto masks = shrink::pruning::layer_masks(*model);
  std::vector<std::string> names;
  for (const auto& m : masks) names.push_back(m.name);
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.first.weight", "fc2.weight"}));
  try {
    shrink::structure::channel_groups(*model);
    FAIL() << "expected an error";
  } catch (const shrink::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'fc1' is factorized (rank 10)"), std::string::npos) << e.what();
  }
}

}  // namespace
