#include "shrink/train/optim.h"

#include <cmath>

#include "shrink/compression/method.h"  // glob_match

namespace shrink {

namespace {

struct SgdConfig {
  double lr = 0.1, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
  static OptionSchema<SgdConfig> schema() {
    OptionSchema<SgdConfig> s;
    s.add("lr", &SgdConfig::lr, "Learning rate.").min(0);
    s.add("momentum", &SgdConfig::momentum, "Momentum factor.").range(0, 1);
    s.add("dampening", &SgdConfig::dampening, "Dampening for momentum.").range(0, 1);
    s.add("nesterov", &SgdConfig::nesterov, "Nesterov momentum (needs momentum > 0, dampening 0).");
    s.add("weight_decay", &SgdConfig::weight_decay, "L2 weight decay.").min(0);
    return s;
  }
};

struct AdamConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool amsgrad = false;
  static OptionSchema<AdamConfig> schema(double default_wd) {
    OptionSchema<AdamConfig> s;
    s.add("lr", &AdamConfig::lr, "Learning rate.").min(0);
    s.add("beta1", &AdamConfig::beta1, "First-moment decay.").range(0, 1);
    s.add("beta2", &AdamConfig::beta2, "Second-moment decay.").range(0, 1);
    s.add("eps", &AdamConfig::eps, "Denominator epsilon.").min(0);
    s.add("weight_decay", &AdamConfig::weight_decay,
          default_wd > 0 ? "Decoupled weight decay (default 0.01)." : "L2 weight decay.")
        .min(0);
    s.add("amsgrad", &AdamConfig::amsgrad, "AMSGrad variant.");
    return s;
  }
};

const std::vector<std::string> kOptimizerExtra = {"name"};

template <class Opt, class OptOptions>
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                        std::unique_ptr<torch::optim::OptimizerOptions> defaults) {
  return std::make_unique<Opt>(std::move(groups), static_cast<OptOptions&>(*defaults));
}

std::unique_ptr<torch::optim::OptimizerOptions> adam_like_options(const ConfigNode& node, bool decoupled) {
  AdamConfig c;
  if (decoupled) c.weight_decay = 0.01;
  AdamConfig::schema(decoupled ? 0.01 : 0).parse_into(node, c, kOptimizerExtra);
  for (const char* key : {"beta1", "beta2"})
    if (node.has(key) && node[key].as<double>() >= 1) node[key].fail("must be below 1 (got " + node[key].text() + ")");
  if (decoupled) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(c.lr);
    o->betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weight_decay).amsgrad(c.amsgrad);
    return o;
  }
  auto o = std::make_unique<torch::optim::AdamOptions>(c.lr);
  o->betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weight_decay).amsgrad(c.amsgrad);
  return o;
}

}  // namespace

double get_weight_decay(const torch::optim::OptimizerOptions& options) {
  if (auto* o = dynamic_cast<const torch::optim::SGDOptions*>(&options)) return o->weight_decay();
  if (auto* o = dynamic_cast<const torch::optim::AdamOptions*>(&options)) return o->weight_decay();
  if (auto* o = dynamic_cast<const torch::optim::AdamWOptions*>(&options)) return o->weight_decay();
  return 0.0;
}

void set_weight_decay(torch::optim::OptimizerOptions& options, double value) {
  if (auto* o = dynamic_cast<torch::optim::SGDOptions*>(&options)) o->weight_decay(value);
  else if (auto* o = dynamic_cast<torch::optim::AdamOptions*>(&options)) o->weight_decay(value);
  else if (auto* o = dynamic_cast<torch::optim::AdamWOptions*>(&options)) o->weight_decay(value);
  else throw UserError("this optimizer has no weight_decay option for parameter groups");
}

Registry<OptimizerBuilder>& optimizer_registry() {
  static Registry<OptimizerBuilder>* registry = [] {
    auto* r = new Registry<OptimizerBuilder>("optimizer");
    r->add({"sgd", "Stochastic gradient descent with momentum, Nesterov and weight decay",
            {[](const ConfigNode& node) -> std::unique_ptr<torch::optim::OptimizerOptions> {
               SgdConfig c;
               SgdConfig::schema().parse_into(node, c, kOptimizerExtra);
               if (c.nesterov && (c.momentum <= 0 || c.dampening != 0))
                 node["nesterov"].fail("Nesterov momentum needs momentum > 0 and dampening 0");
               auto o = std::make_unique<torch::optim::SGDOptions>(c.lr);
               o->momentum(c.momentum).dampening(c.dampening).nesterov(c.nesterov).weight_decay(c.weight_decay);
               return o;
             },
             make_optimizer<torch::optim::SGD, torch::optim::SGDOptions>},
            SgdConfig::schema().docs()});
    r->add({"adam", "Adam (L2 weight decay added to the gradient)",
            {[](const ConfigNode& node) { return adam_like_options(node, false); },
             make_optimizer<torch::optim::Adam, torch::optim::AdamOptions>},
            AdamConfig::schema(0).docs()});
    r->add({"adamw", "AdamW (decoupled weight decay)",
            {[](const ConfigNode& node) { return adam_like_options(node, true); },
             make_optimizer<torch::optim::AdamW, torch::optim::AdamWOptions>},
            [] {
              auto docs = AdamConfig::schema(0.01).docs();
              for (auto& d : docs)
                if (d.name == "weight_decay") d.default_value = "0.01";
              return docs;
            }()});
    return r;
  }();
  return *registry;
}

BuiltOptimizer build_optimizer(const ModelPtr& model, const TrainConfig& train,
                               const std::vector<std::pair<std::string, torch::Tensor>>& extra) {
  const auto& node = train.optimizer;
  std::string name = "sgd";
  if (node.valid() && !node.is_null()) {
    if (!node.is_map()) node.fail("expected a map with 'name' and the optimizer's options");
    name = node["name"].as<std::string>();
  }
  const auto& builder = (node.valid() && node.has("name") ? optimizer_registry().get(name, node["name"])
                                                           : optimizer_registry().get(name))
                            .factory;
  auto defaults = builder.options(node);

  // Each parameter joins the first group whose patterns match it; the rest form the default group.
  std::vector<std::vector<torch::Tensor>> members(train.param_groups.size() + 1);
  std::vector<std::pair<std::string, torch::Tensor>> trainable;
  for (const auto& item : model->named_parameters()) trainable.emplace_back(item.key(), item.value());
  trainable.insert(trainable.end(), extra.begin(), extra.end());
  for (const auto& [name, tensor] : trainable) {
    if (!tensor.requires_grad()) continue;
    size_t g = train.param_groups.size();
    for (size_t i = 0; i < train.param_groups.size() && g == train.param_groups.size(); ++i)
      for (const auto& pattern : train.param_groups[i].match)
        if (glob_match(pattern, name)) {
          g = i;
          break;
        }
    members[g].push_back(tensor);
  }
  for (size_t i = 0; i < train.param_groups.size(); ++i)
    if (members[i].empty()) {
      const auto& where = train.param_groups[i].where;
      if (where.valid()) where["match"].fail("matches no trainable parameter of the model");
      throw UserError("train.param_groups[" + std::to_string(i) + "] matches no trainable parameter");
    }
  BuiltOptimizer out;
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i].empty()) continue;
    auto options = defaults->clone();
    std::string label = "default";
    if (i < train.param_groups.size()) {
      const auto& pg = train.param_groups[i];
      if (pg.weight_decay >= 0) set_weight_decay(*options, pg.weight_decay);
      options->set_lr(options->get_lr() * pg.lr_scale);
      label = "param_groups[" + std::to_string(i) + "]";
    }
    out.base_lrs.push_back(options->get_lr());
    out.group_names.push_back(label + " (" + std::to_string(members[i].size()) + " tensors, lr " +
                              detail::format_value(options->get_lr()) + ", weight_decay " +
                              detail::format_value(get_weight_decay(*options)) + ")");
    groups.emplace_back(members[i], std::move(options));
  }
  out.optimizer = builder.make(std::move(groups), std::move(defaults));
  return out;
}

// ---------------------------------------------------------------------------------------------
// LR schedules

namespace {

struct Warmup {
  double warmup_epochs = 0.0;
  double warmup_start_factor = 0.01;
  double operator()(int64_t step, int64_t steps_per_epoch) const {
    double w = warmup_epochs * steps_per_epoch;
    if (w <= 0 || step >= w) return 1.0;
    return warmup_start_factor + (1.0 - warmup_start_factor) * (step / w);
  }
};

template <class C>
void add_warmup(OptionSchema<C>& s) {
  s.add("warmup_epochs", static_cast<double C::*>(&C::warmup_epochs), "Linear warmup length in epochs (fractional allowed).").min(0);
  s.add("warmup_start_factor", static_cast<double C::*>(&C::warmup_start_factor), "LR factor at the first warmup step.").range(0, 1);
}

struct ConstantConfig : Warmup {};
struct StepConfig : Warmup {
  int64_t step_size = 30;
  double gamma = 0.1;
};
struct MultiStepConfig : Warmup {
  std::vector<int64_t> milestones;
  double gamma = 0.1;
};
struct CosineConfig : Warmup {
  double min_factor = 0.0;
};

OptionSchema<ConstantConfig> constant_schema() {
  OptionSchema<ConstantConfig> s;
  add_warmup(s);
  return s;
}
OptionSchema<StepConfig> step_schema() {
  OptionSchema<StepConfig> s;
  s.add("step_size", &StepConfig::step_size, "Multiply the lr by gamma every step_size epochs.").min(1);
  s.add("gamma", &StepConfig::gamma, "Decay factor.").range(0, 1);
  add_warmup(s);
  return s;
}
OptionSchema<MultiStepConfig> multistep_schema() {
  OptionSchema<MultiStepConfig> s;
  s.add("milestones", &MultiStepConfig::milestones, "Epochs at which the lr is multiplied by gamma.");
  s.add("gamma", &MultiStepConfig::gamma, "Decay factor.").range(0, 1);
  add_warmup(s);
  return s;
}
OptionSchema<CosineConfig> cosine_schema() {
  OptionSchema<CosineConfig> s;
  s.add("min_factor", &CosineConfig::min_factor, "Final lr as a fraction of the base lr.").range(0, 1);
  add_warmup(s);
  return s;
}

template <class C, class F>
class FunctionSchedule : public LrSchedule {
 public:
  FunctionSchedule(C config, F f) : config_(std::move(config)), f_(f) {}
  double factor(int64_t step, int64_t spe, int64_t total) const override {
    return config_(step, spe) * f_(config_, step, spe, total);
  }

 private:
  C config_;
  F f_;
};

template <class C, class F>
std::unique_ptr<LrSchedule> make_schedule(C config, F f) {
  return std::make_unique<FunctionSchedule<C, F>>(std::move(config), f);
}

int64_t epoch_of(int64_t step, int64_t spe) { return spe > 0 ? step / spe : 0; }

}  // namespace

Registry<ScheduleFactory>& schedule_registry() {
  static Registry<ScheduleFactory>* registry = [] {
    auto* r = new Registry<ScheduleFactory>("lr schedule");
    r->add({"constant", "Constant learning rate (after optional warmup)",
            [](const ConfigNode& n) {
              return make_schedule(constant_schema().parse(n, {"name"}),
                                   [](const ConstantConfig&, int64_t, int64_t, int64_t) { return 1.0; });
            },
            constant_schema().docs()});
    r->add({"step", "Multiply by gamma every step_size epochs",
            [](const ConfigNode& n) {
              return make_schedule(step_schema().parse(n, {"name"}),
                                   [](const StepConfig& c, int64_t step, int64_t spe, int64_t) {
                                     return std::pow(c.gamma, static_cast<double>(epoch_of(step, spe) / c.step_size));
                                   });
            },
            step_schema().docs()});
    r->add({"multistep", "Multiply by gamma at each milestone epoch",
            [](const ConfigNode& n) {
              auto c = multistep_schema().parse(n, {"name"});
              for (size_t i = 0; i < c.milestones.size(); ++i)
                if (c.milestones[i] < 0 || (i > 0 && c.milestones[i] <= c.milestones[i - 1]))
                  n["milestones"].fail("milestones must be increasing non-negative epochs");
              return make_schedule(c, [](const MultiStepConfig& c, int64_t step, int64_t spe, int64_t) {
                int passed = 0;
                for (auto m : c.milestones) passed += epoch_of(step, spe) >= m;
                return std::pow(c.gamma, passed);
              });
            },
            multistep_schema().docs()});
    r->add({"cosine", "Cosine annealing from the base lr to min_factor * base lr over training",
            [](const ConfigNode& n) {
              return make_schedule(cosine_schema().parse(n, {"name"}),
                                   [](const CosineConfig& c, int64_t step, int64_t spe, int64_t total) {
                                     double w = c.warmup_epochs * spe;
                                     double span = std::max(1.0, total - w);
                                     double t = std::clamp((step - w) / span, 0.0, 1.0);
                                     return c.min_factor + (1 - c.min_factor) * 0.5 * (1 + std::cos(M_PI * t));
                                   });
            },
            cosine_schema().docs()});
    return r;
  }();
  return *registry;
}

std::unique_ptr<LrSchedule> build_schedule(const ConfigNode& node) {
  if (!node.valid() || node.is_null()) return schedule_registry().get("constant").factory(ConfigNode());
  if (!node.is_map()) node.fail("expected a map with 'name' and the schedule's options");
  auto name = node["name"].as<std::string>();
  return schedule_registry().get(name, node["name"]).factory(node);
}

}  // namespace shrink
