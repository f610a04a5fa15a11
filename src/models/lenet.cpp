#include "shrink/models/lenet.h"

#include "shrink/models/model_input.h"

#include <string>

namespace shrink {
OptionSchema<LeNet300Impl::Options> LeNet300Impl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  return s;
}

LeNet300Impl::LeNet300Impl(Options options_, const DataInfo& data) : options(options_) {
  int64_t in_features = 1;
  for (int64_t d : data.sample_shape) in_features *= d;
  if (data.sample_shape.empty() || in_features <= 0)
    throw UserError("lenet300: needs a non-empty input shape, got " + shape_text(data.sample_shape));
  const int64_t classes = model_num_classes("lenet300", options.num_classes, data);
  fc1 = register_module("fc1", nn::Linear(in_features, 300));
  fc2 = register_module("fc2", nn::Linear(300, 100));
  fc3 = register_module("fc3", nn::Linear(100, classes));
  declare_taps({"fc1", "fc2", "logits"});
}

torch::Tensor LeNet300Impl::forward(const torch::Tensor& input) {
  auto x = input.flatten(1);
  x = tap_point("fc1", torch::relu(fc1(x)));
  x = tap_point("fc2", torch::relu(fc2(x)));
  return tap_point("logits", fc3(x));
}

OptionSchema<LeNet5Impl::Options> LeNet5Impl::schema() {
  OptionSchema<Options> s;
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
  return s;
}

LeNet5Impl::LeNet5Impl(Options options_, const DataInfo& data) : options(options_) {
  if (data.sample_shape.size() != 3)
    throw UserError("lenet5: needs images [C, H, W], got input shape " + shape_text(data.sample_shape));
  const int64_t c = data.sample_shape[0], h = data.sample_shape[1], w = data.sample_shape[2];
  // conv 5x5 (no padding) -> pool 2 -> conv 5x5 -> pool 2, each pool rounding down.
  const int64_t h2 = ((h - 4) / 2 - 4) / 2, w2 = ((w - 4) / 2 - 4) / 2;
  if (c <= 0 || h - 4 < 2 || w - 4 < 2 || h2 <= 0 || w2 <= 0)
    throw UserError("lenet5: input " + shape_text(data.sample_shape) +
                    " is too small (needs at least 16x16 pixels)");
  const int64_t classes = model_num_classes("lenet5", options.num_classes, data);
  conv1 = register_module("conv1", nn::Conv2d(c, 20, 5));
  conv2 = register_module("conv2", nn::Conv2d(20, 50, 5));
  fc1 = register_module("fc1", nn::Linear(50 * h2 * w2, 500));
  fc2 = register_module("fc2", nn::Linear(500, classes));
  declare_taps({"conv1", "conv2", "fc1", "logits"});
}

torch::Tensor LeNet5Impl::forward(const torch::Tensor& input) {
  auto x = tap_point("conv1", torch::max_pool2d(conv1(input), 2));
  x = tap_point("conv2", torch::max_pool2d(conv2(x), 2));
  x = tap_point("fc1", torch::relu(fc1(x.flatten(1))));
  return tap_point("logits", fc2(x));
}

}  // namespace shrink
