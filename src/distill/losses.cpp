#include "shrink/distill/losses.h"

namespace shrink::distill {

namespace F = torch::nn::functional;

torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits, double temperature) {
  TORCH_CHECK(student_logits.sizes() == teacher_logits.sizes(), "kd_loss: student logits ", student_logits.sizes(),
              " and teacher logits ", teacher_logits.sizes(), " differ");
  TORCH_CHECK(temperature > 0, "kd_loss: temperature must be positive");
  auto log_p_student = F::log_softmax(student_logits / temperature, F::LogSoftmaxFuncOptions(1));
  auto log_p_teacher = F::log_softmax(teacher_logits / temperature, F::LogSoftmaxFuncOptions(1));
  // KL(p_t || p_s) summed over classes, averaged over the batch.
  auto kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1).mean();
  return kl * (temperature * temperature);
}

torch::Tensor attention_map(const torch::Tensor& activation, double p) {
  TORCH_CHECK(activation.dim() == 4, "attention_map: expected [N, C, H, W], got ", activation.sizes());
  auto a = activation.abs().pow(p).mean(1).flatten(1);
  return F::normalize(a, F::NormalizeFuncOptions().p(2).dim(1));
}

torch::Tensor attention_loss(const torch::Tensor& student, const torch::Tensor& teacher, double p) {
  return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean();
}

torch::Tensor similarity_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  TORCH_CHECK(student.size(0) == teacher.size(0), "similarity_loss: batch sizes differ");
  const int64_t n = student.size(0);
  auto gram = [](const torch::Tensor& x) {
    auto a = x.flatten(1);
    return F::normalize(a.mm(a.t()), F::NormalizeFuncOptions().p(2).dim(1));
  };
  return (gram(student) - gram(teacher)).pow(2).sum() / static_cast<double>(n * n);
}

torch::Tensor hint_loss(const torch::Tensor& regressed_student, const torch::Tensor& teacher) {
  return F::mse_loss(regressed_student, teacher);
}

}  // namespace shrink::distill
