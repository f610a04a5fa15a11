#include "shrink/distill/distillation.h"

#include <fmt/format.h>

#include <set>

#include "shrink/compression/method_errors.h"
#include "shrink/core/error.h"
#include "shrink/distill/losses.h"
#include "shrink/distill/teacher.h"

namespace shrink::distill {

namespace {

const std::vector<std::string>& loss_kinds() {
  static const std::vector<std::string> kinds = {"cross_entropy", "kd", "hint", "attention", "similarity"};
  return kinds;
}

bool uses_taps(const std::string& loss) { return loss == "hint" || loss == "attention" || loss == "similarity"; }

std::string shape_str(const torch::Tensor& t) { return fmt::format("[{}]", fmt::join(t.sizes(), ", ")); }

LossTerm parse_term(const ConfigNode& node) {
  if (!node.is_map()) node.fail("expected a map with 'loss' and its options");
  LossTerm t;
  t.where = node;
  t.loss = node["loss"].as<std::string>();
  if (std::find(loss_kinds().begin(), loss_kinds().end(), t.loss) == loss_kinds().end()) {
    auto near = nearest_name(t.loss, loss_kinds());
    node["loss"].fail(fmt::format("unknown loss '{}'; one of {}{}", t.loss, fmt::join(loss_kinds(), ", "),
                                  near.empty() ? "" : "; did you mean '" + near + "'?"));
  }
  std::vector<std::string> keys = {"loss", "weight", "start_epoch", "end_epoch"};
  if (t.loss == "kd") keys.push_back("temperature");
  if (t.loss == "attention") keys.push_back("p");
  if (uses_taps(t.loss)) keys.insert(keys.end(), {"student", "teacher"});
  node.check_keys(keys);
  t.weight = node.get_or<double>("weight", 1.0);
  if (!(t.weight >= 0)) node["weight"].fail("must be >= 0");
  t.temperature = node.get_or<double>("temperature", 4.0);
  if (!(t.temperature > 0)) node["temperature"].fail("must be > 0");
  t.p = node.get_or<double>("p", 2.0);
  if (!(t.p > 0)) node["p"].fail("must be > 0");
  t.start_epoch = node.get_or<double>("start_epoch", -1.0);
  t.end_epoch = node.get_or<double>("end_epoch", -1.0);
  if (node.has("start_epoch") && t.start_epoch < 0) node["start_epoch"].fail("must be >= 0");
  if (node.has("end_epoch") && !(t.end_epoch > std::max(0.0, t.start_epoch)))
    node["end_epoch"].fail("must be after start_epoch (and > 0)");
  if (uses_taps(t.loss)) {
    t.student = node["student"].as<std::vector<std::string>>();
    t.teacher = node["teacher"].as<std::vector<std::string>>();
    if (t.student.empty()) node["student"].fail("needs at least one tap");
    if (t.student.size() != t.teacher.size())
      node["teacher"].fail(fmt::format("pairs one teacher tap with each student tap: {} student taps, {} teacher taps",
                                       t.student.size(), t.teacher.size()));
  }
  return t;
}

}  // namespace

DistillationOptions Distillation::parse_options(const ConfigNode& entry) {
  auto keys = common_method_keys();
  keys.insert(keys.end(), {"teacher", "terms"});
  entry.check_keys(keys);
  DistillationOptions o;
  auto teacher = entry["teacher"];
  if (!teacher.is_map()) teacher.fail("expected a map: {model: {name: ..., weights: ...}} or {torchscript: FILE}");
  teacher.check_keys({"model", "torchscript"});
  if (teacher.has("model") == teacher.has("torchscript"))
    teacher.fail("give exactly one of 'model' (a zoo model with weights) and 'torchscript' (a file)");
  if (teacher.has("model")) {
    o.teacher_model = teacher["model"];
    if (!o.teacher_model.is_map() || !o.teacher_model.has("name"))
      o.teacher_model.fail("expected a model section with 'name' (and usually 'weights')");
  } else {
    o.teacher_torchscript = teacher["torchscript"].as<std::string>();
  }
  auto terms = entry["terms"];
  if (!terms.is_sequence() || terms.size() == 0) terms.fail("expected a non-empty list of loss terms");
  for (size_t i = 0; i < terms.size(); ++i) o.terms.push_back(parse_term(terms.at(i)));
  return o;
}

std::vector<OptionDoc> Distillation::docs() {
  return {
      {"teacher", "map", "(required)",
       "{model: {name: NAME, weights: FILE, ...options}} (a zoo model and its checkpoint or state_dict) or "
       "{torchscript: FILE} (forward returns the logits or a Dict[str, Tensor] with \"logits\" and taps). In eval "
       "mode, without gradients."},
      {"terms", "list of map", "(required)",
       "The loss: a weighted sum of {loss: cross_entropy | kd | hint | attention | similarity, weight: 1.0, "
       "start_epoch, end_epoch}. kd takes temperature (4; Hinton, T^2 scaled); hint, attention and similarity "
       "take student and teacher taps (a name or a list, paired in order); attention takes p (2). hint trains a "
       "1x1-conv or linear regressor student->teacher (FitNets), only while the term is active."},
  };
}

Distillation::Distillation(MethodSpec spec, Options options)
    : CompressionMethod(std::move(spec)), options_(std::move(options)) {
  if (options_.terms.empty()) fail_at_option(spec_, "terms", "needs at least one loss term");
  if (!options_.teacher && options_.teacher_torchscript.empty() && !options_.teacher_model.valid())
    fail_at_option(spec_, "teacher", "needs a teacher (a model section, a TorchScript file or a model object)");
  epoch_sums_.assign(options_.terms.size(), torch::Tensor());
  epoch_counts_.assign(options_.terms.size(), 0);
}

Distillation::~Distillation() = default;

void Distillation::fail_term(size_t i, const std::string& key, const std::string& message) const {
  const auto& where = options_.terms[i].where;
  if (where.valid()) {
    if (where.has(key)) where[key].fail(message);
    where.fail(message);
  }
  throw UserError(fmt::format("{}: terms[{}] ({}): {}", name(), i, options_.terms[i].loss, message));
}

void Distillation::bind(const ModelPtr& model) {
  CompressionMethod::bind(model);
  student_ = model;
}

void Distillation::setup_for_training() {
  TORCH_CHECK(student_, "distillation: setup_for_training before bind");
  TORCH_CHECK(!sample_shape_.empty(), "distillation: setup_for_training before set_sample_shape");
  const auto& shape = sample_shape_;
  const auto& student_taps = student_->tap_names();
  for (size_t i = 0; i < options_.terms.size(); ++i)
    for (const auto& tap : options_.terms[i].student)
      if (tap != "logits" && std::find(student_taps.begin(), student_taps.end(), tap) == student_taps.end())
        fail_term(i, "student",
                  fmt::format("the student has no tap '{}'; its taps: {}, logits", tap, fmt::join(student_taps, ", ")));

  // A probe batch of two (BatchNorm in eval mode, nothing updated) gives every tap's shape.
  const auto device = student_->parameters().empty() ? torch::Device(torch::kCPU) : student_->parameters()[0].device();
  std::vector<int64_t> probe_shape = {2};
  probe_shape.insert(probe_shape.end(), shape.begin(), shape.end());
  auto probe = torch::zeros(probe_shape, torch::TensorOptions().device(device));
  std::map<std::string, torch::Tensor> s_out;
  {
    torch::NoGradGuard no_grad;
    const bool was_training = student_->is_training();
    student_->eval();
    std::set<std::string> wanted;
    for (const auto& t : options_.terms)
      for (const auto& tap : t.student)
        if (tap != "logits") wanted.insert(tap);
    student_->record_taps({wanted.begin(), wanted.end()});
    s_out["logits"] = student_->forward(probe);
    for (const auto& tap : wanted) s_out[tap] = student_->tap(tap);
    student_->record_taps({});
    student_->train(was_training);
  }

  if (options_.teacher) {
    teacher_ = Teacher::from_model(options_.teacher);
  } else if (!options_.teacher_torchscript.empty()) {
    ConfigNode where;
    if (spec_.where.valid() && spec_.where.has("teacher")) where = spec_.where["teacher"]["torchscript"];
    teacher_ = Teacher::from_torchscript(options_.teacher_torchscript, where);
  } else {
    DataInfo info{shape, s_out["logits"].size(1)};
    teacher_ = Teacher::from_model_section(options_.teacher_model, info);
  }
  teacher_->to(device);
  std::set<std::string> teacher_wanted;
  for (const auto& t : options_.terms) teacher_wanted.insert(t.teacher.begin(), t.teacher.end());
  std::map<std::string, torch::Tensor> t_out;
  auto check_teacher_tap = [&](size_t i, const std::string& tap) {
    auto names = teacher_->tap_names();
    if (std::find(names.begin(), names.end(), tap) == names.end())
      fail_term(i, "teacher", fmt::format("the teacher ({}) has no tap '{}'; its taps: {}", teacher_->describe(), tap,
                                          fmt::join(names, ", ")));
  };
  if (!options_.teacher_torchscript.empty()) {
    t_out = teacher_->forward(probe, {});  // a scripted teacher's taps are its output's keys
    for (size_t i = 0; i < options_.terms.size(); ++i)
      for (const auto& tap : options_.terms[i].teacher) check_teacher_tap(i, tap);
  } else {
    for (size_t i = 0; i < options_.terms.size(); ++i)
      for (const auto& tap : options_.terms[i].teacher) check_teacher_tap(i, tap);
    t_out = teacher_->forward(probe, {teacher_wanted.begin(), teacher_wanted.end()});
  }

  regressors_.clear();
  regressor_of_term_.assign(options_.terms.size(), 0);
  for (size_t i = 0; i < options_.terms.size(); ++i) {
    const auto& term = options_.terms[i];
    regressor_of_term_[i] = regressors_.size();
    if (term.loss == "kd" && s_out["logits"].sizes() != t_out["logits"].sizes())
      fail_term(i, "loss",
                fmt::format("student logits {} and teacher logits {} differ (the models must predict the same classes)",
                            shape_str(s_out["logits"]), shape_str(t_out["logits"])));
    for (size_t k = 0; k < term.student.size(); ++k) {
      const auto& s = s_out.at(term.student[k]);
      const auto& t = t_out.at(term.teacher[k]);
      auto mismatch = [&](const std::string& why) {
        fail_term(i, "student",
                  fmt::format("student tap '{}' {} and teacher tap '{}' {}: {}", term.student[k], shape_str(s),
                              term.teacher[k], shape_str(t), why));
      };
      if (term.loss == "hint") {
        if (s.dim() != t.dim() || (s.dim() != 2 && s.dim() != 4))
          mismatch("a hint pairs two [N, C, H, W] or two [N, C] taps");
        if (s.dim() == 4 && (s.size(2) != t.size(2) || s.size(3) != t.size(3)))
          mismatch("a hint's 1x1 regressor needs the same spatial size");
        HintRegressor r;
        if (s.dim() == 4)
          r.conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(s.size(1), t.size(1), 1));
        else
          r.linear = torch::nn::Linear(s.size(1), t.size(1));
        r.module()->to(device);
        regressors_.push_back(r);
      } else if (term.loss == "attention") {
        if (s.dim() != 4 || t.dim() != 4) mismatch("attention transfer needs [N, C, H, W] taps");
        if (s.size(2) != t.size(2) || s.size(3) != t.size(3)) mismatch("attention maps need the same spatial size");
      }
    }
  }
}

std::vector<std::pair<std::string, torch::Tensor>> Distillation::trainable_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t r = 0; r < regressors_.size(); ++r)
    for (const auto& p : regressors_[r].module()->named_parameters())
      out.emplace_back(fmt::format("distillation.hint{}.{}", r, p.key()), p.value());
  return out;
}

std::vector<std::pair<std::string, std::function<void(const torch::Tensor&)>>> Distillation::bench_parts() {
  std::set<std::string> taps;
  for (const auto& t : options_.terms) taps.insert(t.teacher.begin(), t.teacher.end());
  std::vector<std::string> list(taps.begin(), taps.end());
  return {{"teacher forward", [this, list](const torch::Tensor& x) { teacher_->forward(x, list); }}};
}

void Distillation::prepare_model(TrainContext& ctx) {
  if (prepared_) return;
  if (!teacher_) return;  // eval, summary, export: the student alone
  teacher_->to(ctx.device);
  for (auto& r : regressors_) r.module()->to(ctx.device);
  prepared_ = true;
}

void Distillation::on_train_begin(TrainContext& ctx) {
  TORCH_CHECK(teacher_, "distillation: training without setup_for_training (build the experiment with its training data)");
  if (options_.teacher_model.valid() && !options_.teacher_model.has("weights"))
    ctx.log("distillation: warning: " + options_.teacher_model.path() +
            " has no 'weights': the teacher is randomly initialized");
  std::string terms;
  for (const auto& t : options_.terms) {
    terms += (terms.empty() ? "" : " + ") + fmt::format("{} {}", t.weight, t.loss);
    if (t.loss == "kd") terms += fmt::format("(T={})", t.temperature);
    if (!t.student.empty()) terms += fmt::format("({}->{})", fmt::join(t.student, ","), fmt::join(t.teacher, ","));
    if (t.start_epoch >= 0 || t.end_epoch >= 0)
      terms += fmt::format(" [epochs {}..{}]", t.start_epoch < 0 ? 0.0 : t.start_epoch,
                           t.end_epoch < 0 ? std::string("end") : fmt::format("{}", t.end_epoch));
  }
  int64_t regressor_params = 0;
  for (const auto& [n, p] : trainable_tensors()) regressor_params += p.numel();
  ctx.log(fmt::format("distillation: teacher {}; loss = {}{}", teacher_->describe(), terms,
                      regressors_.empty() ? "" : fmt::format("; {} hint regressor(s), {} parameters", regressors_.size(),
                                                             regressor_params)));
}

std::vector<std::string> Distillation::student_taps_needed(double epoch) const {
  std::set<std::string> taps;
  for (const auto& t : options_.terms)
    if (t.active(epoch))
      for (const auto& tap : t.student)
        if (tap != "logits") taps.insert(tap);
  return {taps.begin(), taps.end()};
}

std::vector<std::string> Distillation::teacher_taps_needed(double epoch) const {
  std::set<std::string> taps;
  for (const auto& t : options_.terms)
    if (t.active(epoch)) {
      if (t.loss == "kd") taps.insert("logits");
      taps.insert(t.teacher.begin(), t.teacher.end());
    }
  return {taps.begin(), taps.end()};
}

void Distillation::on_step_begin(TrainContext& ctx) {
  teacher_out_.clear();
  if (!active(ctx)) return;
  const double epoch = ctx.epoch_progress();
  auto taps = student_taps_needed(epoch);
  if (!taps.empty()) ctx.model->record_taps(taps);
  // The teacher runs first: between the student's forward and backward it would push the
  // student's activations out of the caches (measured: a KD step then cost 14% more than the
  // student step plus the teacher forward).
  auto teacher_taps = teacher_taps_needed(epoch);
  if (!teacher_taps.empty() && ctx.batch) teacher_out_ = teacher_->forward(ctx.batch->inputs, teacher_taps);
}

std::vector<std::pair<std::string, double>> Distillation::last_terms() const {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [name, value] : last_terms_) out.emplace_back(name, value.item<double>());
  return out;
}

torch::Tensor Distillation::on_loss(TrainContext& ctx, torch::Tensor loss) {
  last_terms_.clear();
  if (!active(ctx)) return loss;
  const double epoch = ctx.epoch_progress();
  bool any = false;
  for (const auto& t : options_.terms) any = any || t.active(epoch);
  if (!any) return loss;
  auto teacher_taps = teacher_taps_needed(epoch);
  std::map<std::string, torch::Tensor> t_out = std::move(teacher_out_);
  teacher_out_.clear();
  if (t_out.empty() && !teacher_taps.empty()) t_out = teacher_->forward(ctx.batch->inputs, teacher_taps);
  auto student_tap = [&](const std::string& name) -> const torch::Tensor& {
    return name == "logits" ? ctx.outputs : ctx.model->tap(name);
  };
  // `loss` is the recipe's cross-entropy plus the terms of the methods before this one: those
  // terms are kept, and the cross-entropy is replaced by this method's weighted terms.
  const auto& task_loss = ctx.task_loss.defined() ? ctx.task_loss : loss;
  torch::Tensor total = loss.is_same(task_loss) ? torch::Tensor() : loss - task_loss;
  for (size_t i = 0; i < options_.terms.size(); ++i) {
    const auto& term = options_.terms[i];
    if (!term.active(epoch)) continue;
    torch::Tensor value;
    if (term.loss == "cross_entropy") {
      value = task_loss;
    } else if (term.loss == "kd") {
      value = kd_loss(ctx.outputs, t_out.at("logits"), term.temperature);
    } else {
      for (size_t k = 0; k < term.student.size(); ++k) {
        const auto& s = student_tap(term.student[k]);
        const auto& t = t_out.at(term.teacher[k]);
        torch::Tensor v;
        if (term.loss == "hint")
          v = hint_loss(regressors_[regressor_of_term_[i] + k].forward(s), t);
        else if (term.loss == "attention")
          v = attention_loss(s, t, term.p);
        else
          v = similarity_loss(s, t);
        value = value.defined() ? value + v : v;
      }
    }
    const auto detached = value.detach();
    epoch_sums_[i] = epoch_sums_[i].defined() ? epoch_sums_[i] + detached : detached;
    ++epoch_counts_[i];
    last_terms_.emplace_back(term.loss, detached);
    auto weighted = value * term.weight;
    total = total.defined() ? total + weighted : weighted;
  }
  return total;
}

void Distillation::on_before_optimizer_step(TrainContext& ctx) {
  // Regressors learn only while a hint term is active: without a gradient the optimizer skips
  // them (no weight decay, no momentum).
  const double epoch = ctx.epoch_progress();
  bool hint_active = active(ctx);
  if (hint_active) {
    hint_active = false;
    for (const auto& t : options_.terms) hint_active = hint_active || (t.loss == "hint" && t.active(epoch));
  }
  if (hint_active) return;
  for (auto& r : regressors_)
    for (auto& p : r.module()->parameters()) p.mutable_grad() = torch::Tensor();
}

void Distillation::on_step_end(TrainContext& ctx) {
  if (!ctx.model->recorded_taps().empty()) ctx.model->record_taps({});
}

void Distillation::on_epoch_end(TrainContext& ctx) {
  for (size_t i = 0; i < options_.terms.size(); ++i) {
    if (epoch_counts_[i] == 0) continue;
    // "distill_kd"; with two terms of one kind, their term index: "distill_hint0", "distill_hint2".
    const auto& loss = options_.terms[i].loss;
    int64_t same_kind = 0;
    for (const auto& t : options_.terms) same_kind += t.loss == loss;
    ctx.metrics["distill_" + loss + (same_kind > 1 ? std::to_string(i) : "")] =
        epoch_sums_[i].item<double>() / epoch_counts_[i];
  }
  epoch_sums_.assign(options_.terms.size(), torch::Tensor());
  epoch_counts_.assign(options_.terms.size(), 0);
}

void Distillation::save_state(torch::serialize::OutputArchive& archive) const {
  archive.write("regressors", torch::tensor(static_cast<int64_t>(regressors_.size())));
  for (const auto& [name, tensor] : trainable_tensors()) archive.write(name, tensor);
  // This epoch's term sums, so a run resumed mid-epoch reports the whole epoch.
  std::vector<double> sums;
  for (const auto& t : epoch_sums_) sums.push_back(t.defined() ? t.item<double>() : 0.0);
  archive.write("epoch_sums", torch::tensor(sums, torch::kDouble));
  archive.write("epoch_counts", torch::tensor(epoch_counts_));
}

void Distillation::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor count;
  if (!archive.try_read("regressors", count)) return;
  if (!teacher_) return;  // eval, summary, export: the regressors only matter in training
  torch::Tensor sums, counts;
  if (archive.try_read("epoch_sums", sums) && archive.try_read("epoch_counts", counts) &&
      sums.numel() == static_cast<int64_t>(epoch_sums_.size()) && counts.numel() == sums.numel())
    for (size_t i = 0; i < epoch_sums_.size(); ++i) {
      epoch_counts_[i] = counts[i].item<int64_t>();
      epoch_sums_[i] = epoch_counts_[i] ? sums[i].clone() : torch::Tensor();
    }
  if (count.item<int64_t>() != static_cast<int64_t>(regressors_.size()))
    throw UserError(fmt::format("{}: the checkpoint has {} hint regressor(s), the recipe makes {}", name(),
                                count.item<int64_t>(), regressors_.size()));
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : trainable_tensors()) {
    torch::Tensor saved;
    if (!archive.try_read(name, saved) || saved.sizes() != tensor.sizes())
      throw UserError(this->name() + ": the checkpoint's " + name + " is missing or has another shape");
    tensor.copy_(saved);
  }
}

}  // namespace shrink::distill
