#include "shrink/models/alexnet.h"

#include <string>

#include "shrink/core/error.h"
#include "shrink/models/model_input.h"

namespace shrink {

OptionSchema<AlexNetImpl::Options> AlexNetImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("dropout", &Options::dropout, "Dropout probability before the 1st and 2nd Linear.").range(0, 1);
  return s;
}

AlexNetImpl::AlexNetImpl(Options options_, const DataInfo& data) : options(options_) {
  image_channels("alexnet", data);
  // Spatial size through conv 11/4 pad 2 and three 3/2 pools (the other convs keep the size).
  for (int i = 1; i <= 2; ++i) {
    int64_t s = detail::conv_out_size(data.sample_shape[i], 11, 4, 2);
    for (int pool = 0; pool < 3; ++pool) s = detail::conv_out_size(s, 3, 2, 0);
    if (s < 1)
      throw UserError("alexnet: input " + shape_text(data.sample_shape) +
                      " is too small (needs at least 63x63 pixels)");
  }
  const int64_t classes = model_num_classes("alexnet", options.num_classes, data);
  using torch::nn::MaxPool2d;
  using torch::nn::MaxPool2dOptions;
  using torch::nn::ReLU;
  features = register_module("features", torch::nn::ModuleList());
  features->push_back(nn::Conv2d(nn::Conv2dOptions(data.sample_shape[0], 64, 11).stride(4).padding(2)));  // 0
  features->push_back(ReLU());
  features->push_back(MaxPool2d(MaxPool2dOptions(3).stride(2)));
  features->push_back(nn::Conv2d(nn::Conv2dOptions(64, 192, 5).padding(2)));  // 3
  features->push_back(ReLU());
  features->push_back(MaxPool2d(MaxPool2dOptions(3).stride(2)));
  features->push_back(nn::Conv2d(nn::Conv2dOptions(192, 384, 3).padding(1)));  // 6
  features->push_back(ReLU());
  features->push_back(nn::Conv2d(nn::Conv2dOptions(384, 256, 3).padding(1)));  // 8
  features->push_back(ReLU());
  features->push_back(nn::Conv2d(nn::Conv2dOptions(256, 256, 3).padding(1)));  // 10
  features->push_back(ReLU());
  features->push_back(MaxPool2d(MaxPool2dOptions(3).stride(2)));
  avgpool = register_module("avgpool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({6, 6})));
  classifier = register_module("classifier", torch::nn::ModuleList());
  classifier->push_back(torch::nn::Dropout(options.dropout));
  classifier->push_back(nn::Linear(256 * 6 * 6, 4096));  // 1
  classifier->push_back(ReLU());
  classifier->push_back(torch::nn::Dropout(options.dropout));
  classifier->push_back(nn::Linear(4096, 4096));  // 4
  classifier->push_back(ReLU());
  classifier->push_back(nn::Linear(4096, classes));  // 6
  declare_taps({"features", "pooled", "logits"});
}

torch::Tensor AlexNetImpl::forward(const torch::Tensor& input) {
  auto x = tap_point("features", forward_sequence(*features, input));
  x = tap_point("pooled", avgpool(x).flatten(1));
  return tap_point("logits", forward_sequence(*classifier, x));
}

}  // namespace shrink
