// Tuning methods on the linear seam: see tuning.h for the contract.
//
// One `ProjectionTuning` wraps each adapted projection and holds every update
// block of it (a whole projection, or GPT-2 c_attn's q and v thirds in one
// wrapper, the k third left alone). The updates are shared between the
// wrapper and the ModelTuning, so neither outlives the tensors it uses.
#include "core/tuning/tuning.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "base/enum_names.h"
#include "base/error.h"
#include "core/model/pretrained_model.h"
#include "core/model/transformer_layers.h"

namespace dsee {

namespace {
constexpr EnumName<TuningMethod> kMethods[] = {{TuningMethod::dsee, "dsee"},    {TuningMethod::lora, "lora"},
                                               {TuningMethod::full, "full"},    {TuningMethod::bitfit, "bitfit"},
                                               {TuningMethod::top_k, "top_k"},  {TuningMethod::adapter, "adapter"},
                                               {TuningMethod::prefix, "prefix"}};

// The task head: BERT "classifier.*"; RoBERTa "classifier.dense.*" and
// "classifier.out_proj.*"; GPT-2 none (its LM head is wte, tied).
bool is_task_head(const PretrainedModel& model, const std::string& name) {
  return model.config().family != ModelFamily::gpt2 && name.starts_with("classifier.");
}

// Every LayerNorm tensor: BERT/RoBERTa "embeddings.LayerNorm.*", "*.LayerNorm.*";
// GPT-2 "h.N.ln_1.*", "h.N.ln_2.*", "ln_f.*".
bool is_layer_norm(const std::string& name) {
  return name.starts_with("ln_f.") || name.find("LayerNorm.") != std::string::npos ||
         name.find(".ln_1.") != std::string::npos || name.find(".ln_2.") != std::string::npos;
}
}  // namespace

TuningMethod tuning_method_from_name(const std::string& name) {
  if (const auto method = enum_from_name(kMethods, name)) return *method;
  throw Error(
      fmt::format("unknown tuning method '{}' (expected dsee, lora, full, bitfit, top_k, adapter or prefix)", name));
}

const char* tuning_method_name(TuningMethod method) { return enum_name(kMethods, method); }

bool tuning_method_has_update(TuningMethod method) {
  return method == TuningMethod::dsee || method == TuningMethod::lora;
}

bool tuning_trains_tensor(const PretrainedModel& model, const TuningOptions& options, const std::string& name) {
  const auto& config = model.config();
  switch (options.method) {
    case TuningMethod::full:
      return true;
    case TuningMethod::dsee:
    case TuningMethod::lora:
      return options.train_head && is_task_head(model, name);
    case TuningMethod::bitfit:
      if (is_task_head(model, name)) return options.train_head;
      return name.ends_with(".bias");
    case TuningMethod::top_k: {
      DSEE_CHECK(options.top_layers >= 1 && options.top_layers <= config.num_layers,
                 "tuning.top_layers = {}: top_k trains the top k of the model's {} layers, so k must be in [1, {}]",
                 options.top_layers, config.num_layers, config.num_layers);
      if (is_task_head(model, name)) return options.train_head;
      if (config.family == ModelFamily::gpt2 && name.starts_with("ln_f.")) return true;
      return layer_of(name) >= config.num_layers - options.top_layers;
    }
    case TuningMethod::adapter:
      if (is_task_head(model, name)) return options.train_head;
      return options.adapter_train_layernorm && is_layer_norm(name);
    case TuningMethod::prefix:
      return options.train_head && is_task_head(model, name);
  }
  return false;
}

at::Tensor SparseUpdate::unscaled() const {
  const auto m = lora_B.size(0), n = lora_A.size(1);
  auto dense = at::mm(lora_B, lora_A);
  if (omega.numel() == 0) return dense;
  return dense.reshape({m * n}).index_add(0, omega, sparse_values).view({m, n});
}

at::Tensor SparseUpdate::delta_weight() const { return unscaled() * scale; }

namespace {

// What every wrapper of one ModelTuning reads: the options and the mode.
struct TuningState {
  TuningOptions options;
  at::ScalarType compute_dtype = at::kFloat;  // of the trainable state: fp32 (fp64 for an fp64 model)
  bool training = false;
};

// Note [Forward of a wrapped projection]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Without a mask (or with mask_update false) the output is tuning.h's (1):
// the frozen x·(W⊙M)ᵀ + b in the model's dtype plus, per block, the update
// term s·((u·Aᵀ)·Bᵀ + u_Ω·S) in the compute dtype, where u = drop(x) (one
// dropout draw per projection, shared by its blocks and both terms, as
// loralib's fused c_attn does) and u_Ω·S gathers the c input columns of u,
// multiplies by the S values and index_adds them into the c output rows. The
// block terms are laid side by side with zeros for rows no block covers (the
// k third of c_attn), then added to the frozen output.
//
// With a mask and mask_update (ours) the output is x·((W + ΔW)⊙M)ᵀ + b, with
// the dense ΔW [out, in] built once per call in the compute dtype and cast to
// the model's dtype for the single matmul. Merging (effective_weight) runs the
// same arithmetic, so merged and wrapped models agree to the last bit there.
// With dropout on in training the split form x·(W⊙M)ᵀ + b +
// drop(x)·(ΔW⊙M)ᵀ is used instead: equal without dropout, and it lets the
// dropout reach the update only.
//
// Note [Mixed precision]
// ~~~~~~~~~~~~~~~~~~~~~~
// Under run.precision = bf16 the model's tensors are bf16 (the model's
// dtype) and the trainable state is fp32: A, B, the S values, the task head
// (cast to fp32 at attach) and AdamW's moments. A wrapped projection then
// computes
//   frozen  = x·(W⊙M)ᵀ + b        bf16 matmul (fp32 accumulation inside the
//                                 kernel), rounded to bf16      [rounding 1]
//   update  = s·((u·Aᵀ)·Bᵀ + u_Ω·S) from u = x cast to fp32 (exact), in fp32
//   y       = bf16(fp32(frozen) + update)                        [rounding 2]
// which is what PEFT's LoRA layer does on a bf16 base model with fp32
// adapters (cast the input to the adapter dtype, add in fp32, cast the sum
// back to the base layer's dtype). The fused masked form would round W + ΔW
// to bf16 (ΔW below 2⁻⁹·|W| would vanish from the forward), so a bf16 weight
// always takes the split form x·(W⊙M)ᵀ + b + x·(ΔW⊙M)ᵀ, equal in exact
// arithmetic. Gradients reach the fp32 tensors through the casts unchanged
// and are fp32. Merging (model_merge) rounds W + ΔW to bf16 once, as PEFT's
// merge does on a bf16 base layer. An adapter (AdapterTuning) works the same
// way on its projection's bf16 output h: bf16(fp32(h) + up(act(down(fp32(h)))))
// with fp32 adapter tensors; the LayerNorms it trains are fp32 and take bf16
// input (torch's mixed-dtype layer norm: fp32 statistics, bf16 output).
class ProjectionTuning final : public LinearTuning {
 public:
  ProjectionTuning(std::shared_ptr<TuningState> state, std::vector<std::shared_ptr<SparseUpdate>> blocks)
      : state_(std::move(state)), blocks_(std::move(blocks)) {}

  at::Tensor forward(const Linear& base, const at::Tensor& x) override {
    const auto& options = state_->options;
    const bool dropping = state_->training && options.dropout > 0;
    const bool masked_update = base.mask.defined() && options.mask_update;
    const bool fused = masked_update && !dropping && base.weight.scalar_type() == state_->compute_dtype;
    if (fused) return at::linear(x, effective_weight(base), base.bias);

    const auto frozen = base.forward_frozen(x);
    auto u = x.to(state_->compute_dtype);
    if (dropping) u = at::dropout(u, options.dropout, true);
    const auto update =
        masked_update ? at::linear(u, delta_weight(base) * base.mask.to(state_->compute_dtype)) : update_term(base, u);
    // In place on the fresh frozen output (its GEMM's backward keeps the
    // inputs, not the output): one [..., out] temporary less per projection.
    if (frozen.scalar_type() == state_->compute_dtype) return frozen.add_(update);
    return (frozen.to(state_->compute_dtype) + update).to(frozen.scalar_type());
  }

  // (W + ΔW)⊙M (mask_update), W⊙M + ΔW (reference), W + ΔW (no mask).
  at::Tensor effective_weight(const Linear& base) const {
    const auto dtype = state_->compute_dtype;
    const auto delta = delta_weight(base);
    if (!base.mask.defined()) return (base.weight.to(dtype) + delta).to(base.weight.scalar_type());
    const auto mask = base.mask.to(dtype);
    const auto weight =
        state_->options.mask_update ? (base.weight.to(dtype) + delta) * mask : base.weight.to(dtype) * mask + delta;
    return weight.to(base.weight.scalar_type());
  }

  void keep_rows(const at::Tensor& rows) override;
  void keep_columns(const at::Tensor& columns) override;

 private:
  // ΔW of every block, dense [out, in], zero outside the blocks.
  at::Tensor delta_weight(const Linear& base) const {
    std::vector<at::Tensor> pieces;
    std::int64_t next = 0;
    const auto options = at::TensorOptions().dtype(state_->compute_dtype).device(base.weight.device());
    for (const auto& block : blocks_) {
      const auto& matrix = block->matrix;
      if (matrix.row_offset > next)
        pieces.push_back(at::zeros({matrix.row_offset - next, base.in_features()}, options));
      pieces.push_back(block->delta_weight());
      next = matrix.row_offset + matrix.rows;
    }
    if (next < base.out_features())
      pieces.push_back(at::zeros({base.out_features() - next, base.in_features()}, options));
    return pieces.size() == 1 ? pieces.front() : at::cat(pieces, 0);
  }

  // Σ_blocks s·((u·Aᵀ)·Bᵀ + u_Ω·S) as [..., out] (Note [Forward of a wrapped projection]).
  at::Tensor update_term(const Linear& base, const at::Tensor& u) const {
    std::vector<at::Tensor> pieces;
    std::int64_t next = 0;
    const auto last = u.dim() - 1;
    auto gap = [&](std::int64_t width) {
      auto sizes = u.sizes().vec();
      sizes.back() = width;
      return at::zeros(sizes, u.options());
    };
    for (const auto& block : blocks_) {
      const auto& matrix = block->matrix;
      if (matrix.row_offset > next) pieces.push_back(gap(matrix.row_offset - next));
      auto term = at::linear(at::linear(u, block->lora_A), block->lora_B);
      if (block->omega.numel() > 0) {
        const auto n = block->lora_A.size(1);
        const auto rows = block->omega.div(n, "floor");
        const auto columns = block->omega.remainder(n);
        term.index_add_(last, rows, u.index_select(last, columns) * block->sparse_values);
      }
      // In place: the terms are fresh GEMM outputs nothing else holds.
      pieces.push_back(term.mul_(block->scale));
      next = matrix.row_offset + matrix.rows;
    }
    if (next < base.out_features()) pieces.push_back(gap(base.out_features() - next));
    return pieces.size() == 1 ? pieces.front() : at::cat(pieces, last);
  }

  std::shared_ptr<TuningState> state_;
  std::vector<std::shared_ptr<SparseUpdate>> blocks_;  // by row_offset
};

// A fresh trainable leaf holding `values`.
at::Tensor trainable(const at::Tensor& values) { return values.detach().clone().requires_grad_(true); }

// One Houlsby adapter (tuning.h (2)): its tensors, in the compute dtype.
struct Adapter {
  std::string prefix;  // "<module>.adapter"
  at::Tensor down_weight, down_bias, up_weight, up_bias;
};

// Note [Adapter placement]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// Houlsby's adapter sits after the projection that closes a sub-layer
// (attention output, feed-forward output), before the residual add and the
// layer norm. The wrapper is the LinearTuning of that projection, so its
// output h (the frozen x·Wᵀ + b) goes through y = h + up(act(down(h))) and the
// model adds the residual and normalises as before. dsee's models have no
// hidden dropout, so "after the dropout" (adapter-transformers) and "before
// it" are the same here, as they are for any model in eval mode.
class AdapterTuning final : public LinearTuning {
 public:
  AdapterTuning(std::shared_ptr<TuningState> state, std::shared_ptr<Adapter> adapter)
      : state_(std::move(state)), adapter_(std::move(adapter)) {}

  at::Tensor forward(const Linear& base, const at::Tensor& x) override {
    const auto frozen = base.forward_frozen(x);
    const auto h = frozen.to(state_->compute_dtype);
    const auto& a = *adapter_;
    const auto inner = activation_apply(state_->options.adapter_activation, at::linear(h, a.down_weight, a.down_bias));
    return (h + at::linear(inner, a.up_weight, a.up_bias)).to(frozen.scalar_type());
  }
  // Head pruning removes input columns of the attention output: the output
  // the adapter reads keeps its width.
  void keep_columns(const at::Tensor& /*columns*/) override {}
  void keep_rows(const at::Tensor& /*rows*/) override {
    throw Error(fmt::format("'{}' has an adapter on its output, which cannot drop output rows", adapter_->prefix));
  }

  const Adapter& adapter() const { return *adapter_; }

 private:
  std::shared_ptr<TuningState> state_;
  std::shared_ptr<Adapter> adapter_;
};

// The prefixes of tuning.h (3): E (and the projection's W₁, b₁, W₂, b₂) in
// the compute dtype; keys_values() evaluates P and lays it out per layer.
class PrefixTuning final : public AttentionPrefix {
 public:
  PrefixTuning(const ModelConfig& config, at::ScalarType model_dtype)
      : layers_(config.num_layers), heads_(config.num_heads), head_dim_(config.head_dim()), dtype_(model_dtype) {}

  std::int64_t length() const override { return embedding.size(0); }
  // P [L, 2·layers·hidden] in the compute dtype.
  at::Tensor embeddings() const {
    if (!transform_in_weight.defined()) return embedding;
    const auto inner = at::tanh(at::linear(embedding, transform_in_weight, transform_in_bias));
    return at::linear(inner, transform_out_weight, transform_out_bias);
  }
  // PEFT's get_prompt: P viewed [L, 2·layers, heads, d], permuted to
  // [2·layers, heads, L, d].
  at::Tensor keys_values() const override {
    return embeddings().view({length(), 2 * layers_, heads_, head_dim_}).permute({1, 2, 0, 3}).to(dtype_);
  }

  at::Tensor embedding;                                 // E
  at::Tensor transform_in_weight, transform_in_bias;    // W₁ [h, hidden], b₁ (projection only)
  at::Tensor transform_out_weight, transform_out_bias;  // W₂ [2·layers·hidden, h], b₂

 private:
  std::int64_t layers_, heads_, head_dim_;
  at::ScalarType dtype_;
};

// Ω entries [rows, cols] row-major re-indexed through old→new maps (-1:
// dropped); returns the kept flat indices (ascending) and their values.
std::pair<at::Tensor, at::Tensor> omega_reindex(const at::Tensor& omega, const at::Tensor& values, std::int64_t cols,
                                                const at::Tensor& row_map, const at::Tensor& column_map,
                                                std::int64_t new_cols) {
  const auto rows = omega.div(cols, "floor");
  const auto columns = omega.remainder(cols);
  const auto new_rows = row_map.index_select(0, rows);
  const auto new_columns = column_map.index_select(0, columns);
  const auto keep = ((new_rows >= 0) & (new_columns >= 0)).nonzero().flatten();
  auto flat = new_rows.index_select(0, keep) * new_cols + new_columns.index_select(0, keep);
  auto kept_values = values.index_select(0, keep);
  const auto order = flat.argsort(/*stable=*/true);
  return {flat.index_select(0, order), kept_values.index_select(0, order)};
}

// old → new position map of size `size` for the kept `indices` (-1 elsewhere).
at::Tensor position_map(const at::Tensor& indices, std::int64_t size) {
  auto map = at::full({size}, -1, indices.options().dtype(at::kLong));
  map.index_copy_(0, indices, at::arange(indices.numel(), map.options()));
  return map;
}

void ProjectionTuning::keep_rows(const at::Tensor& rows_in) {
  at::NoGradGuard no_grad;
  const auto rows = rows_in.to(at::kCPU);
  for (auto& block : blocks_) {
    auto& matrix = block->matrix;
    const auto inside = ((rows >= matrix.row_offset) & (rows < matrix.row_offset + matrix.rows)).nonzero().flatten();
    const auto count = inside.numel();
    // New rows of this block: positions `inside` of the kept list. They must
    // stay one contiguous block (head pruning keeps rows in order).
    std::int64_t new_offset = 0;
    if (count > 0) {
      new_offset = inside[0].item<std::int64_t>();
      DSEE_ASSERT(inside[count - 1].item<std::int64_t>() - new_offset + 1 == count,
                  "keep_rows: the kept rows of {} are not contiguous", matrix.prefix);
    } else {
      new_offset = (rows < matrix.row_offset).sum().item<std::int64_t>();
    }
    const auto local = (rows.index_select(0, inside) - matrix.row_offset).to(block->lora_B.device());
    const auto row_map = position_map(local, matrix.rows);
    const auto cols = block->lora_A.size(1);
    auto [omega, values] = omega_reindex(block->omega, block->sparse_values, cols, row_map,
                                         at::arange(cols, block->omega.options()), cols);
    block->lora_B = trainable(block->lora_B.index_select(0, local));
    block->omega = omega;
    block->sparse_values = trainable(values);
    matrix.row_offset = new_offset;
    matrix.rows = count;
  }
}

void ProjectionTuning::keep_columns(const at::Tensor& columns_in) {
  at::NoGradGuard no_grad;
  for (auto& block : blocks_) {
    const auto columns = columns_in.to(block->lora_A.device());
    const auto cols = block->lora_A.size(1);
    const auto column_map = position_map(columns, cols);
    auto [omega, values] =
        omega_reindex(block->omega, block->sparse_values, cols, at::arange(block->matrix.rows, block->omega.options()),
                      column_map, columns.numel());
    block->lora_A = trainable(block->lora_A.index_select(1, columns));
    block->omega = omega;
    block->sparse_values = trainable(values);
  }
}

class ModelTuningImpl final : public ModelTuning {
 public:
  ModelTuningImpl(PretrainedModel& model, std::shared_ptr<TuningState> state,
                  std::vector<std::shared_ptr<SparseUpdate>> updates,
                  std::vector<std::shared_ptr<Adapter>> adapters = {}, std::shared_ptr<PrefixTuning> prefix = {})
      : ModelTuning(state->options),
        model_(&model),
        state_(std::move(state)),
        updates_(std::move(updates)),
        adapters_(std::move(adapters)),
        prefix_(std::move(prefix)) {}

  std::vector<SparseUpdate*> updates() override {
    std::vector<SparseUpdate*> out;
    for (auto& update : updates_) out.push_back(update.get());
    return out;
  }

  NamedTensors trainable_parameters() override {
    NamedTensors out;
    const auto method = options_.method;
    for (auto& update : updates_) {
      out.push_back({update->matrix.prefix + ".lora_A", update->lora_A});
      out.push_back({update->matrix.prefix + ".lora_B", update->lora_B});
      if (method == TuningMethod::dsee)
        out.push_back({update->matrix.prefix + ".sparse_values", update->sparse_values});
    }
    for (auto& adapter : adapters_) {
      out.push_back({adapter->prefix + ".down.weight", adapter->down_weight});
      out.push_back({adapter->prefix + ".down.bias", adapter->down_bias});
      out.push_back({adapter->prefix + ".up.weight", adapter->up_weight});
      out.push_back({adapter->prefix + ".up.bias", adapter->up_bias});
    }
    if (prefix_) {
      out.push_back({"prefix.embedding.weight", prefix_->embedding});
      if (prefix_->transform_in_weight.defined()) {
        out.push_back({"prefix.transform.0.weight", prefix_->transform_in_weight});
        out.push_back({"prefix.transform.0.bias", prefix_->transform_in_bias});
        out.push_back({"prefix.transform.2.weight", prefix_->transform_out_weight});
        out.push_back({"prefix.transform.2.bias", prefix_->transform_out_bias});
      }
    }
    for (const auto& slot : model_->tensor_slots())
      if (tuning_trains_tensor(*model_, options_, slot.name)) out.push_back({slot.name, *slot.tensor});
    return out;
  }

  void set_training(bool training) override { state_->training = training; }

 private:
  PretrainedModel* model_;
  std::shared_ptr<TuningState> state_;
  std::vector<std::shared_ptr<SparseUpdate>> updates_;
  std::vector<std::shared_ptr<Adapter>> adapters_;
  std::shared_ptr<PrefixTuning> prefix_;
};

void set_requires_grad(at::Tensor& tensor, bool requires_grad) {
  if (!tensor.is_leaf()) tensor = tensor.detach();
  tensor.requires_grad_(requires_grad);
}

// Ω entries by name, validated against the adapted matrices (dsee: one per
// matrix with its shape; lora: none or all empty).
std::map<std::string, const OmegaEntry*> omega_by_name(const std::vector<AdaptedMatrix>& matrices,
                                                       const std::vector<OmegaEntry>& omega, TuningMethod method) {
  std::map<std::string, const OmegaEntry*> by_name;
  for (const auto& entry : omega) {
    DSEE_CHECK(by_name.emplace(entry.name, &entry).second, "Ω lists matrix '{}' twice", entry.name);
    DSEE_CHECK(entry.indices.defined() && entry.indices.dim() == 1 && entry.indices.scalar_type() == at::kLong,
               "Ω of '{}' must be a 1-D int64 tensor of flat indices", entry.name);
    if (method == TuningMethod::lora)
      DSEE_CHECK(entry.indices.numel() == 0,
                 "method lora has no sparse part, but Ω of '{}' has c = {} indices; use method dsee, or an Ω with "
                 "c = 0",
                 entry.name, entry.indices.numel());
  }
  if (method == TuningMethod::lora) return by_name;

  std::set<std::string> adapted;
  for (const auto& matrix : matrices) {
    adapted.insert(matrix.name);
    const auto found = by_name.find(matrix.name);
    DSEE_CHECK(found != by_name.end(),
               "method dsee needs Ω for every adapted matrix, but '{}' has none ({} entries given); compute Ω with "
               "the same target_modules",
               matrix.name, omega.size());
    const auto& entry = *found->second;
    DSEE_CHECK(entry.rows == matrix.rows && entry.cols == matrix.cols(),
               "Ω of '{}' is for a {}×{} matrix, but the model's is {}×{}; Ω must come from this model (after the "
               "same head pruning)",
               matrix.name, entry.rows, entry.cols, matrix.rows, matrix.cols());
    const auto indices = entry.indices.to(at::kCPU);
    const auto c = indices.numel();
    if (c == 0) continue;
    DSEE_CHECK(indices.min().item<std::int64_t>() >= 0 && indices.max().item<std::int64_t>() < entry.rows * entry.cols,
               "Ω of '{}' has indices outside [0, {}) (its {}×{} matrix)", matrix.name, entry.rows * entry.cols,
               entry.rows, entry.cols);
    DSEE_CHECK(c == 1 || (indices.slice(0, 1) > indices.slice(0, 0, c - 1)).all().item<bool>(),
               "Ω of '{}' must be strictly ascending flat indices", matrix.name);
  }
  for (const auto& entry : omega)
    DSEE_CHECK(adapted.contains(entry.name),
               "Ω has an entry for '{}', which target_modules does not adapt; compute Ω with the same target_modules",
               entry.name);
  return by_name;
}

// tuning.h (3): E ~ N(0, 1) (nn.Embedding's init), then W₁, b₁, W₂, b₂ ~
// U(±1/√fan_in) (nn.Linear's bound for weight and bias alike), drawn in that
// order from one CPU generator seeded with options.seed; prefix_init_zero
// then zeroes what PEFT's init_weights = "zero" zeroes.
std::shared_ptr<ModelTuning> prefix_attach(PretrainedModel& model, const std::shared_ptr<TuningState>& state) {
  const auto& options = state->options;
  const auto& config = model.config();
  DSEE_CHECK(options.prefix_length >= 0, "tuning.prefix_length must be 0 or more, got {}", options.prefix_length);
  DSEE_CHECK(!options.prefix_projection || options.prefix_hidden > 0,
             "tuning.prefix_hidden must be positive with tuning.prefix_projection = true, got {}",
             options.prefix_hidden);
  DSEE_CHECK(config.pruned_heads.empty(),
             "tuning.method prefix needs every attention head (a prefix is [heads, L, head_dim] per layer), but the "
             "model has pruned heads (config.json pruned_heads); start from the unpruned model");
  DSEE_CHECK(!model.attention_prefix, "the model already has a prefix attached; attach once per model");
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const auto fp32 = at::TensorOptions().dtype(at::kFloat);
  const auto on_device = at::TensorOptions().dtype(state->compute_dtype).device(model.device());
  const auto uniform = [&](at::IntArrayRef shape, std::int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    return trainable((at::rand(shape, generator, fp32) * (2 * bound) - bound).to(on_device));
  };
  const auto L = options.prefix_length, hidden = config.hidden_size, h = options.prefix_hidden;
  const auto width = 2 * config.num_layers * hidden;
  auto prefix = std::make_shared<PrefixTuning>(config, model.dtype());
  if (!options.prefix_projection) {
    prefix->embedding = trainable(at::randn({L, width}, generator, fp32).to(on_device));
    if (options.prefix_init_zero) prefix->embedding.detach().zero_();
  } else {
    prefix->embedding = trainable(at::randn({L, hidden}, generator, fp32).to(on_device));
    prefix->transform_in_weight = uniform({h, hidden}, hidden);
    prefix->transform_in_bias = uniform({h}, hidden);
    prefix->transform_out_weight = uniform({width, h}, h);
    prefix->transform_out_bias = uniform({width}, h);
    if (options.prefix_init_zero) {
      prefix->transform_out_weight.detach().zero_();
      prefix->transform_out_bias.detach().zero_();
    }
  }
  model.attention_prefix = prefix;
  return std::make_shared<ModelTuningImpl>(model, state, std::vector<std::shared_ptr<SparseUpdate>>{},
                                           std::vector<std::shared_ptr<Adapter>>{}, std::move(prefix));
}

}  // namespace

std::shared_ptr<ModelTuning> tuning_attach(PretrainedModel& model, const TuningOptions& options,
                                           const std::vector<OmegaEntry>& omega) {
  auto state = std::make_shared<TuningState>();
  state->options = options;
  state->compute_dtype = model.dtype() == at::kDouble ? at::kDouble : at::kFloat;

  // Note [Mixed precision]: a bf16 model keeps its frozen weights in bf16; a
  // trainable tensor needs fp32 master weights: the updates, the adapters, and
  // the model tensors that train under dsee, lora and adapter (the head, the
  // LayerNorms), which are cast to fp32 below. full, bitfit and top_k would
  // need fp32 copies of the projections.
  const bool in_place = !tuning_method_has_update(options.method);
  DSEE_CHECK(!(options.method == TuningMethod::prefix && model.dtype() == at::kBFloat16),
             "tuning.method prefix trains the task head in place, which run.precision = bf16 stores in bf16 (no fp32 "
             "master weights); use run.precision = fp32 with prefix tuning");
  DSEE_CHECK(!(in_place && options.method != TuningMethod::adapter && model.dtype() == at::kBFloat16),
             "tuning.method {} trains weights of the model in place, which run.precision = bf16 stores in bf16 (no "
             "fp32 master weights); use run.precision = fp32 with {} fine-tuning, or method dsee / lora with bf16",
             tuning_method_name(options.method), tuning_method_name(options.method));
  if (in_place) {
    for (const auto& slot : model.tensor_slots()) {
      const bool train = tuning_trains_tensor(model, options, slot.name);
      if (train && slot.tensor->scalar_type() != state->compute_dtype)
        *slot.tensor = slot.tensor->detach().to(state->compute_dtype);
      set_requires_grad(*slot.tensor, train);
    }
    if (options.method == TuningMethod::prefix) return prefix_attach(model, state);
    if (options.method != TuningMethod::adapter)
      return std::make_shared<ModelTuningImpl>(model, state, std::vector<std::shared_ptr<SparseUpdate>>{});

    // tuning.h (2): down.weight one randn(m, d) · 0.01 per adapter in
    // adapter_modules order from one CPU generator seeded once; the rest 0.
    DSEE_CHECK(options.adapter_size > 0, "tuning.adapter_size must be positive, got {}", options.adapter_size);
    auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    const auto on_device = at::TensorOptions().dtype(state->compute_dtype).device(model.device());
    const auto m = options.adapter_size;
    std::vector<std::shared_ptr<Adapter>> adapters;
    for (const auto& module : adapter_modules(model)) {
      auto& linear = model.linear(module);
      DSEE_CHECK(!linear.tuning, "projection '{}' already has a tuning method attached; attach once per model", module);
      const auto d = linear.out_features();
      auto adapter = std::make_shared<Adapter>();
      adapter->prefix = module + ".adapter";
      const auto down = at::randn({m, d}, generator, at::TensorOptions().dtype(at::kFloat)) * 0.01;
      adapter->down_weight = trainable(down.to(on_device));
      adapter->down_bias = trainable(at::zeros({m}, on_device));
      adapter->up_weight = trainable(at::zeros({d, m}, on_device));
      adapter->up_bias = trainable(at::zeros({d}, on_device));
      linear.tuning = std::make_shared<AdapterTuning>(state, adapter);
      adapters.push_back(std::move(adapter));
    }
    return std::make_shared<ModelTuningImpl>(model, state, std::vector<std::shared_ptr<SparseUpdate>>{},
                                             std::move(adapters));
  }

  DSEE_CHECK(options.rank > 0, "tuning rank must be positive, got {}", options.rank);
  DSEE_CHECK(std::isfinite(options.alpha), "tuning alpha must be finite, got {}", options.alpha);
  DSEE_CHECK(options.dropout >= 0 && options.dropout < 1, "tuning dropout must be in [0, 1), got {}", options.dropout);
  const auto patterns =
      options.target_modules.empty() ? default_target_modules(model.config().family) : options.target_modules;
  state->options.target_modules = patterns;
  const auto matrices = adapted_matrices(model, patterns);
  const auto by_name = omega_by_name(matrices, omega, options.method);

  // A: one randn(r, n) · 0.02 per matrix in adapted order, from one CPU
  // generator seeded once (a Python torch.Generator().manual_seed(seed)
  // drawing torch.randn in the same order gives the same A).
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const auto dtype = state->compute_dtype;
  const auto on_device = at::TensorOptions().dtype(dtype).device(model.device());
  std::vector<std::shared_ptr<SparseUpdate>> updates;
  std::map<Linear*, std::vector<std::shared_ptr<SparseUpdate>>> by_linear;
  for (const auto& matrix : matrices) {
    auto update = std::make_shared<SparseUpdate>();
    update->matrix = matrix;
    update->scale = options.alpha / double(options.rank);
    const auto a = at::randn({options.rank, matrix.cols()}, generator, at::TensorOptions().dtype(at::kFloat)) * 0.02;
    update->lora_A = trainable(a.to(on_device));
    update->lora_B = trainable(at::zeros({matrix.rows, options.rank}, on_device));
    const auto found = by_name.find(matrix.name);
    update->omega =
        found != by_name.end() ? found->second->indices.to(model.device()) : at::empty({0}, on_device.dtype(at::kLong));
    update->sparse_values = trainable(at::zeros({update->omega.numel()}, on_device));
    by_linear[matrix.linear].push_back(update);
    updates.push_back(std::move(update));
  }
  for (auto& [linear, blocks] : by_linear) {
    DSEE_CHECK(!linear->tuning, "projection '{}' already has a tuning method attached; attach once per model",
               blocks.front()->matrix.module);
    std::sort(blocks.begin(), blocks.end(),
              [](const auto& a, const auto& b) { return a->matrix.row_offset < b->matrix.row_offset; });
    for (std::size_t i = 1; i < blocks.size(); ++i)
      DSEE_CHECK(blocks[i]->matrix.row_offset >= blocks[i - 1]->matrix.row_offset + blocks[i - 1]->matrix.rows,
                 "target_modules adapt '{}' twice ('{}' overlaps '{}'); use either the whole c_attn or its thirds",
                 blocks[i]->matrix.module, blocks[i - 1]->matrix.prefix, blocks[i]->matrix.prefix);
  }
  for (const auto& slot : model.tensor_slots()) {
    const bool train = tuning_trains_tensor(model, options, slot.name);
    // Note [Mixed precision]: the head trains in fp32 on a bf16 model.
    if (train && slot.tensor->scalar_type() != dtype) *slot.tensor = slot.tensor->detach().to(dtype);
    set_requires_grad(*slot.tensor, train);
  }
  for (auto& [linear, blocks] : by_linear) linear->tuning = std::make_shared<ProjectionTuning>(state, blocks);
  return std::make_shared<ModelTuningImpl>(model, state, std::move(updates));
}

std::vector<std::string> adapter_modules(PretrainedModel& model) {
  const bool gpt2 = model.config().family == ModelFamily::gpt2;
  std::vector<std::string> out;
  for (const auto& [name, linear] : model.linears()) {
    if (layer_of(name) < 0) continue;
    if (gpt2 ? name.ends_with(".c_proj") : name.ends_with(".output.dense")) out.push_back(name);
  }
  return out;
}

std::int64_t adapter_parameter_count(std::int64_t d, std::int64_t m) { return 2 * d * m + m + d; }

std::int64_t prefix_parameter_count(const ModelConfig& config, const TuningOptions& options) {
  const auto L = options.prefix_length, hidden = config.hidden_size, h = options.prefix_hidden;
  const auto width = 2 * config.num_layers * hidden;
  if (!options.prefix_projection) return L * width;
  return L * hidden + (hidden + 1) * h + (h + 1) * width;
}

at::Tensor prefix_embeddings(const PretrainedModel& model) {
  const auto* prefix = dynamic_cast<const PrefixTuning*>(model.attention_prefix.get());
  if (!prefix) return {};
  at::NoGradGuard no_grad;
  return prefix->embeddings().to(at::kFloat).contiguous();
}

std::vector<at::Tensor> adapter_weights(const Linear& linear) {
  const auto* adapter = dynamic_cast<const AdapterTuning*>(linear.tuning.get());
  if (!adapter) return {};
  return {adapter->adapter().down_weight, adapter->adapter().up_weight};
}

at::Tensor effective_weight(const Linear& linear) {
  if (!linear.tuning || dynamic_cast<const AdapterTuning*>(linear.tuning.get())) return linear.masked_weight();
  const auto* projection = dynamic_cast<const ProjectionTuning*>(linear.tuning.get());
  DSEE_CHECK(projection, "the tuning method on this projection is not a weight update, so it has no effective weight");
  return projection->effective_weight(linear);
}

void model_merge(PretrainedModel& model) {
  at::NoGradGuard no_grad;
  model.attention_prefix.reset();
  for (auto& [name, linear] : model.linears()) {
    if (!linear->tuning && !linear->mask.defined()) continue;
    const bool requires_grad = linear->weight.requires_grad();
    auto merged = effective_weight(*linear).detach().to(model.dtype()).contiguous();
    linear->weight = merged.requires_grad_(requires_grad);
    linear->tuning.reset();
    linear->mask = at::Tensor();
  }
}

}  // namespace dsee
