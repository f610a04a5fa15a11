#include "shrink/models/vgg.h"

#include <string>

#include "shrink/core/error.h"
#include "shrink/models/model_input.h"

namespace shrink {
namespace {

const char* const kStageTaps[] = {"stage1", "stage2", "stage3", "stage4", "features"};

/// torchvision's make_layers: conv 3x3 pad 1 [-> BN] -> ReLU per entry, MaxPool2d(2) per 0.
/// Returns the tap positions: stage1..stage4 after the first four pools, "features" after the last child.
std::vector<std::pair<size_t, const char*>> make_vgg_layers(torch::nn::ModuleList& list, int64_t in_channels,
                                                            const VggConfig& config, bool batch_norm) {
  std::vector<std::pair<size_t, const char*>> taps;
  int64_t c = in_channels;
  size_t pools = 0;
  for (int64_t v : config) {
    if (v == 0) {
      list->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
      if (pools < 4) taps.emplace_back(list->size() - 1, kStageTaps[pools]);
      ++pools;
      continue;
    }
    list->push_back(nn::Conv2d(nn::Conv2dOptions(c, v, 3).padding(1)));
    if (batch_norm) list->push_back(torch::nn::BatchNorm2d(v));
    list->push_back(torch::nn::ReLU());
    c = v;
  }
  taps.emplace_back(list->size() - 1, "features");
  return taps;
}

int64_t pools_in(const VggConfig& config) {
  int64_t n = 0;
  for (int64_t v : config) n += v == 0;
  return n;
}

int64_t last_channels(const VggConfig& config) {
  for (auto it = config.rbegin(); it != config.rend(); ++it)
    if (*it != 0) return *it;
  return 0;
}

void check_vgg_input(const std::string& name, const DataInfo& data, const VggConfig& config) {
  image_channels(name, data);
  const int64_t min_size = int64_t{1} << pools_in(config);
  if (data.sample_shape[1] < min_size || data.sample_shape[2] < min_size)
    throw UserError(name + ": input " + shape_text(data.sample_shape) + " is too small (its " +
                    std::to_string(pools_in(config)) + " max pools need at least " + std::to_string(min_size) + "x" +
                    std::to_string(min_size) + " pixels)");
}

}  // namespace

const VggConfig& vgg_config_a() {
  static const VggConfig config = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
  return config;
}

const VggConfig& vgg_config_d() {
  static const VggConfig config = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
  return config;
}

// ---- ImageNet VGG ----

OptionSchema<VggImpl::Options> VggImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("dropout", &Options::dropout, "Dropout probability before the 2nd and 3rd Linear.").range(0, 1);
  return s;
}

VggImpl::VggImpl(Options options_, const DataInfo& data, const VggConfig& config, bool batch_norm,
                 const std::string& model_name)
    : options(options_) {
  check_vgg_input(model_name, data, config);
  const int64_t classes = model_num_classes(model_name, options.num_classes, data);
  features = register_module("features", torch::nn::ModuleList());
  taps_ = make_vgg_layers(features, data.sample_shape[0], config, batch_norm);
  avgpool = register_module("avgpool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({7, 7})));
  classifier = register_module("classifier", torch::nn::ModuleList());
  classifier->push_back(nn::Linear(last_channels(config) * 7 * 7, 4096));
  classifier->push_back(torch::nn::ReLU());
  classifier->push_back(torch::nn::Dropout(options.dropout));
  classifier->push_back(nn::Linear(4096, 4096));
  classifier->push_back(torch::nn::ReLU());
  classifier->push_back(torch::nn::Dropout(options.dropout));
  classifier->push_back(nn::Linear(4096, classes));
  declare_taps({"stage1", "stage2", "stage3", "stage4", "features", "pooled", "logits"});
  detail::init_like_torchvision(*this);
}

torch::Tensor VggImpl::forward(const torch::Tensor& input) {
  auto x = forward_with_taps(features, input, taps_);
  x = tap_point("pooled", avgpool(x).flatten(1));
  return tap_point("logits", forward_sequence(*classifier, x));
}

// ---- CIFAR VGG ----

OptionSchema<VggCifarImpl::Options> VggCifarImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  return s;
}

VggCifarImpl::VggCifarImpl(Options options_, const DataInfo& data, const VggConfig& config,
                           const std::string& model_name)
    : options(options_) {
  check_vgg_input(model_name, data, config);
  const int64_t classes = model_num_classes(model_name, options.num_classes, data);
  features = register_module("features", torch::nn::ModuleList());
  taps_ = make_vgg_layers(features, data.sample_shape[0], config, /*batch_norm=*/true);
  const int64_t scale = int64_t{1} << pools_in(config);
  const int64_t flat = last_channels(config) * (data.sample_shape[1] / scale) * (data.sample_shape[2] / scale);
  classifier = register_module("classifier", nn::Linear(flat, classes));
  // The stages the configuration has (the plain `cnn` may have fewer than four pools).
  std::vector<std::string> taps;
  for (const auto& t : taps_) taps.emplace_back(t.second);
  taps.insert(taps.end(), {"pooled", "logits"});
  declare_taps(std::move(taps));
  detail::init_like_torchvision(*this);
}

torch::Tensor VggCifarImpl::forward(const torch::Tensor& input) {
  auto x = forward_with_taps(features, input, taps_);
  x = tap_point("pooled", x.flatten(1));
  return tap_point("logits", classifier(x));
}

}  // namespace shrink
