// GPT-2 inputs for the data-to-text tasks (docs/nlg-data.md, "Encoding"):
// the training sequence of the LoRA NLG examples, the decoding prompt, and
// batches padded to their longest row in length-bucketed order.
//
// Training: ids = BPE(context) + [eos] + BPE(" " + completion) + [eos],
// right-truncated to max_seq_length. The loss covers the completion and its
// final eos (positions context_length.. of ids), never the context or its eos:
// labels are the ids there and -100 (core/train/losses.h kIgnoreLabel)
// elsewhere, padding included, which is LoRA's mask written as
// GPT2LMHeadModel's labels.
// Decoding: BPE(context) + [eos], of which the last max_prompt_length tokens
// (LoRA: seq_len − 64).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/nlg_data.h"
#include "data/tokenizer.h"

namespace dsee {

// The id of "<|endoftext|>" in `tokenizer`; dsee::Error when it has none.
std::int64_t nlg_eos_id(const Tokenizer& tokenizer);

struct NlgSequence {
  std::vector<std::int64_t> ids;
  std::int64_t context_length = 0;  // context tokens and their eos; may exceed ids.size() after truncation
};

NlgSequence nlg_encode_training(const Tokenizer& tokenizer, const std::string& context, const std::string& completion,
                                std::int64_t eos_id, std::int64_t max_seq_length);
std::vector<NlgSequence> nlg_encode_examples(const Tokenizer& tokenizer, const std::vector<NlgExample>& examples,
                                             std::int64_t eos_id, std::int64_t max_seq_length);

// BPE(context) + [eos], keeping the last max_prompt_length tokens.
std::vector<std::int64_t> nlg_encode_prompt(const Tokenizer& tokenizer, const std::string& context, std::int64_t eos_id,
                                            std::int64_t max_prompt_length);

// sequences[rows[i]] as row i, right-padded with pad_id to the longest row
// (at least pad_to): input_ids, attention_mask (1 on tokens, 0 on padding),
// labels (ids on the completion, -100 elsewhere), all [rows, longest] int64.
struct NlgBatch {
  at::Tensor input_ids, attention_mask, labels;
};
NlgBatch nlg_collate(const std::vector<NlgSequence>& sequences, const std::vector<std::int64_t>& rows,
                     std::int64_t pad_id, std::int64_t pad_to = 0);

// One epoch's batches of dataset indices, each of sequences of similar
// length: the epoch's shuffled order (DistributedSampler's permutation of
// (seed, epoch)) is cut into pools of pool_batches × batch_size, each pool
// sorted by length (longest first, ties in shuffled order) and cut into
// batches, and the batches are shuffled. Every index appears once; the same
// arguments give the same batches. lengths[i]: the length of sequence i.
std::vector<std::vector<std::int64_t>> nlg_length_batches(const std::vector<std::int64_t>& lengths,
                                                          std::int64_t batch_size, std::uint64_t seed,
                                                          std::int64_t epoch, std::int64_t pool_batches = 50);

// Tokens a set of batches feeds the model: `tokens` real ones, `padded` with
// each batch padded to its longest row, `fixed` with every row padded to
// max_seq_length (LoRA's loader).
struct NlgPaddingCount {
  std::int64_t tokens = 0, padded = 0, fixed = 0;
};
NlgPaddingCount nlg_padding_count(const std::vector<std::int64_t>& lengths,
                                  const std::vector<std::vector<std::int64_t>>& batches, std::int64_t max_seq_length);

}  // namespace dsee
