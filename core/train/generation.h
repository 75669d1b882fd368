// Decoding continuations of prompts with GPT-2: greedy search and beam search,
// every prompt and every beam of a batch in one forward per step, with the
// key/value cache. The result is token for token what transformers'
// GPT2LMHeadModel.generate(do_sample=False, num_beams=beam_size, ...) returns
// for the same prompts left-padded into one batch (tests/parity/
// test_generate.py); Note [Beam search as transformers runs it] in the .cpp
// says which of its rules that takes. docs/generation.md is the user's view.
//
// Shapes: R = batch · beam_size rows, V the vocabulary, L the longest prompt.
// The model runs in inference mode through its adapted linears, so a LoRA or
// DSEE update attached to it (core/tuning) takes part.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace dsee {

class PretrainedModel;

struct GenerationOptions {
  std::int64_t beam_size = 1;             // 1: greedy search
  double length_penalty = 1.0;            // a finished beam scores Σ log p / new_tokens^length_penalty
  std::int64_t no_repeat_ngram_size = 0;  // 0: off; else no n-gram occurs twice in a row (prompt included)
  std::int64_t max_new_tokens = 20;       // ≥ 1
  std::int64_t min_new_tokens = 0;        // eos ids are banned before this many new tokens
  std::vector<std::int64_t> eos_ids;      // at least one; any of them ends a sequence
  std::int64_t pad_id = -1;               // left padding of prompts; -1: eos_ids[0] (as transformers)
};

// What a search needs of a language model (GPT-2 here; a fake table in the
// unit tests). Rows are independent sequences; logits are [rows, V] fp32 for
// the next token after each row's last input.
class NextTokenModel {
 public:
  virtual ~NextTokenModel() = default;
  // The whole (left-padded) prompts: ids, mask (1 token / 0 padding) and
  // position ids, each [rows, L] int64. Starts a new cache.
  virtual at::Tensor prefill(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) = 0;
  // One more token per row: ids and positions [rows, 1], mask [rows, length so far + 1].
  virtual at::Tensor step(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) = 0;
  // Row i of the cache becomes old row rows[i] (int64 [new rows]).
  virtual void reorder(const at::Tensor& rows) = 0;
};

// GPT-2 (dsee::Error for another family) as a NextTokenModel. Keeps a
// reference to `model`.
std::unique_ptr<NextTokenModel> next_token_model_of(PretrainedModel& model);

// The continuations of `prompts` (each non-empty), decoded as one batch: for
// prompt i, the new tokens up to and including the first eos id, or
// max_new_tokens of them. dsee::Error on bad options or an empty prompt.
std::vector<std::vector<std::int64_t>> generate(NextTokenModel& model,
                                                const std::vector<std::vector<std::int64_t>>& prompts,
                                                const GenerationOptions& options);
std::vector<std::vector<std::int64_t>> generate(PretrainedModel& model,
                                                const std::vector<std::vector<std::int64_t>>& prompts,
                                                const GenerationOptions& options);

// The pieces, exposed for tests.
// scores [R, V] with -inf where the next token would repeat an n-gram of
// sequences [R, len] (transformers' NoRepeatNGramLogitsProcessor).
at::Tensor no_repeat_ngram_ban(const at::Tensor& sequences, const at::Tensor& scores, std::int64_t ngram_size);
// Σ log p of a finished beam [..] fp32 → its ranking score: / new_tokens^length_penalty.
at::Tensor length_penalized(const at::Tensor& sum_log_probs, std::int64_t new_tokens, double length_penalty);

}  // namespace dsee
