#include "shrink/train/recipe.h"

#include "shrink/core/compat.h"

namespace shrink {

OptionSchema<TrainConfig> TrainConfig::schema() {
  OptionSchema<TrainConfig> s;
  s.add("epochs", &TrainConfig::epochs, "Training length in epochs (fractional allowed).").range(0.0, 1e6);
  s.add("batch_size", &TrainConfig::batch_size, "Training mini-batch size.").range(1, 1 << 20);
  s.add("eval_batch_size", &TrainConfig::eval_batch_size, "Evaluation batch size.").range(1, 1 << 20);
  s.add("drop_last", &TrainConfig::drop_last, "Drop the last incomplete training batch of each epoch.");
  s.add("label_smoothing", &TrainConfig::label_smoothing, "Label smoothing of the cross-entropy loss.").range(0, 1);
  s.add("grad_clip_norm", &TrainConfig::grad_clip_norm, "Clip the global gradient L2 norm to this (0: off).").min(0);
  s.add("eval_every", &TrainConfig::eval_every, "Evaluate on the test split every N epochs (and after the last).")
      .range(1, 1e9);
  s.add("progress", &TrainConfig::progress, "Per-step progress bar: auto (on a terminal), bar (always), plain or none (no bar; epoch lines are always logged).")
      .choices({"auto", "bar", "plain", "none"});
  return s;
}

const std::vector<std::string>& Recipe::top_level_keys() {
  static const std::vector<std::string> keys = {"name",  "seed",        "device",    "threads", "output",
                                                "data",  "model",       "train",     "compression",
                                                "callbacks"};
  return keys;
}

std::vector<OptionDoc> Recipe::top_level_docs() {
  return {
      {"name", "string", "experiment", "Experiment name; the default run directory is runs/<name>."},
      {"seed", "int", "0", "Seed for weight initialization, data order and every random choice."},
      {"device", "string", "cpu", "cpu, cuda or cuda:N."},
      {"threads", "int", "0", "CPU threads for LibTorch (at::set_num_threads); 0: every core."},
      {"output", "string", "runs/<name>", "Run directory. An existing non-empty one gets a -2, -3, ... suffix."},
      {"base", "string or list", "[]", "Files from configs/ merged in order below this recipe (the recipe wins)."},
      {"data", "map", "(required)", "Dataset: `name` and its options (see `shrink list dataset NAME`)."},
      {"model", "map", "(required)", "Model: `name` and its options (see `shrink list model NAME`)."},
      {"train", "map", "{}", "Training loop options (below)."},
      {"compression", "list", "[]", "Compression methods in the order they act (see `shrink list method NAME`)."},
      {"callbacks", "list", "[]", "Extra callbacks by `name` (see `shrink list callback`)."},
  };
}

namespace {
std::vector<ConfigNode> list_of_maps(const ConfigNode& root, const char* key, const char* required_key) {
  std::vector<ConfigNode> out;
  auto node = root.get(key);
  if (!node.valid() || node.is_null()) return out;
  if (!node.is_sequence()) node.fail(std::string("expected a list of entries, each a map with '") + required_key + "'");
  for (size_t i = 0; i < node.size(); ++i) {
    auto entry = node.at(i);
    if (!entry.is_map()) entry.fail(std::string("expected a map with '") + required_key + "'");
    entry[required_key];  // required: fails with the position when missing
    out.push_back(entry);
  }
  return out;
}
}  // namespace

Recipe Recipe::parse(const ConfigNode& root) {
  if (!root.is_map()) root.fail("a recipe must be a map of sections");
  root.check_keys(top_level_keys());
  Recipe r;
  r.root = root;
  r.name = root.get_or<std::string>("name", r.name);
  r.seed = root.get_or<int64_t>("seed", r.seed);
  if (r.seed < 0) root["seed"].fail("must be >= 0 (got " + root["seed"].text() + ")");
  r.device = root.get_or<std::string>("device", r.device);
  if (root.has("device")) {
    try {
      compat::parse_device(r.device);
    } catch (const UserError& e) {
      root["device"].fail(e.what());
    }
  }
  r.threads = root.get_or<int64_t>("threads", r.threads);
  if (r.threads < 0 || r.threads > 1024) root["threads"].fail("must be in [0, 1024] (got " + root["threads"].text() + ")");
  r.output = root.get_or<std::string>("output", "runs/" + r.name);
  if (r.output.empty()) root["output"].fail("must not be empty");
  r.data = root["data"];
  if (!r.data.is_map()) r.data.fail("expected a map with 'name'");
  r.data["name"];
  r.model = root["model"];
  if (!r.model.is_map()) r.model.fail("expected a map with 'name'");
  r.model["name"];

  auto train = root.get("train");
  TrainConfig::schema().parse_into(train, r.train, {"optimizer", "lr_schedule", "param_groups", "stages"});
  if (train.valid() && !train.is_null()) {
    r.train.optimizer = train.get("optimizer");
    r.train.lr_schedule = train.get("lr_schedule");
    auto groups = train.get("param_groups");
    if (groups.valid() && !groups.is_null()) {
      if (!groups.is_sequence()) groups.fail("expected a list of {match, weight_decay, lr_scale}");
      for (size_t i = 0; i < groups.size(); ++i) {
        auto g = groups.at(i);
        if (!g.is_map()) g.fail("expected a map with 'match'");
        g.check_keys({"match", "weight_decay", "lr_scale"});
        ParamGroupConfig pg;
        pg.where = g;
        pg.match = g["match"].as<std::vector<std::string>>();
        pg.weight_decay = g.get_or<double>("weight_decay", -1);
        if (g.has("weight_decay") && pg.weight_decay < 0) g["weight_decay"].fail("must be >= 0");
        pg.lr_scale = g.get_or<double>("lr_scale", 1.0);
        if (pg.lr_scale < 0) g["lr_scale"].fail("must be >= 0");
        r.train.param_groups.push_back(pg);
      }
    }
  }
  r.compression = list_of_maps(root, "compression", "method");
  r.callbacks = list_of_maps(root, "callbacks", "name");
  return r;
}

}  // namespace shrink
