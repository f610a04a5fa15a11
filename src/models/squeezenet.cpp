#include "shrink/models/squeezenet.h"

#include <string>

#include "shrink/core/error.h"
#include "shrink/models/model_input.h"

namespace shrink {

OptionSchema<SqueezeNetImpl::Options> SqueezeNetImpl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  s.add("dropout", &Options::dropout, "Dropout probability before the final 1x1 conv.").range(0, 1);
  return s;
}

SqueezeNetImpl::SqueezeNetImpl(Options options_, const DataInfo& data, bool cifar_stem, const std::string& model_name)
    : options(options_) {
  image_channels(model_name, data);
  // Spatial size after the stem and the three pools; each pool needs at least 3 pixels.
  const auto trunk_size = [cifar_stem](int64_t s) {
    if (!cifar_stem) s = detail::conv_out_size(s, 3, 2, 0);
    for (int pool = 0; pool < 3; ++pool) s = detail::conv_out_size(s, 3, 2, 0, /*ceil_mode=*/true);
    return s;
  };
  if (trunk_size(data.sample_shape[1]) < 1 || trunk_size(data.sample_shape[2]) < 1) {
    int64_t min_size = 1;
    while (trunk_size(min_size) < 1) ++min_size;
    throw UserError(model_name + ": input " + shape_text(data.sample_shape) +
                    " is too small (needs at least " + std::to_string(min_size) + "x" + std::to_string(min_size) +
                    " pixels)");
  }
  const int64_t classes = model_num_classes(model_name, options.num_classes, data);
  const auto pool = [] { return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).ceil_mode(true)); };
  features = register_module("features", torch::nn::ModuleList());
  features->push_back(cifar_stem ? nn::Conv2d(nn::Conv2dOptions(data.sample_shape[0], 64, 3).padding(1))
                                 : nn::Conv2d(nn::Conv2dOptions(data.sample_shape[0], 64, 3).stride(2)));
  features->push_back(torch::nn::ReLU());
  features->push_back(pool());
  features->push_back(Fire(FireOptions(64, 16, 64, 64)));  // 3
  features->push_back(Fire(FireOptions(128, 16, 64, 64)));
  features->push_back(pool());
  features->push_back(Fire(FireOptions(128, 32, 128, 128)));  // 6
  features->push_back(Fire(FireOptions(256, 32, 128, 128)));
  features->push_back(pool());
  features->push_back(Fire(FireOptions(256, 48, 192, 192)));  // 9
  features->push_back(Fire(FireOptions(384, 48, 192, 192)));
  features->push_back(Fire(FireOptions(384, 64, 256, 256)));
  features->push_back(Fire(FireOptions(512, 64, 256, 256)));  // 12
  classifier = register_module("classifier", torch::nn::ModuleList());
  nn::Conv2d final_conv(512, classes, 1);
  classifier->push_back(torch::nn::Dropout(options.dropout));
  classifier->push_back(final_conv);
  classifier->push_back(torch::nn::ReLU());
  classifier->push_back(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({1, 1})));
  declare_taps({"features", "logits"});

  // torchvision: kaiming_uniform_ (a = 0, fan_in) for every conv but the final one, N(0, 0.01) there.
  torch::NoGradGuard no_grad;
  for (const auto& m : modules(/*include_self=*/false)) {
    auto* conv = m->as<nn::Conv2dImpl>();
    if (!conv) continue;
    if (conv == final_conv.get())
      conv->weight.normal_(0.0, 0.01);
    else
      torch::nn::init::kaiming_uniform_(conv->weight);
    if (conv->bias.defined()) conv->bias.zero_();
  }
}

torch::Tensor SqueezeNetImpl::forward(const torch::Tensor& input) {
  auto x = tap_point("features", forward_sequence(*features, input));
  return tap_point("logits", forward_sequence(*classifier, x).flatten(1));
}

}  // namespace shrink
