// The set-up shared by the LoRA parity drivers (tuning_driver,
// precision_driver): load an HF folder, attach lora and overwrite every A and
// B with the values the Python side drew, so both stacks start from the same
// adapters. Header-only, like tests/unit's helpers: it is test code, linked
// into no library.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

#include "core/io/safetensors.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/tuning.h"

namespace dsee {

// Members in this order: `tuning` points into `model`, so it is destroyed first.
struct LoraFromFile {
  std::unique_ptr<PretrainedModel> model;
  std::shared_ptr<ModelTuning> tuning;
  std::shared_ptr<SafetensorsFile> in;  // the drivers read their inputs from it too
};

// Loads `model_dir` with `load`, attaches lora (r = rank, alpha, `targets`
// comma-separated adapted.h patterns) and copies "<prefix>.lora_A" [r, in] /
// "<prefix>.lora_B" [out, r] from the safetensors file `in_path` into every
// update. dsee::Error naming the file and tensor when one is missing.
inline LoraFromFile lora_from_file(const std::filesystem::path& model_dir, const std::filesystem::path& in_path,
                                   std::int64_t rank, double alpha, const std::string& targets,
                                   const ModelLoadOptions& load = {}) {
  LoraFromFile out;
  out.model = model_load(model_dir, load);
  out.in = SafetensorsFile::open(in_path);
  TuningOptions options;
  options.method = TuningMethod::lora;
  options.rank = rank;
  options.alpha = alpha;
  std::stringstream patterns(targets);
  for (std::string t; std::getline(patterns, t, ',');) options.target_modules.push_back(t);
  out.tuning = tuning_attach(*out.model, options);
  at::NoGradGuard no_grad;
  for (auto* u : out.tuning->updates()) {
    u->lora_A.copy_(out.in->tensor(u->matrix.prefix + ".lora_A"));
    u->lora_B.copy_(out.in->tensor(u->matrix.prefix + ".lora_B"));
  }
  return out;
}

}  // namespace dsee
