#include "shrink/models/mobilenet.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>

#include "shrink/core/error.h"
#include "shrink/models/model_input.h"

namespace shrink {

namespace detail {
int64_t make_divisible(double v, int64_t divisor) {
  int64_t rounded = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}
}  // namespace detail

// ---- MobileNet V1 ----

OptionSchema<MobileNetV1Impl::Options> MobileNetV1Impl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("width_multiplier", &Options::width_multiplier,
        "Width multiplier alpha: every layer has int(channels * alpha) channels.")
      .range(0.01, 16);
  return s;
}

MobileNetV1Impl::MobileNetV1Impl(Options options_, const DataInfo& data, bool cifar, const std::string& model_name)
    : options(options_) {
  image_channels(model_name, data);
  if (!(options.width_multiplier > 0))
    throw UserError(model_name + ": width_multiplier must be positive (got " +
                    std::to_string(options.width_multiplier) + ")");
  const int64_t classes = model_num_classes(model_name, options.num_classes, data);
  const auto width = [&](int64_t c) {
    return std::max<int64_t>(1, static_cast<int64_t>(c * options.width_multiplier));
  };
  // (output channels, stride) of the 13 depthwise separable blocks (Table 1).
  const std::pair<int64_t, int64_t> blocks[] = {{64, 1},  {128, 2}, {128, 1}, {256, 2}, {256, 1},  {512, 2}, {512, 1},
                                                {512, 1}, {512, 1}, {512, 1}, {512, 1}, {1024, 2}, {1024, 1}};
  features = register_module("features", torch::nn::ModuleList());
  int64_t c = width(32);
  features->push_back(ConvBNAct(ConvBNActOptions(data.sample_shape[0], c, 3).stride(cifar ? 1 : 2)));
  for (const auto& [out, stride] : blocks) {
    features->push_back(DepthwiseSeparable(DepthwiseSeparableOptions(c, width(out)).stride(stride)));
    c = width(out);
  }
  taps_ = {{1, "stage1"}, {3, "stage2"}, {5, "stage3"}, {11, "stage4"}, {13, "features"}};
  classifier = register_module("classifier", nn::Linear(c, classes));
  declare_taps({"stage1", "stage2", "stage3", "stage4", "features", "pooled", "logits"});
  detail::init_like_torchvision(*this);
}

torch::Tensor MobileNetV1Impl::forward(const torch::Tensor& input) {
  auto x = forward_with_taps(features, input, taps_);
  x = tap_point("pooled", torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1));
  return tap_point("logits", classifier(x));
}

// ---- MobileNet V2 ----

OptionSchema<MobileNetV2Impl::Options> MobileNetV2Impl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("width_multiplier", &Options::width_multiplier,
        "Width multiplier alpha: channels * alpha rounded to a multiple of 8 (the last conv keeps 1280 "
        "channels for alpha <= 1).")
      .range(0.01, 16);
  s.add("dropout", &Options::dropout, "Dropout probability before the Linear.").range(0, 1);
  return s;
}

MobileNetV2Impl::MobileNetV2Impl(Options options_, const DataInfo& data, bool cifar, const std::string& model_name)
    : options(options_) {
  image_channels(model_name, data);
  if (!(options.width_multiplier > 0))
    throw UserError(model_name + ": width_multiplier must be positive (got " +
                    std::to_string(options.width_multiplier) + ")");
  const int64_t classes = model_num_classes(model_name, options.num_classes, data);
  const double alpha = options.width_multiplier;
  struct Setting {
    int64_t t, c, n, s;
  };
  // torchvision's inverted_residual_setting; the CIFAR form runs the 24-channel stage at stride 1.
  const Setting settings[] = {
      {1, 16, 1, 1}, {6, 24, 2, cifar ? 1 : 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2},
      {6, 320, 1, 1}};
  const char* const stage_names[] = {"stage1", "stage2", "stage3", nullptr, "stage4", nullptr, "stage5"};

  features = register_module("features", torch::nn::ModuleList());
  int64_t c = detail::make_divisible(32 * alpha);
  const int64_t last_channels = detail::make_divisible(1280 * std::max(1.0, alpha));
  features->push_back(
      ConvBNAct(ConvBNActOptions(data.sample_shape[0], c, 3).stride(cifar ? 1 : 2).activation(BlockActivation::relu6)));
  taps_.clear();
  for (size_t row = 0; row < std::size(settings); ++row) {
    const auto& st = settings[row];
    const int64_t out = detail::make_divisible(st.c * alpha);
    for (int64_t i = 0; i < st.n; ++i) {
      features->push_back(InvertedResidual(InvertedResidualOptions(c, out, i == 0 ? st.s : 1, st.t)));
      c = out;
    }
    if (stage_names[row]) taps_.emplace_back(features->size() - 1, stage_names[row]);
  }
  features->push_back(ConvBNAct(ConvBNActOptions(c, last_channels, 1).activation(BlockActivation::relu6)));
  taps_.emplace_back(features->size() - 1, "features");

  classifier = register_module("classifier", torch::nn::ModuleList());
  classifier->push_back(torch::nn::Dropout(options.dropout));
  classifier->push_back(nn::Linear(last_channels, classes));
  declare_taps({"stage1", "stage2", "stage3", "stage4", "stage5", "features", "pooled", "logits"});
  detail::init_like_torchvision(*this);
}

torch::Tensor MobileNetV2Impl::forward(const torch::Tensor& input) {
  auto x = forward_with_taps(features, input, taps_);
  x = tap_point("pooled", torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1));
  return tap_point("logits", forward_sequence(*classifier, x));
}

}  // namespace shrink
