// The demo's data stage: see demo_data.h.
//
// Note [The demo's teacher]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// The task must be learnable from the pretrained model by changing the
// adapted matrices, and it must not decide in advance which method wins. So
// the teacher differs from the pretrained model exactly where the methods
// are allowed to change it: on every adapted matrix (query and value), by
//   ΔW_teacher = B_t·A_t + Σ_{(i,j) ∈ Ω} ±sparse_scale·e_i e_jᵀ,
// a rank-`teacher_rank` part plus `c` large entries on the positions the Ω
// stage will find. Full fine-tuning can represent it, LoRA only its low-rank
// part, DSEE both (if Ω is right). Which fits best on the demo's 4096
// training examples (recipes/demo.toml) is what the demo measures.
//
// Labels: the pretrained classifier's bias is shifted so that the pretrained
// model splits the training sequences in half (the median of its logit
// difference becomes its decision boundary); the teacher's bias likewise for
// the teacher (its own median), and the teacher's decision is the label. So
// the training labels are balanced, and the untuned model's dev accuracy
// (reported) is the floor every method starts from; the head is trainable,
// so a method can learn the teacher's bias too.
#include "recipes/demo_data.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "base/error.h"
#include "base/files.h"
#include "core/io/safetensors.h"
#include "core/model/pretrained_model.h"
#include "core/tuning/adapted.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

nlohmann::json demo_config_json(const DemoSpec& spec) {
  return {{"model_type", "bert"},
          {"architectures", {"BertForSequenceClassification"}},
          {"vocab_size", spec.vocab_size},
          {"hidden_size", spec.hidden_size},
          {"num_hidden_layers", spec.num_layers},
          {"num_attention_heads", spec.num_heads},
          {"intermediate_size", spec.intermediate_size},
          {"max_position_embeddings", spec.max_positions},
          {"type_vocab_size", 2},
          {"hidden_act", "gelu"},
          {"layer_norm_eps", 1e-12},
          {"pad_token_id", 0},
          {"num_labels", 2}};
}

nlohmann::json options_json(const DemoOptions& o) {
  const auto& s = o.spec;
  return {{"spec",
           {{"vocab_size", s.vocab_size},
            {"hidden_size", s.hidden_size},
            {"num_layers", s.num_layers},
            {"num_heads", s.num_heads},
            {"intermediate_size", s.intermediate_size},
            {"max_positions", s.max_positions},
            {"seq_len", s.seq_len},
            {"weight_rank", s.weight_rank},
            {"outliers", s.outliers},
            {"lowrank_std", s.lowrank_std},
            {"noise_std", s.noise_std},
            {"outlier_scale", s.outlier_scale},
            {"seed", s.seed}}},
          {"train_size", o.train_size},
          {"dev_size", o.dev_size},
          {"teacher_rank", o.teacher_rank},
          {"teacher_lowrank_std", o.teacher_lowrank_std},
          {"teacher_sparse_scale", o.teacher_sparse_scale},
          {"teacher_margin", o.teacher_margin},
          {"omega",
           {{"method", omega_method_name(o.omega.method)},
            {"c", o.omega.c},
            {"seed", o.omega.seed},
            {"variant", grebsmo_variant_name(o.omega.grebsmo.variant)},
            {"max_rank", o.omega.grebsmo.max_rank},
            {"tol", o.omega.grebsmo.tol}}}};
}

// Logit difference (label 1 minus label 0) of every sequence, batches of 256.
at::Tensor logit_difference(PretrainedModel& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (std::int64_t start = 0; start < ids.size(0); start += 256) {
    ModelInput input;
    input.input_ids = ids.narrow(0, start, std::min<std::int64_t>(256, ids.size(0) - start));
    const auto logits = model.forward(input).logits;
    parts.push_back(logits.select(1, 1) - logits.select(1, 0));
  }
  return at::cat(parts);
}

DemoData demo_read(const fs::path& dir) {
  DemoData data;
  data.pretrained_dir = demo_pretrained_dir(dir);
  const auto train = SafetensorsCheckpoint::open(dir / "train.safetensors");
  const auto dev = SafetensorsCheckpoint::open(dir / "dev.safetensors");
  data.train_ids = train.tensor("input_ids").clone();
  data.train_labels = train.tensor("labels").clone();
  data.dev_ids = dev.tensor("input_ids").clone();
  data.dev_labels = dev.tensor("labels").clone();
  const auto info = file_read_json(dir / "demo.json", "delete the demo's data folder to make it again");
  data.pretrained_dev_accuracy = info.at("pretrained_dev_accuracy").get<double>();
  data.positive_fraction = info.at("positive_fraction").get<double>();
  return data;
}

}  // namespace

fs::path demo_pretrained_dir(const fs::path& dir) { return dir / "pretrained"; }

DemoData demo_prepare(const DemoOptions& options, const fs::path& dir) {
  DSEE_CHECK(options.train_size > 0 && options.dev_size > 0 && options.teacher_rank > 0,
             "demo: train_size, dev_size and teacher_rank must be positive");
  const auto wanted = options_json(options);
  if (fs::exists(dir / "demo.json")) {
    const auto info = nlohmann::json::parse(file_read_text(dir / "demo.json"), nullptr, /*allow_exceptions=*/false);
    if (!info.is_discarded() && info.contains("options") && info["options"] == wanted) return demo_read(dir);
  }
  folder_create(demo_pretrained_dir(dir));
  const auto& spec = options.spec;

  // The pretrained model, with the head calibrated on the training sequences.
  auto tensors = demo_pretrained_tensors(spec);
  file_write_json(demo_pretrained_dir(dir) / "config.json", demo_config_json(spec));
  safetensors_save(demo_pretrained_dir(dir) / "model.safetensors", tensors);
  auto model = model_load(demo_pretrained_dir(dir));
  DemoData data;
  data.pretrained_dir = demo_pretrained_dir(dir);
  // With teacher_margin m, 1/(1 − m) times the sequences are drawn and those
  // nearest the teacher's boundary are dropped below.
  const auto drawn = [&](std::int64_t size) {
    return static_cast<std::int64_t>(std::ceil(double(size) / (1.0 - options.teacher_margin)));
  };
  data.train_ids = demo_token_sequences(spec, drawn(options.train_size), 0);
  data.dev_ids = demo_token_sequences(spec, drawn(options.dev_size), 1);
  const double median = logit_difference(*model, data.train_ids).median().item<double>();
  for (auto& [name, tensor] : tensors)
    if (name == "classifier.bias") tensor[1] -= median;
  safetensors_save(demo_pretrained_dir(dir) / "model.safetensors", tensors);
  model = model_load(dir / "pretrained");
  const auto pretrained_dev = logit_difference(*model, data.dev_ids) > 0;

  // The teacher: the planted update on every adapted matrix, Ω as the Ω stage computes it.
  const auto matrices = adapted_matrices(*model, default_target_modules(model->config().family));
  std::vector<NamedMatrix> named;
  for (const auto& m : matrices) named.push_back({m.name, m.weight()});
  const auto omega = omega_select(named, options.omega);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(spec.seed + 1);
  {
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < matrices.size(); ++i) {
      auto weight = matrices[i].weight();
      const auto b = at::randn({weight.size(0), options.teacher_rank}, generator);
      const auto a = at::randn({options.teacher_rank, weight.size(1)}, generator);
      auto update = b.matmul(a) * (options.teacher_lowrank_std / std::sqrt(double(options.teacher_rank)));
      const auto signs = at::where(at::rand({omega[i].indices.size(0)}, generator) < 0.5, -1.0, 1.0).to(at::kFloat);
      update.view({-1}).index_add_(0, omega[i].indices, signs * options.teacher_sparse_scale);
      weight.add_(update);  // a view of the projection's weight
    }
  }
  // The teacher's own head bias splits the training sequences in half.
  const auto teacher_train = logit_difference(*model, data.train_ids);
  const double teacher_median = teacher_train.median().item<double>();
  auto teacher_dev = logit_difference(*model, data.dev_ids);
  // teacher_margin: keep the `size` sequences farthest from the boundary, in drawn order.
  const auto keep = [&](const at::Tensor& difference, std::int64_t size) {
    const auto order = (difference - teacher_median).abs().argsort(/*stable=*/true, /*dim=*/0, /*descending=*/true);
    return std::get<0>(order.narrow(0, 0, size).sort());
  };
  const auto train_kept = keep(teacher_train, options.train_size);
  const auto dev_kept = keep(teacher_dev, options.dev_size);
  data.train_ids = data.train_ids.index_select(0, train_kept);
  data.dev_ids = data.dev_ids.index_select(0, dev_kept);
  teacher_dev = teacher_dev.index_select(0, dev_kept);
  data.train_labels = (teacher_train.index_select(0, train_kept) > teacher_median).to(at::kLong);
  data.dev_labels = (teacher_dev > teacher_median).to(at::kLong);
  data.pretrained_dev_accuracy =
      (pretrained_dev.index_select(0, dev_kept).to(at::kLong) == data.dev_labels).to(at::kDouble).mean().item<double>();
  data.positive_fraction = (data.train_labels.sum().item<double>() + data.dev_labels.sum().item<double>()) /
                           double(options.train_size + options.dev_size);

  safetensors_save(dir / "train.safetensors", {{"input_ids", data.train_ids}, {"labels", data.train_labels}});
  safetensors_save(dir / "dev.safetensors", {{"input_ids", data.dev_ids}, {"labels", data.dev_labels}});
  nlohmann::json info = {{"options", wanted},
                         {"pretrained_dev_accuracy", data.pretrained_dev_accuracy},
                         {"positive_fraction", data.positive_fraction}};
  file_write_json(dir / "demo.json", info);  // last: its presence marks a complete folder
  return data;
}

}  // namespace dsee
