#pragma once
// Distillation losses on tensors, each the formula of its paper (checked against slow references
// in tests/distill).
#include <torch/torch.h>

namespace shrink::distill {

/// Hinton et al. (2015): T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the
/// batch. The T^2 keeps the soft-target gradients on the scale of the hard-target ones.
torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits, double temperature);

/// Zagoruyko & Komodakis (2017): the spatial attention map of an [N, C, H, W] activation,
/// mean_c |a_c|^p flattened to [N, H*W] and L2-normalized per example.
torch::Tensor attention_map(const torch::Tensor& activation, double p = 2.0);
/// Attention transfer: mean squared difference of the two normalized maps (the authors' code;
/// the paper's beta/2 is the term's weight). Spatial sizes must match; channels may differ.
torch::Tensor attention_loss(const torch::Tensor& student, const torch::Tensor& teacher, double p = 2.0);

/// Tung & Mori (2019), similarity-preserving KD: with A the [N, -1] flattened activations,
/// G = row-L2-normalized A A^T; loss = ||G_s - G_t||_F^2 / N^2.
torch::Tensor similarity_loss(const torch::Tensor& student, const torch::Tensor& teacher);

/// FitNets (Romero et al. 2015) hint: mean squared error between the regressed student tap and
/// the teacher tap.
torch::Tensor hint_loss(const torch::Tensor& regressed_student, const torch::Tensor& teacher);

}  // namespace shrink::distill
