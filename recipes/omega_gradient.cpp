#include "recipes/omega_gradient.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "base/error.h"
#include "core/train/losses.h"
#include "core/train/trainer.h"
#include "distributed/gradient_sync.h"

namespace dsee {
namespace {

// The warm-up's LoRA on the model, and what it changed there, to undo.
class WarmupLora {
 public:
  WarmupLora(Run& run, const std::vector<AdaptedMatrix>& matrices) : run_(run), matrices_(matrices) {
    TuningOptions options = recipe_tuning_options(run.recipe);
    options.method = TuningMethod::lora;
    for (const auto& slot : run.model->tensor_slots())
      if (tuning_trains_tensor(*run.model, options, slot.name)) saved_.emplace_back(slot.tensor, *slot.tensor);
    // The warm-up trains copies of the head in place; the originals come back in the destructor.
    for (auto& [tensor, original] : saved_) *tensor = original.detach().clone();
    tuning_ = tuning_attach(*run.model, options);
  }
  WarmupLora(const WarmupLora&) = delete;
  WarmupLora& operator=(const WarmupLora&) = delete;
  // The adapters removed, the head's tensors as they were before.
  ~WarmupLora() {
    for (const auto& m : matrices_) m.linear->tuning.reset();
    for (auto& [tensor, original] : saved_) *tensor = original;
  }

  // gradient_warmup_steps steps of the train stage's loop (its optimizer
  // settings and schedule, no evaluation, no checkpoints) over `batches`.
  void train(TaskBatches& batches, std::int64_t steps) {
    const auto& recipe = run_.recipe;
    TrainerOptions options = recipe_trainer_options(recipe, Stage::train);
    options.eval_every = 0;
    options.metric_for_best.clear();
    options.early_stopping_patience = 0;
    options.progress = false;
    std::int64_t taken = 0;
    options.after_step = [&taken](std::int64_t step) { taken = step; };
    options.should_stop = [&taken, steps] { return taken >= steps; };
    std::unique_ptr<GradientSync> sync;
    if (auto* comm = run_.ranks.comm) {
      std::vector<at::Tensor> parameters;
      for (auto& [name, tensor] : tuning_->trainable_parameters()) parameters.push_back(tensor);
      sync = std::make_unique<GradientSync>(*comm, std::move(parameters));
      options.sync_gradients = [gradient_sync = sync.get()] { gradient_sync->average_gradients(); };
      options.sum_over_ranks = [comm](std::vector<double>& values) {
        at::Tensor sums = at::tensor(values, at::kDouble).to(comm->device());
        comm->all_reduce_sum(sums);
        sums = sums.cpu().contiguous();
        std::copy_n(sums.data_ptr<double>(), values.size(), values.begin());
      };
    }
    at::manual_seed(static_cast<std::uint64_t>(recipe.run.seed));  // LoRA dropout
    auto* model = run_.model.get();
    auto* tuning = tuning_.get();
    const bool causal_lm = run_.data.causal_lm;
    const bool ranks = run_.ranks.comm != nullptr;
    const auto loss = [&](const TrainBatch& batch) {
      tuning->set_training(true);
      if (batch.samples == 0) {  // an empty piece of a short global batch (as the train stage)
        at::Tensor zero = at::zeros({}, at::TensorOptions().device(model->device()));
        for (auto& [name, tensor] : tuning->trainable_parameters()) zero = zero + tensor.sum() * 0;
        if (causal_lm)
          return at::zeros({0, batch.tensors.at("labels").size(1), model->config().vocab_size}, zero.options()) + zero;
        return zero;
      }
      if (causal_lm) return task_loss(*model, batch);
      const auto mean = task_loss(*model, batch);
      return ranks ? mean * batches.loss_scale() : mean;
    };
    Trainer trainer(tuning_->trainable_parameters(), options);
    const auto result = trainer.run(batches, loss);
    tuning_->set_training(false);
    spdlog::info("{}: Ω gradient warm-up: {} LoRA steps", run_.dir.name(), result.steps);
  }

 private:
  Run& run_;
  const std::vector<AdaptedMatrix>& matrices_;
  std::vector<std::pair<at::Tensor*, at::Tensor>> saved_;
  std::shared_ptr<ModelTuning> tuning_;
};

// The next global batch's piece of this rank, into the next epoch after the last.
TrainBatch next_batch(TaskBatches& batches, std::int64_t& epoch) {
  auto batch = batches.next();
  if (!batch) {
    batches.start_epoch(++epoch);
    batch = batches.next();
  }
  DSEE_ASSERT(batch.has_value(), "no training batch in epoch {}", epoch);
  return std::move(*batch);
}

}  // namespace

std::vector<at::Tensor> omega_gradient_scores(Run& run, const std::vector<AdaptedMatrix>& matrices) {
  const auto& recipe = run.recipe;
  const std::int64_t steps = recipe.omega.gradient_steps, warmup = recipe.omega.gradient_warmup_steps;
  DSEE_CHECK(steps >= 1, "omega.gradient_steps = {}: give at least 1 batch", steps);
  DSEE_CHECK(warmup >= 0, "omega.gradient_warmup_steps = {}: give 0 or more steps", warmup);
  const auto batch_size = recipe.train.batch_size;
  const TaskBatchShape shape{.trim_padding = run.data.causal_lm,
                             .length_buckets = run.data.causal_lm && recipe.train.length_buckets};
  const auto seed = static_cast<std::uint64_t>(recipe.run.seed);

  std::optional<WarmupLora> lora;
  std::int64_t epoch = 0;
  TaskBatches batches(run.data.train, batch_size, seed, run.ranks.rank, run.ranks.world_size, shape);
  batches.start_epoch(0);
  if (warmup > 0) {
    lora.emplace(run, matrices);
    const auto micro_batch = batch_size / recipe.train.grad_accumulation;
    DSEE_CHECK(micro_batch >= 1 && micro_batch * recipe.train.grad_accumulation == batch_size,
               "train.batch_size ({}) must be a multiple of train.grad_accumulation ({})", batch_size,
               recipe.train.grad_accumulation);
    TaskBatches warmup_batches(run.data.train, micro_batch, seed, run.ranks.rank, run.ranks.world_size, shape);
    lora->train(warmup_batches, warmup);
    // The gradient batches follow the warm-up's: one global batch per step.
    for (std::int64_t i = 0; i < warmup; ++i) next_batch(batches, epoch);
  }

  // The adapted weights' tensors (a GPT-2 c_attn once for its thirds), made to require grad.
  std::vector<Linear*> linears;
  for (const auto& m : matrices)
    if (std::find(linears.begin(), linears.end(), m.linear) == linears.end()) linears.push_back(m.linear);
  for (auto* linear : linears) {
    if (!linear->weight.is_leaf()) linear->weight = linear->weight.detach();
    linear->weight.requires_grad_(true);
  }
  std::vector<at::Tensor> scores;
  scores.reserve(matrices.size());
  for (const auto& m : matrices)
    scores.push_back(at::zeros({m.rows, m.cols()}, at::TensorOptions().dtype(at::kFloat).device(run.model->device())));

  auto* comm = run.ranks.comm;
  auto& model = *run.model;
  try {
    for (std::int64_t s = 0; s < steps; ++s) {
      const TrainBatch batch = next_batch(batches, epoch);
      // This rank's share of the global batch's mean loss: the ranks' shares sum to it.
      at::Tensor tokens = at::zeros({1}, at::kDouble);
      if (run.data.causal_lm && batch.samples > 0)
        tokens.fill_(static_cast<double>(causal_lm_target_count(batch.tensors.at("labels"))));
      if (run.data.causal_lm && comm != nullptr) {
        tokens = tokens.to(comm->device());
        comm->all_reduce_sum(tokens);
      }
      for (auto* linear : linears) linear->weight.mutable_grad() = at::Tensor();
      if (batch.samples > 0) {
        at::Tensor loss;
        if (run.data.causal_lm) {
          const auto labels = batch.tensors.at("labels").to(model.device());
          loss = causal_lm_loss(task_loss(model, batch), labels, recipe.train.label_smoothing, LossReduction::sum) /
                 tokens.cpu().item<double>();
        } else {
          loss = task_loss(model, batch);
          if (comm != nullptr) loss = loss * (batches.loss_scale() / comm->world_size());
        }
        loss.backward();
      }
      // The global batch's gradient of each matrix, squared and added to its score.
      std::vector<at::Tensor> gradients;
      gradients.reserve(matrices.size());
      for (const auto& m : matrices) {
        const at::Tensor grad = m.linear->weight.grad();
        gradients.push_back(grad.defined() ? grad.narrow(0, m.row_offset, m.rows).to(at::kFloat)
                                           : at::zeros_like(scores[gradients.size()]));
      }
      if (comm != nullptr) {
        std::vector<at::Tensor> flats;
        flats.reserve(gradients.size());
        for (const auto& g : gradients) flats.push_back(g.reshape({-1}));
        at::Tensor flat = at::cat(flats).to(comm->device());
        comm->all_reduce_sum(flat);
        std::int64_t offset = 0;
        for (auto& g : gradients) {
          const auto n = g.numel();
          g = flat.narrow(0, offset, n).view(g.sizes()).to(model.device());
          offset += n;
        }
      }
      for (std::size_t i = 0; i < matrices.size(); ++i) scores[i].add_(gradients[i].square());
    }
  } catch (...) {
    for (auto* linear : linears) {
      linear->weight.mutable_grad() = at::Tensor();
      linear->weight.requires_grad_(false);
    }
    throw;
  }
  for (auto* linear : linears) {
    linear->weight.mutable_grad() = at::Tensor();
    linear->weight.requires_grad_(false);
  }
  for (auto& score : scores) score = score.cpu();
  return scores;
}

}  // namespace dsee
