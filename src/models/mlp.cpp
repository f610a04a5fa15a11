#include "shrink/models/mlp.h"

#include <fmt/format.h>

#include <string>

#include "shrink/core/error.h"
#include "shrink/core/rng.h"
#include "shrink/models/model_input.h"

namespace shrink {

namespace {

/// C*H*W of the data; UserError naming `model` when the shape is empty.
int64_t flat_features(const std::string& model, const DataInfo& data) {
  int64_t n = 1;
  for (int64_t d : data.sample_shape) n *= d;
  if (data.sample_shape.empty() || n <= 0)
    throw UserError(model + ": needs a non-empty input shape, got " + shape_text(data.sample_shape));
  return n;
}

void check_hidden(const std::string& model, const std::vector<int64_t>& hidden) {
  for (int64_t w : hidden)
    if (w <= 0)
      throw UserError(fmt::format("{}: hidden: widths must be positive (got [{}])", model, fmt::join(hidden, ", ")));
}

/// Widths of every layer: input, hidden..., classes.
std::vector<int64_t> layer_widths(const std::string& model, const std::vector<int64_t>& hidden, int64_t num_classes,
                                  const DataInfo& data) {
  check_hidden(model, hidden);
  std::vector<int64_t> widths{flat_features(model, data)};
  widths.insert(widths.end(), hidden.begin(), hidden.end());
  widths.push_back(model_num_classes(model, num_classes, data));
  return widths;
}

std::vector<std::string> mlp_taps(size_t hidden) {
  std::vector<std::string> taps;
  for (size_t i = 0; i < hidden; ++i) taps.push_back("fc" + std::to_string(i + 1));
  taps.push_back("features");
  taps.push_back("logits");
  return taps;
}

template <class Options>
void add_common_options(OptionSchema<Options>& s) {
  s.add("hidden", &Options::hidden, "Widths of the hidden layers (fc1, fc2, ...); [] for none.");
  s.add("dropout", &Options::dropout, "Dropout probability after each hidden ReLU.").range(0, 1);
  s.add("input_dropout", &Options::input_dropout, "Dropout probability on the flattened input.").range(0, 1);
  s.add("num_classes", &Options::num_classes, "Number of outputs (0 = the dataset's class count).").min(0);
}

/// The forward both MLPs share: flatten, input dropout, hidden layers with ReLU and dropout,
/// the output layer; `tap(name, x)` marks the model's taps (ModelImpl::tap_point).
template <class Layers, class Tap>
torch::Tensor mlp_forward(const torch::Tensor& input, Layers& layers, double input_dropout, double dropout,
                          bool training, const std::vector<std::string>& taps, Tap&& tap) {
  auto x = input.flatten(1);
  if (input_dropout > 0) x = torch::dropout(x, input_dropout, training);
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    x = tap(taps[i].c_str(), torch::relu(layers[i]->forward(x)));
    if (dropout > 0) x = torch::dropout(x, dropout, training);
  }
  x = tap("features", x);
  return tap("logits", layers.back()->forward(x));
}

}  // namespace

OptionSchema<MlpImpl::Options> MlpImpl::schema() {
  OptionSchema<Options> s;
  add_common_options(s);
  return s;
}

MlpImpl::MlpImpl(Options options_, const DataInfo& data) : options(std::move(options_)) {
  const auto widths = layer_widths("mlp", options.hidden, options.num_classes, data);
  for (size_t i = 0; i + 1 < widths.size(); ++i)
    layers.push_back(register_module("fc" + std::to_string(i + 1), nn::Linear(widths[i], widths[i + 1])));
  declare_taps(mlp_taps(options.hidden.size()));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& input) {
  return mlp_forward(input, layers, options.input_dropout, options.dropout, is_training(), tap_names(),
                     [this](const char* name, const torch::Tensor& x) { return tap_point(name, x); });
}

OptionSchema<HashedMlpImpl::Options> HashedMlpImpl::schema() {
  OptionSchema<Options> s;
  add_common_options(s);
  s.add("compression", &Options::compression,
        "Fraction of each layer's virtual weights that is stored (e.g. 0.125 = 1/8, 0.015625 = 1/64).")
      .range(0, 1);
  s.add("seed", &Options::seed, "Seed of the index and sign hashes (each layer mixes in its position).");
  return s;
}

HashedMlpImpl::HashedMlpImpl(Options options_, const DataInfo& data) : options(std::move(options_)) {
  if (!(options.compression > 0 && options.compression <= 1))
    throw UserError(fmt::format("hashed_mlp: compression must be in (0, 1] (got {})", options.compression));
  const auto widths = layer_widths("hashed_mlp", options.hidden, options.num_classes, data);
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    const auto seed = static_cast<int64_t>(mix64(mix64(static_cast<uint64_t>(options.seed)) ^ (i + 1)));
    auto layer_options = nn::HashedLinearOptions(widths[i], widths[i + 1]).compression(options.compression).seed(seed);
    layers.push_back(register_module("fc" + std::to_string(i + 1), nn::HashedLinear(layer_options)));
  }
  declare_taps(mlp_taps(options.hidden.size()));
}

torch::Tensor HashedMlpImpl::forward(const torch::Tensor& input) {
  return mlp_forward(input, layers, options.input_dropout, options.dropout, is_training(), tap_names(),
                     [this](const char* name, const torch::Tensor& x) { return tap_point(name, x); });
}

}  // namespace shrink
