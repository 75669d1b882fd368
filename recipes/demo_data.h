// The built-in demo's data stage: writes the synthetic "pretrained" model
// (data/demo_task.h), builds the teacher — that model plus a planted DSEE-
// shaped update on every adapted matrix: a low-rank part and sparse entries
// on the positions GreBsmo finds in the pretrained weight (the Ω the Ω stage
// will compute with the same options) — and labels random token sequences
// with it. See Note [The demo's teacher] in demo_data.cpp.
//
// Output folder:
//   pretrained/         config.json + model.safetensors (BertForSequenceClassification)
//   train.safetensors   input_ids [train_size, seq_len] int64, labels [train_size] int64
//   dev.safetensors     the same for the dev set
//   demo.json           the teacher's numbers (label balance, how many dev
//                       labels the pretrained model already gets right)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>

#include "core/sparsity/omega.h"
#include "data/demo_task.h"

namespace dsee {

struct DemoOptions {
  DemoSpec spec;
  std::int64_t train_size = 2048;
  std::int64_t dev_size = 512;
  std::int64_t teacher_rank = 2;      // rank of the planted low-rank part
  double teacher_lowrank_std = 0.05;  // entry std of the planted low-rank part
  double teacher_sparse_scale = 0.5;  // magnitude of the planted sparse entries
  double teacher_margin = 0.0;        // fraction of drawn sequences nearest the teacher's boundary dropped, [0, 1)
  OmegaOptions omega;                 // must equal the run's Ω options (c, method, variant, seed)
};

struct DemoData {
  std::filesystem::path pretrained_dir;
  at::Tensor train_ids, train_labels, dev_ids, dev_labels;
  double pretrained_dev_accuracy = 0.0;  // the untuned model against the teacher's dev labels
  double positive_fraction = 0.0;        // of all labels
};

// Writes everything into `dir` (created), or reads it back when `dir`
// already holds a complete copy made with the same options.
DemoData demo_prepare(const DemoOptions& options, const std::filesystem::path& dir);

// The generated model's folder in the demo's data folder `dir`: dir/pretrained.
std::filesystem::path demo_pretrained_dir(const std::filesystem::path& dir);

}  // namespace dsee
