// Ω from gradients (omega.method = gradient; docs/tuning.md, 'Ω from
// gradients (RoSA)'), after RoSA (Nikdan, Tabesh, Crnčević, Alistarh, ICML
// 2024): the score of each entry of an adapted matrix is the sum over
// omega.gradient_steps training batches of the squared gradient of the
// batch's mean loss with respect to the full matrix (the diagonal empirical
// Fisher), G = Σ_b (∂L_b/∂W)², taken after omega.gradient_warmup_steps steps
// of LoRA alone; Ω = the c largest G (omega_top_c: ties to the lower index).
//
// Batches: the train stage's order (TaskBatches over the training split,
// train.batch_size samples each, seed run.seed, epoch 0 onwards): the warm-up
// takes the first gradient_warmup_steps batches, the scores the next
// gradient_steps. Each gradient is taken in evaluation mode (no dropout) on
// the whole global batch (train.grad_accumulation does not split it).
//
// Warm-up: the recipe's LoRA (tuning.rank, alpha, dropout, target_modules,
// run.seed; the task head trains too) trained with the train stage's
// optimizer settings for gradient_warmup_steps steps (the schedule as if the
// run were that long); the gradients are taken at W + s·B·A with the
// warmed-up head. Then the warm-up is discarded — the adapters removed, the
// head restored — and the train stage starts from the usual initialization
// (RoSA's recipe: warm up, generate the masks, restart with both adapters).
//
// Data parallelism: every rank computes the gradient of its piece of each
// global batch, weighted so that the sum over ranks is the global batch's
// gradient; the sum is all-reduced before squaring, so every rank gets the
// 1-rank scores of the same batches (up to summation order).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "core/tuning/adapted.h"
#include "recipes/stages.h"

namespace dsee {

// G of every matrix, fp32 [rows, cols] on the CPU, in the input's order;
// the model is as before when it returns. A collective under data
// parallelism (every rank gets the same scores).
std::vector<at::Tensor> omega_gradient_scores(Run& run, const std::vector<AdaptedMatrix>& matrices);

}  // namespace dsee
