#include "shrink/pruning/sensitivity.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "shrink/compression/method.h"
#include "shrink/core/error.h"
#include "shrink/data/loader.h"
#include "shrink/nn/conv.h"
#include "shrink/nn/linear.h"
#include "shrink/pruning/mask.h"
#include "shrink/train/checkpoint.h"

namespace fs = std::filesystem;

namespace shrink::pruning {

const char* criterion_name(SensitivityCriterion criterion) {
  switch (criterion) {
    case SensitivityCriterion::Magnitude: return "magnitude";
    case SensitivityCriterion::L1Filter: return "l1_filter";
  }
  return "?";
}

SensitivityCriterion parse_criterion(const std::string& name, const std::string& what) {
  if (name == "magnitude") return SensitivityCriterion::Magnitude;
  if (name == "l1_filter") return SensitivityCriterion::L1Filter;
  auto near = nearest_name(name, {"magnitude", "l1_filter"});
  throw UserError(what + ": unknown criterion '" + name + "'" + (near.empty() ? "" : " (did you mean '" + near + "'?)") +
                  "; expected magnitude or l1_filter");
}

void validate_levels(const std::vector<double>& levels, const std::string& what) {
  if (levels.empty()) throw UserError(what + ": no level given");
  for (size_t i = 0; i < levels.size(); ++i) {
    const double l = levels[i];
    if (!(l >= 0.0 && l < 1.0)) throw UserError(fmt::format("{}: level {:g} is outside [0, 1)", what, l));
    if (i > 0 && !(l > levels[i - 1]))
      throw UserError(fmt::format("{}: levels must be sorted and unique (got {:g} after {:g})", what, l, levels[i - 1]));
  }
}

std::vector<SensitivityLayer> sensitivity_layers(torch::nn::Module& model, const std::vector<std::string>& targets,
                                                 const std::string& what) {
  std::vector<SensitivityLayer> all;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* module = item.value().get();
    if (auto* linear = dynamic_cast<nn::LinearImpl*>(module)) {
      if (linear->composite()) continue;  // its inner layers are listed
      all.push_back({item.key(), linear->weight, linear->bias});
    } else if (auto* conv = dynamic_cast<nn::Conv2dImpl*>(module)) {
      if (conv->composite()) continue;
      all.push_back({item.key(), conv->weight, conv->bias});
    }
  }
  if (all.empty()) throw UserError("the model has no Shrink Conv2d or Linear layer to prune");
  std::vector<bool> used(targets.size(), false), chosen(all.size(), false);
  for (size_t l = 0; l < all.size(); ++l)
    for (size_t t = 0; t < targets.size(); ++t)
      if (glob_match(targets[t], all[l].name) || glob_match(targets[t], all[l].name + ".weight"))
        used[t] = chosen[l] = true;
  for (size_t t = 0; t < targets.size(); ++t) {
    if (used[t]) continue;
    std::string names;
    for (const auto& layer : all) names += (names.empty() ? "" : ", ") + layer.name;
    throw UserError(what + ": '" + targets[t] + "' matches no Conv2d or Linear layer; layers: " + names);
  }
  std::vector<SensitivityLayer> out;
  for (size_t l = 0; l < all.size(); ++l)
    if (chosen[l]) out.push_back(all[l]);
  return out;
}

torch::Tensor sensitivity_mask(const torch::Tensor& weight, SensitivityCriterion criterion, double level) {
  TORCH_CHECK(weight.dim() >= 1, "sensitivity_mask: weight has no dimension");
  if (criterion == SensitivityCriterion::Magnitude) return keep_largest(weight.detach().abs(), level);
  // One score per output filter (dim 0): the L1 norm of everything it reads.
  const int64_t filters = weight.size(0);
  auto norms = weight.detach().abs().reshape({filters, -1}).sum(1);
  auto keep = keep_largest(norms, level);
  std::vector<int64_t> shape(weight.dim(), 1);
  shape[0] = filters;
  return keep.reshape(shape).expand(weight.sizes()).contiguous();
}

namespace {

int64_t count_zeros(const torch::Tensor& t) { return t.detach().eq(0).sum().item<int64_t>(); }

/// The test batches an analysis evaluates: loaded once and kept when they fit in the budget.
class TestBatches {
 public:
  TestBatches(DataSourcePtr data, int64_t batch_size, int64_t workers, int64_t max_batches, torch::Device device,
              int64_t cache_bytes)
      : data_(std::move(data)), device_(device), max_batches_(max_batches), cache_bytes_(cache_bytes) {
    options_.batch_size = batch_size;
    options_.shuffle = false;
    options_.workers = workers;
  }

  template <class F>
  void for_each(F&& f) {
    if (cached_) {
      for (const auto& b : cache_) f(b.first, b.second);
      return;
    }
    const bool filling = !cache_tried_;
    cache_tried_ = true;
    int64_t bytes = 0;
    bool fits = filling;
    DataLoader loader(data_, options_);
    loader.start_epoch(0);
    int64_t seen = 0;
    while (max_batches_ == 0 || seen < max_batches_) {
      auto next = loader.next();
      if (!next) break;
      ++seen;
      auto inputs = next->inputs.to(device_), targets = next->targets.to(device_);
      f(inputs, targets);
      if (fits) {
        bytes += static_cast<int64_t>(inputs.nbytes() + targets.nbytes());
        if (bytes <= cache_bytes_) {
          cache_.emplace_back(inputs, targets);
        } else {
          fits = false;
          cache_.clear();
        }
      }
    }
    cached_ = fits;
  }

 private:
  DataSourcePtr data_;
  torch::Device device_;
  int64_t max_batches_, cache_bytes_;
  LoaderOptions options_;
  bool cached_ = false, cache_tried_ = false;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> cache_;
};

/// Loss and top-1/top-5 over the batches, like shrink::evaluate but over what `batches` yields.
SensitivityRow evaluate_batches(ModelImpl& model, TestBatches& batches) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double loss_sum = 0, top1 = 0, top5 = 0;
  int64_t n = 0;
  try {
    batches.for_each([&](const torch::Tensor& inputs, const torch::Tensor& targets) {
      auto logits = model.forward(inputs);
      loss_sum += torch::nn::functional::cross_entropy(
                      logits, targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .item<double>();
      const int64_t k = std::min<int64_t>(5, logits.size(1));
      auto hits = std::get<1>(logits.topk(k, 1)).eq(targets.unsqueeze(1));
      top1 += hits.select(1, 0).sum().item<double>();
      top5 += hits.any(1).sum().item<double>();
      n += targets.size(0);
    });
  } catch (...) {
    model.train(was_training);
    throw;
  }
  model.train(was_training);
  SensitivityRow r;
  r.examples = n;
  if (n > 0) {
    r.loss = loss_sum / static_cast<double>(n);
    r.top1 = 100.0 * top1 / static_cast<double>(n);
    r.top5 = 100.0 * top5 / static_cast<double>(n);
  }
  return r;
}

/// Puts a layer's saved weight and bias back when it goes out of scope (also on exceptions).
class RestoreLayer {
 public:
  RestoreLayer(const SensitivityLayer& layer, const torch::Tensor& weight, const torch::Tensor& bias)
      : layer_(layer), weight_(weight), bias_(bias) {}
  ~RestoreLayer() {
    torch::NoGradGuard no_grad;
    layer_.weight.copy_(weight_);
    if (bias_.defined()) layer_.bias.copy_(bias_);
  }
  RestoreLayer(const RestoreLayer&) = delete;
  RestoreLayer& operator=(const RestoreLayer&) = delete;

 private:
  const SensitivityLayer& layer_;
  torch::Tensor weight_, bias_;
};

}  // namespace

std::vector<SensitivityRow> run_sensitivity(Experiment& experiment, const SensitivityOptions& options,
                                            const SensitivityProgress& progress) {
  validate_levels(options.levels);
  if (options.max_batches < 0) throw UserError(fmt::format("max_batches must be >= 0 (got {})", options.max_batches));
  if (!experiment.model) throw UserError("sensitivity: the experiment has no model");
  if (!experiment.test_data) throw UserError("sensitivity: the experiment has no test split");
  auto layers = sensitivity_layers(*experiment.model, options.targets);
  const int64_t batch_size = options.batch_size > 0 ? options.batch_size : experiment.recipe.train.eval_batch_size;
  TestBatches batches(experiment.test_data, batch_size, experiment.data_options.workers, options.max_batches,
                      experiment.device, options.cache_bytes);
  const int64_t total = 1 + static_cast<int64_t>(layers.size() * options.levels.size());
  int64_t done = 0;
  std::vector<SensitivityRow> rows;
  rows.reserve(total);

  auto reference = evaluate_batches(*experiment.model, batches);
  reference.layer = kReferenceLayer;
  for (const auto& layer : layers) {
    reference.parameters += layer.weight.numel();
    reference.pruned += count_zeros(layer.weight);
  }
  rows.push_back(reference);
  if (progress) progress(rows.back(), ++done, total);

  for (const auto& layer : layers) {
    torch::Tensor saved_weight, saved_bias;
    {
      torch::NoGradGuard no_grad;
      saved_weight = layer.weight.detach().clone();
      if (layer.bias.defined()) saved_bias = layer.bias.detach().clone();
    }
    for (double level : options.levels) {
      RestoreLayer restore(layer, saved_weight, saved_bias);
      {
        torch::NoGradGuard no_grad;
        auto keep = sensitivity_mask(layer.weight, options.criterion, level);
        auto pruned = keep.eq(0);
        layer.weight.masked_fill_(pruned, 0.0);
        if (options.criterion == SensitivityCriterion::L1Filter && layer.bias.defined())
          layer.bias.masked_fill_(pruned.reshape({pruned.size(0), -1}).select(1, 0), 0.0);
      }
      auto row = evaluate_batches(*experiment.model, batches);
      row.layer = layer.name;
      row.parameters = layer.weight.numel();
      row.level = level;
      row.pruned = count_zeros(layer.weight);
      rows.push_back(row);
      if (progress) progress(rows.back(), ++done, total);
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Output

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void ensure_parent(const std::string& path) {
  auto parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw UserError("cannot create '" + parent.string() + "': " + ec.message());
}

/// Layers in order of first appearance, each with its rows sorted by level.
std::vector<std::pair<std::string, std::vector<const SensitivityRow*>>> by_layer(
    const std::vector<SensitivityRow>& rows) {
  std::vector<std::pair<std::string, std::vector<const SensitivityRow*>>> out;
  std::map<std::string, size_t> index;
  for (const auto& r : rows) {
    if (r.layer == kReferenceLayer) continue;
    auto it = index.find(r.layer);
    if (it == index.end()) {
      it = index.emplace(r.layer, out.size()).first;
      out.push_back({r.layer, {}});
    }
    out[it->second].second.push_back(&r);
  }
  for (auto& layer : out)
    std::stable_sort(layer.second.begin(), layer.second.end(),
                     [](const SensitivityRow* a, const SensitivityRow* b) { return a->level < b->level; });
  return out;
}

const SensitivityRow* reference_of(const std::vector<SensitivityRow>& rows) {
  for (const auto& r : rows)
    if (r.layer == kReferenceLayer) return &r;
  return nullptr;
}

std::string percent_label(double level) { return fmt::format("{:g}%", std::round(level * 1e6) / 1e4); }

}  // namespace

std::string sensitivity_csv(const std::vector<SensitivityRow>& rows) {
  std::string out = "layer,parameters,level,top1,top5,loss\n";
  for (const auto& r : rows)
    out += fmt::format("{},{},{:g},{:.4f},{:.4f},{:.6f}\n", csv_field(r.layer), r.parameters, r.level, r.top1, r.top5,
                       r.loss);
  return out;
}

void write_sensitivity_csv(const std::string& path, const std::vector<SensitivityRow>& rows) {
  ensure_parent(path);
  write_file_atomic(path, sensitivity_csv(rows));
}

std::string sensitivity_table(const std::vector<SensitivityRow>& rows) {
  std::string out;
  if (const auto* ref = reference_of(rows))
    out += fmt::format("reference (nothing pruned): top-1 {:.2f}%  top-5 {:.2f}%  loss {:.4f}  ({} test examples)\n",
                       ref->top1, ref->top5, ref->loss, ref->examples);
  auto layers = by_layer(rows);
  if (layers.empty()) return out;
  std::vector<double> levels;
  for (const auto& r : rows)
    if (r.layer != kReferenceLayer) levels.push_back(r.level);
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  size_t name_width = 5;
  for (const auto& l : layers) name_width = std::max(name_width, l.first.size());
  out += "top-1 (%) with one layer pruned to each sparsity:\n";
  out += fmt::format("{:<{}}  {:>10}", "layer", name_width, "weights");
  for (double level : levels) out += fmt::format("  {:>7}", percent_label(level));
  out += "\n";
  for (const auto& [name, layer_rows] : layers) {
    out += fmt::format("{:<{}}  {:>10}", name, name_width, layer_rows.front()->parameters);
    for (double level : levels) {
      auto it = std::find_if(layer_rows.begin(), layer_rows.end(),
                             [&](const SensitivityRow* r) { return r->level == level; });
      out += it == layer_rows.end() ? fmt::format("  {:>7}", "-") : fmt::format("  {:>7.2f}", (*it)->top1);
    }
    out += "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Plot

namespace {

/// A "nice" tick step (1, 2 or 5 times a power of ten) close to `raw`.
double nice_step(double raw) {
  if (!(raw > 0)) return 1.0;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / p;
  return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * p;
}

/// Tableau 10 colors, as BGR.
const cv::Scalar kPalette[] = {{180, 119, 31}, {14, 127, 255}, {44, 160, 44},   {40, 39, 214},  {189, 103, 148},
                               {75, 86, 140},  {194, 119, 227}, {127, 127, 127}, {34, 189, 188}, {207, 190, 23}};
constexpr int kPaletteSize = 10;

void draw_marker(cv::Mat& img, cv::Point p, int shape, const cv::Scalar& color) {
  const int r = 4;
  switch (shape % 4) {
    case 0: cv::circle(img, p, r, color, cv::FILLED, cv::LINE_AA); break;
    case 1: cv::rectangle(img, cv::Point(p.x - r, p.y - r), cv::Point(p.x + r, p.y + r), color, cv::FILLED, cv::LINE_AA); break;
    case 2: {
      std::vector<cv::Point> tri = {{p.x, p.y - r - 1}, {p.x - r - 1, p.y + r}, {p.x + r + 1, p.y + r}};
      cv::fillConvexPoly(img, tri, color, cv::LINE_AA);
      break;
    }
    default: {
      std::vector<cv::Point> dia = {{p.x, p.y - r - 1}, {p.x + r + 1, p.y}, {p.x, p.y + r + 1}, {p.x - r - 1, p.y}};
      cv::fillConvexPoly(img, dia, color, cv::LINE_AA);
    }
  }
}

void dashed_line(cv::Mat& img, cv::Point a, cv::Point b, const cv::Scalar& color, int dash = 8) {
  const double len = std::hypot(b.x - a.x, b.y - a.y);
  for (double t = 0; t < len; t += 2 * dash) {
    const double t1 = std::min(len, t + dash);
    cv::Point p(a.x + static_cast<int>((b.x - a.x) * t / len), a.y + static_cast<int>((b.y - a.y) * t / len));
    cv::Point q(a.x + static_cast<int>((b.x - a.x) * t1 / len), a.y + static_cast<int>((b.y - a.y) * t1 / len));
    cv::line(img, p, q, color, 1, cv::LINE_AA);
  }
}

void text(cv::Mat& img, const std::string& s, cv::Point origin, double scale = 0.45,
          const cv::Scalar& color = {30, 30, 30}, int thickness = 1) {
  cv::putText(img, s, origin, cv::FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv::LINE_AA);
}

cv::Size text_size(const std::string& s, double scale = 0.45, int thickness = 1) {
  int baseline = 0;
  return cv::getTextSize(s, cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &baseline);
}

}  // namespace

void write_sensitivity_plot(const std::string& path, const std::vector<SensitivityRow>& rows,
                            const std::string& title) {
  const auto layers = by_layer(rows);
  const auto* ref = reference_of(rows);
  TORCH_CHECK(!layers.empty() || ref, "write_sensitivity_plot: no rows");

  // Layout: plot area on the left, legend on the right; tall enough for every legend entry.
  const int legend_row = 20;
  int legend_text = 0;
  for (const auto& l : layers) legend_text = std::max(legend_text, text_size(l.first).width);
  if (ref) legend_text = std::max(legend_text, text_size("reference").width);
  const int legend_width = 50 + legend_text + 20;
  const int entries = static_cast<int>(layers.size()) + (ref ? 1 : 0);
  const int plot_left = 80, plot_top = 50, plot_width = 640, plot_height = 420;
  const int width = plot_left + plot_width + 30 + legend_width;
  const int height = std::max(plot_top + plot_height + 70, plot_top + 20 + entries * legend_row + 20);
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  const int plot_right = plot_left + plot_width, plot_bottom = plot_top + plot_height;

  // Y range: whole ticks around every top-1, at most 100.
  double lo = 100, hi = 0;
  for (const auto& r : rows) {
    lo = std::min(lo, r.top1);
    hi = std::max(hi, r.top1);
  }
  if (hi - lo < 1.0) {
    lo -= 0.5;
    hi += 0.5;
  }
  const double y_step = nice_step((hi - lo) / 6.0);
  double y_lo = std::floor(lo / y_step) * y_step, y_hi = std::ceil(hi / y_step) * y_step;
  y_lo = std::max(0.0, y_lo);
  y_hi = std::min(100.0, std::max(y_hi, y_lo + y_step));
  auto to_px = [&](double level, double top1) {
    return cv::Point(plot_left + static_cast<int>(std::lround(level * plot_width)),
                     plot_bottom - static_cast<int>(std::lround((top1 - y_lo) / (y_hi - y_lo) * plot_height)));
  };

  const cv::Scalar grid(225, 225, 225), axis(40, 40, 40);
  // Grid and ticks: x every 10% sparsity, y every y_step.
  for (int i = 0; i <= 10; ++i) {
    const int x = plot_left + i * plot_width / 10;
    cv::line(img, {x, plot_top}, {x, plot_bottom}, grid, 1);
    cv::line(img, {x, plot_bottom}, {x, plot_bottom + 5}, axis, 1);
    const auto label = std::to_string(i * 10);
    text(img, label, {x - text_size(label).width / 2, plot_bottom + 20});
  }
  for (int i = 0;; ++i) {
    const double v = y_lo + i * y_step;
    if (v > y_hi + 1e-9) break;
    const int y = to_px(0, v).y;
    cv::line(img, {plot_left, y}, {plot_right, y}, grid, 1);
    cv::line(img, {plot_left - 5, y}, {plot_left, y}, axis, 1);
    const auto label = fmt::format("{:g}", std::round(v * 1e6) / 1e6);
    const auto size = text_size(label);
    text(img, label, {plot_left - 9 - size.width, y + size.height / 2});
  }
  cv::rectangle(img, cv::Point(plot_left, plot_top), cv::Point(plot_right, plot_bottom), axis, 1);

  // Axis labels and title.
  const std::string x_label = "sparsity of the pruned layer (%)";
  text(img, x_label, {plot_left + (plot_width - text_size(x_label, 0.5).width) / 2, plot_bottom + 48}, 0.5);
  {
    const std::string y_label = "top-1 accuracy (%)";
    const auto size = text_size(y_label, 0.5);
    cv::Mat label(size.height + 8, size.width + 4, CV_8UC3, cv::Scalar(255, 255, 255));
    text(label, y_label, {2, size.height + 2}, 0.5);
    cv::Mat rotated;
    cv::rotate(label, rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int y0 = std::max(0, plot_top + (plot_height - rotated.rows) / 2);
    if (y0 + rotated.rows <= img.rows && 10 + rotated.cols <= img.cols)
      rotated.copyTo(img(cv::Rect(10, y0, rotated.cols, rotated.rows)));
  }
  const std::string heading = title.empty() ? "Pruning sensitivity: top-1 with one layer pruned" : title;
  text(img, heading, {std::max(5, plot_left + (plot_width - text_size(heading, 0.6).width) / 2), 30}, 0.6,
       {0, 0, 0});

  // Data: the reference as a dashed line, then one polyline per layer.
  int legend_y = plot_top + 20;
  const int legend_x = plot_right + 30;
  if (ref) {
    const int y = to_px(0, ref->top1).y;
    dashed_line(img, {plot_left, y}, {plot_right, y}, {90, 90, 90});
    dashed_line(img, {legend_x, legend_y - 4}, {legend_x + 34, legend_y - 4}, {90, 90, 90}, 5);
    text(img, "reference", {legend_x + 44, legend_y});
    legend_y += legend_row;
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& color = kPalette[i % kPaletteSize];
    const int marker = static_cast<int>(i / kPaletteSize);
    std::vector<cv::Point> points;
    if (ref && layers[i].second.front()->level > 0) points.push_back(to_px(0, ref->top1));
    for (const auto* r : layers[i].second) points.push_back(to_px(r->level, r->top1));
    for (size_t k = 1; k < points.size(); ++k) cv::line(img, points[k - 1], points[k], color, 2, cv::LINE_AA);
    for (const auto* r : layers[i].second) draw_marker(img, to_px(r->level, r->top1), marker, color);
    cv::line(img, {legend_x, legend_y - 4}, {legend_x + 34, legend_y - 4}, color, 2, cv::LINE_AA);
    draw_marker(img, {legend_x + 17, legend_y - 4}, marker, color);
    text(img, layers[i].first, {legend_x + 44, legend_y});
    legend_y += legend_row;
  }

  std::vector<uchar> encoded;
  if (!cv::imencode(".png", img, encoded)) throw UserError("cannot encode the sensitivity plot for '" + path + "'");
  ensure_parent(path);
  write_file_atomic(path, std::string(encoded.begin(), encoded.end()));
}

}  // namespace shrink::pruning
