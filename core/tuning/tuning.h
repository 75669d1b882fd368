// Tuning methods on the linear seam (docs/method.md, 'The update ΔW'): DSEE's
// sparse-embedded low-rank update, LoRA (the same with c = 0), and the
// baselines that train model tensors in place — full fine-tuning, BitFit (the
// biases) and top-k (the top k layers); which tensors train; and merging the
// update into the pretrained weights.
//
// For each adapted matrix W [m, n] (adapted.h: a whole projection or a GPT-2
// c_attn third), with s = alpha / rank:
//   ΔW = s · (B·A + P_Ω(S))    A [r, n] ~ N(0, 0.02²), B [m, r] = 0, S = 0
//   y  = x·(W⊙M)ᵀ + b + s·(drop(x)·Aᵀ)·Bᵀ + s·drop(x)·P_Ω(S)ᵀ      (1)
// S is stored as c values on Ω's c flat indices (row-major in m×n,
// ascending); forward (1) gathers the c input columns and scatters into the c
// output rows, never building a dense m×n S. Gradients reach A, B and the S
// values only (and the task head); everything else is frozen.
//
// Masks (docs/method.md, 'Unstructured pruning') are Linear::mask. With a mask
// set and `mask_update` true (ours, the default; docs/method.md, 'A truly
// sparse deployed model') the forward uses the masked effective weight
// x·((W + ΔW)⊙M)ᵀ + b, building the dense m×n ΔW once per call; with
// `mask_update` false (the reference) it is (1).
//
// Trainable tensor names (checkpoints, exports): "<prefix>.lora_A",
// "<prefix>.lora_B", "<prefix>.sparse_values", with AdaptedMatrix::prefix
// ("encoder.layer.0.attention.self.query", "h.0.attn.c_attn:q"); the fixed
// indices are "<prefix>.omega" (int64, not trainable). The task head's
// tensors keep their HF names ("classifier.weight"). The in-place methods
// train model tensors under their HF names (tuning_trains_tensor): full every
// tensor; bitfit every "*.bias" plus the task head; top_k every tensor of the
// top `top_layers` layers plus the task head (GPT-2: plus ln_f).
//
// adapter (Houlsby et al. 2019; docs/tuning.md, 'Adapters'): a bottleneck
// after the attention output projection and after the feed-forward output
// projection of every layer (BERT/RoBERTa "attention.output.dense" and
// "output.dense", GPT-2 "attn.c_proj" and "mlp.c_proj"), on the projection's
// output h [.., d]:
//   y = h + up(act(down(h)))    down [m, d] ~ N(0, 0.01²), up [d, m] = 0,
//                               both biases 0, m = adapter_size      (2)
// so the model starts at the pretrained function. Its tensors are
// "<module>.adapter.down.weight" / ".down.bias" / ".up.weight" / ".up.bias"
// ("encoder.layer.3.attention.output.dense.adapter.down.weight",
// "h.3.mlp.c_proj.adapter.up.bias"); they train together with every
// LayerNorm (adapter_train_layernorm) and the task head. Adapters are not a
// weight update and cannot be merged: export --format hf writes the base
// model plus adapters.safetensors (docs/export.md).
//
// prefix (prefix tuning, Li & Liang 2021, on GPT-2; P-tuning v2, Liu et al.
// 2022, on BERT/RoBERTa; docs/tuning.md, 'Prefix tuning and P-tuning v2'):
// L = prefix_length trainable key/value positions in front of every
// attention layer (core/model/pretrained_model.h AttentionPrefix), as PEFT's
// PrefixEncoder builds them from P [L, 2·layers·hidden]:
//   P = E                                   E [L, 2·layers·hidden] ~ N(0, 1)
//   P = W₂·tanh(W₁·E + b₁) + b₂             (prefix_projection) E [L, hidden]
//       ~ N(0, 1), W₁ [h, hidden], W₂ [2·layers·hidden, h], h =
//       prefix_hidden, weights and biases ~ U(±1/√fan_in) (nn.Linear's)  (3)
// P's row t viewed as [2·layers, heads, head_dim]: layer i's key at 2i, its
// value at 2i + 1. Tensors "prefix.embedding.weight" and, with the
// projection, "prefix.transform.0.weight" / ".0.bias" / ".2.weight" /
// ".2.bias" (PEFT's prompt_encoder names); they train with the task head.
// prefix_init_zero (PEFT's init_weights = "zero"): E = 0, or with the
// projection W₂ = 0 and b₂ = 0, so every prefix key and value starts at 0.
// L = 0 is the base model. Not a weight update: export writes P itself
// (the projection evaluated once; docs/export.md).
//
// Precision (docs/precision.md): on a bf16 model (run.precision = bf16) the
// frozen weights stay bf16 and every trainable tensor is fp32 — A, B, the S
// values and the task head, which tuning_attach casts to fp32. The frozen
// product runs in bf16, the update in fp32, their sum is rounded to bf16
// (Note [Mixed precision] in tuning.cpp). full, bitfit and top_k refuse a
// bf16 model (they would need fp32 master weights of the model's
// projections); adapter trains its adapters, the LayerNorms and the head in
// fp32 (tuning_attach casts them), reading the bf16 output of its projection
// cast to fp32 and rounding the sum to bf16.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/named_tensor.h"
#include "core/model/model_config.h"
#include "core/sparsity/omega.h"
#include "core/tuning/adapted.h"

namespace dsee {

class PretrainedModel;

enum class TuningMethod { dsee, lora, full, bitfit, top_k, adapter, prefix };

// "dsee" / "lora" / "full" / "bitfit" / "top_k" / "adapter" / "prefix"; throws dsee::Error naming
// the accepted names.
TuningMethod tuning_method_from_name(const std::string& name);
const char* tuning_method_name(TuningMethod method);
// dsee and lora: a weight update ΔW on adapted matrices (A, B, S). The
// others train model tensors in place and have no ΔW.
bool tuning_method_has_update(TuningMethod method);

struct TuningOptions {
  TuningMethod method = TuningMethod::dsee;
  std::int64_t rank = 16;                            // r
  double alpha = 32.0;                               // s = alpha / r
  double dropout = 0.0;                              // on the update's input x (both terms), training only
  std::vector<std::string> target_modules;           // adapted.h patterns; empty: default_target_modules
  std::uint64_t seed = 0;                            // A's N(0, 0.02²) draws, in adapted-matrix order
  bool mask_update = true;                           // retune.mask_update (see above)
  bool train_head = true;                            // the task head trains (dsee, lora, bitfit, top_k)
  std::int64_t top_layers = 2;                       // top_k: the layers counted from the top that train
  std::int64_t adapter_size = 64;                    // adapter: the bottleneck m
  Activation adapter_activation = Activation::gelu;  // adapter: act in (2)
  bool adapter_train_layernorm = true;               // adapter: every LayerNorm trains too
  std::int64_t prefix_length = 10;                   // prefix: L, the prefix positions per layer
  bool prefix_projection = false;                    // prefix: P through the MLP of (3)
  std::int64_t prefix_hidden = 512;                  // prefix: h, the MLP's hidden width
  bool prefix_init_zero = false;                     // prefix: E (projection: W₂, b₂) start at 0 (PEFT "zero")
};

// The update of one adapted matrix. Tensors live on the model's device in
// fp32 (trainable state stays fp32 even for a bf16 model).
struct SparseUpdate {
  AdaptedMatrix matrix;      // where it applies; row_offset/rows follow head pruning
  double scale = 1.0;        // s = alpha / r
  at::Tensor lora_A;         // [r, n], requires grad
  at::Tensor lora_B;         // [m, r], requires grad
  at::Tensor omega;          // int64 [c] flat indices into m×n, ascending (c may be 0)
  at::Tensor sparse_values;  // [c], requires grad

  // B·A + P_Ω(S), dense [m, n] (head scores: docs/method.md, 'Head pruning').
  at::Tensor unscaled() const;
  // ΔW = s·(B·A + P_Ω(S)), dense [m, n] (masks, merge).
  at::Tensor delta_weight() const;
};

// Whether `options` trains the model tensor `name` (HF name without the
// family prefix) in place: full every tensor; dsee and lora the task head
// (BERT "classifier.*", RoBERTa "classifier.dense.*" / "classifier.out_proj.*";
// GPT-2 none, its LM head is the tied wte) when options.train_head; bitfit
// every "*.bias" of the model (embedding and layer LayerNorms, every
// projection, BERT's pooler) plus the task head; top_k every tensor of the
// layers num_layers - top_layers .. num_layers - 1 plus the task head, and
// GPT-2's final ln_f; adapter every LayerNorm (BERT "*.LayerNorm.*", GPT-2
// "ln_1", "ln_2", "ln_f") when adapter_train_layernorm, plus the task head
// (its own adapter tensors are not model tensors). dsee::Error for top_k
// with top_layers outside [1, num_layers]. prefix: the task head when
// options.train_head (its prefix tensors are not model tensors).
bool tuning_trains_tensor(const PretrainedModel& model, const TuningOptions& options, const std::string& name);

// adapter: the projections an adapter follows, by HF module name in the
// model's order (BERT/RoBERTa "encoder.layer.N.attention.output.dense",
// "encoder.layer.N.output.dense"; GPT-2 "h.N.attn.c_proj", "h.N.mlp.c_proj").
std::vector<std::string> adapter_modules(PretrainedModel& model);
// Trainable parameters of one adapter on a d-wide output: 2·d·m + m + d.
std::int64_t adapter_parameter_count(std::int64_t d, std::int64_t m);
// Trainable parameters of the prefixes (3) of `model`: L·2·layers·hidden, or
// with the projection L·hidden + (hidden + 1)·h + (h + 1)·2·layers·hidden.
std::int64_t prefix_parameter_count(const ModelConfig& config, const TuningOptions& options);
// P of (3) [L, 2·layers·hidden] fp32 (the projection evaluated), detached:
// what export writes (PEFT's "prompt_embeddings"); undefined when `model`
// has no prefix attached.
at::Tensor prefix_embeddings(const PretrainedModel& model);
// The adapter weights after `linear` ({down [m, d], up [d, m]}), or empty
// when no adapter follows it (counting's FLOPs).
std::vector<at::Tensor> adapter_weights(const Linear& linear);

// The tuning state of a whole model: what tuning_attach returns. The model
// must outlive it; the Linear wrappers it installs point into it.
class ModelTuning {
 public:
  virtual ~ModelTuning() = default;
  const TuningOptions& options() const { return options_; }

  // One per adapted matrix, in adapted-matrix order (empty for full, bitfit,
  // top_k).
  virtual std::vector<SparseUpdate*> updates() = 0;
  // The tensors the optimizer updates, by name (see the header comment), in a
  // fixed order: updates in order (lora_A, lora_B, sparse_values), then the
  // task head in HF order; full, bitfit, top_k: the model tensors that
  // tuning_trains_tensor selects, in HF order; adapter: each adapter's
  // down.weight, down.bias, up.weight, up.bias in adapter_modules order, then
  // those model tensors; prefix: the prefix tensors of (3) in that order,
  // then the task head.
  virtual NamedTensors trainable_parameters() = 0;
  // Dropout on (true) or off (false, the default: evaluation).
  virtual void set_training(bool training) = 0;

 protected:
  explicit ModelTuning(TuningOptions options) : options_(std::move(options)) {}
  TuningOptions options_;
};

// Attaches `options.method` to `model`: dsee and lora wrap each adapted
// matrix (Ω from `omega`, matched by AdaptedMatrix::name; lora requires it
// empty or every entry with c = 0; dsee requires an entry for every adapted
// matrix with the matrix's shape — dsee::Error naming the matrix otherwise),
// mark the head trainable (in fp32, also on a bf16 model) and everything else
// frozen; full, bitfit and top_k mark the tensors of tuning_trains_tensor
// trainable and the rest frozen (dsee::Error on a bf16 model); adapter does
// the same and installs an adapter after each of adapter_modules; prefix
// marks the head trainable and sets model.attention_prefix (dsee::Error for
// L < 0, h < 1, or a model with pruned heads).
// Draws A (adapter: each down.weight; prefix: E, then W₁, b₁, W₂, b₂) from a
// CPU generator seeded with options.seed.
std::shared_ptr<ModelTuning> tuning_attach(PretrainedModel& model, const TuningOptions& options,
                                           const std::vector<OmegaEntry>& omega = {});

// The weight a projection deploys with: (W + ΔW)⊙M for mask_update (ours),
// W⊙M + ΔW for the reference; W⊙M without an update; W without a mask.
// ΔW covers every update block of the projection (GPT-2: the q and v thirds).
at::Tensor effective_weight(const Linear& linear);

// Replaces every projection's weight by its effective_weight (in the model's
// dtype: a bf16 model rounds W + ΔW to bf16 once), removes the tuning wrappers and the masks: the model then runs
// without dsee's tuning code and saves as a plain HF model. Adapters cannot
// merge: they are removed with their wrappers (export them first, as
// export --format hf does); so are prefixes (model.attention_prefix).
// `tuning` is unusable afterwards.
void model_merge(PretrainedModel& model);

}  // namespace dsee
