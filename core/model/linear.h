// The linear projection every model in dsee is built from, and the seam that
// tuning methods (DSEE, LoRA, adapters) and pruning plug into.
//
// Note [The linear seam]
// ~~~~~~~~~~~~~~~~~~~~~~
// Every projection of BERT, RoBERTa and GPT-2 is one `Linear`: a plain struct
// of tensors, not a torch::nn::Module, owned by its layer and reachable by its
// Hugging Face module name through PretrainedModel::linear("...query") or the
// list PretrainedModel::linears(). What a later method does to it:
//
//   wrap or replace  set `tuning` to a LinearTuning. forward() then calls
//                    tuning->forward(*this, x), which may call
//                    forward_frozen(x) and add its own term (DSEE, LoRA:
//                    y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ + s·x·P_Ω(S)ᵀ) or ignore the
//                    frozen weight altogether (a replacement).
//   mask             set `mask` ([out, in], 0/1, the weight's dtype):
//                    forward_frozen uses W ⊙ M. The pretrained weight itself
//                    is never overwritten, so a mask can be changed or dropped.
//   shrink           keep_rows(idx) / keep_columns(idx) select output rows or
//                    input columns of weight, bias and mask in place and tell
//                    the tuning method (LinearTuning::keep_rows/_columns) so
//                    it shrinks its own state (B's rows, Ω's entries). Head
//                    pruning is keep_rows on query/key/value (GPT-2: on the
//                    three thirds of c_attn) and keep_columns on the attention
//                    output; nothing else of the model is rebuilt.
//
// Orientation: `weight` is always [out, in] (torch.nn.Linear's layout), also
// for GPT-2's Conv1D projections, whose HF checkpoints store [in, out]. The
// transpose happens once at load and once at save (pretrained_model.cpp), so
// a tuning method sees one layout for all three families, and the DSEE
// formulas (W ∈ R^{m×n}, m = out) read the same everywhere. For c_attn the
// rows are [q | k | v], each hidden-size (kept heads × head_dim) rows long;
// the q and v thirds that DSEE adapts are rows [0, d) and [2d, 3d).
//
// Precision: a projection computes in its weight's dtype. An input of another
// dtype is cast to it first, so under run.precision = bf16
// (docs/precision.md) the frozen bf16 projections take bf16 activations and the
// fp32 task head takes the bf16 features and returns fp32 logits. A tuning
// method adds its update from fp32 parameters (tuning.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dsee {

struct Linear;

// A tuning method attached to one Linear. Owns its own tensors (A, B, S...).
class LinearTuning {
 public:
  virtual ~LinearTuning() = default;
  // The projection's output for x [..., in] → [..., out].
  virtual at::Tensor forward(const Linear& base, const at::Tensor& x) = 0;
  // Called after the base kept only these output rows / input columns
  // (int64 indices into the sizes before the call).
  virtual void keep_rows(const at::Tensor& rows) = 0;
  virtual void keep_columns(const at::Tensor& columns) = 0;
};

struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out]; undefined when the projection has none
  at::Tensor mask;    // [out, in] 0/1 on weight; undefined: no mask
  std::shared_ptr<LinearTuning> tuning;

  std::int64_t out_features() const { return weight.size(0); }
  std::int64_t in_features() const { return weight.size(1); }

  // x [..., in] → [..., out], through the tuning method when one is set; the
  // output has the weight's dtype (x is cast to it when they differ).
  at::Tensor forward(const at::Tensor& x) const;
  // x·(W ⊙ M)ᵀ + b: the pretrained projection with its mask.
  at::Tensor forward_frozen(const at::Tensor& x) const;
  // W ⊙ M (W when there is no mask).
  at::Tensor masked_weight() const;

  void keep_rows(const at::Tensor& rows);
  void keep_columns(const at::Tensor& columns);
};

}  // namespace dsee
