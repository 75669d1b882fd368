// GPT-2 training and prompt encoding for E2E, WebNLG and DART: see
// nlg_encoding.h.
#include "data/nlg_encoding.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "base/error.h"
#include "data/distributed_sampler.h"

namespace dsee {

std::int64_t nlg_eos_id(const Tokenizer& tokenizer) {
  const auto id = tokenizer.token_id("<|endoftext|>");
  DSEE_CHECK(id.has_value(),
             "the tokenizer ({}) has no '<|endoftext|>' token; the E2E, WebNLG and DART tasks need a "
             "GPT-2 tokenizer folder",
             tokenizer.describe());
  return *id;
}

NlgSequence nlg_encode_training(const Tokenizer& tokenizer, const std::string& context, const std::string& completion,
                                std::int64_t eos_id, std::int64_t max_seq_length) {
  DSEE_CHECK(max_seq_length > 0, "task.max_seq_length is {}; it must be positive", max_seq_length);
  NlgSequence s;
  s.ids = tokenizer.tokenize(context);
  s.ids.push_back(eos_id);
  s.context_length = static_cast<std::int64_t>(s.ids.size());
  const std::vector<std::int64_t> answer = tokenizer.tokenize(" " + completion);
  s.ids.insert(s.ids.end(), answer.begin(), answer.end());
  s.ids.push_back(eos_id);
  if (static_cast<std::int64_t>(s.ids.size()) > max_seq_length) s.ids.resize(static_cast<std::size_t>(max_seq_length));
  return s;
}

std::vector<NlgSequence> nlg_encode_examples(const Tokenizer& tokenizer, const std::vector<NlgExample>& examples,
                                             std::int64_t eos_id, std::int64_t max_seq_length) {
  std::vector<NlgSequence> out;
  out.reserve(examples.size());
  for (const NlgExample& e : examples)
    out.push_back(nlg_encode_training(tokenizer, e.context, e.completion, eos_id, max_seq_length));
  return out;
}

std::vector<std::int64_t> nlg_encode_prompt(const Tokenizer& tokenizer, const std::string& context, std::int64_t eos_id,
                                            std::int64_t max_prompt_length) {
  DSEE_CHECK(max_prompt_length > 0, "the prompt length is {}; task.max_seq_length must exceed the tokens generated",
             max_prompt_length);
  std::vector<std::int64_t> ids = tokenizer.tokenize(context);
  ids.push_back(eos_id);
  const auto n = static_cast<std::int64_t>(ids.size());
  if (n > max_prompt_length) ids.erase(ids.begin(), ids.begin() + (n - max_prompt_length));
  return ids;
}

NlgBatch nlg_collate(const std::vector<NlgSequence>& sequences, const std::vector<std::int64_t>& rows,
                     std::int64_t pad_id, std::int64_t pad_to) {
  DSEE_CHECK(!rows.empty(), "nlg_collate: a batch needs at least one row");
  std::int64_t longest = pad_to;
  for (const std::int64_t r : rows) {
    DSEE_ASSERT(r >= 0 && r < static_cast<std::int64_t>(sequences.size()), "row {} of {} sequences", r,
                sequences.size());
    longest = std::max(longest, static_cast<std::int64_t>(sequences[static_cast<std::size_t>(r)].ids.size()));
  }
  const auto n = static_cast<std::int64_t>(rows.size());
  NlgBatch b;
  b.input_ids = at::full({n, longest}, pad_id, at::kLong);
  b.attention_mask = at::zeros({n, longest}, at::kLong);
  b.labels = at::full({n, longest}, std::int64_t{-100}, at::kLong);
  auto* ids = b.input_ids.data_ptr<std::int64_t>();
  auto* mask = b.attention_mask.data_ptr<std::int64_t>();
  auto* labels = b.labels.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const NlgSequence& s = sequences[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])];
    const auto length = static_cast<std::int64_t>(s.ids.size());
    for (std::int64_t t = 0; t < length; ++t) {
      const std::int64_t id = s.ids[static_cast<std::size_t>(t)];
      ids[i * longest + t] = id;
      mask[i * longest + t] = 1;
      if (t >= s.context_length) labels[i * longest + t] = id;
    }
  }
  return b;
}

std::vector<std::vector<std::int64_t>> nlg_length_batches(const std::vector<std::int64_t>& lengths,
                                                          std::int64_t batch_size, std::uint64_t seed,
                                                          std::int64_t epoch, std::int64_t pool_batches) {
  DSEE_CHECK(batch_size > 0 && pool_batches > 0, "length batches: batch size {} and pool {} must be positive",
             batch_size, pool_batches);
  const auto n = static_cast<std::int64_t>(lengths.size());
  if (n == 0) return {};
  SamplerOptions options;
  options.dataset_size = n;
  options.seed = seed;
  const std::vector<std::int64_t> order = DistributedSampler(options, 0, 1).epoch_order(epoch);
  std::vector<std::vector<std::int64_t>> batches;
  const std::int64_t pool = batch_size * pool_batches;
  for (std::int64_t begin = 0; begin < n; begin += pool) {
    std::vector<std::int64_t> part(order.begin() + begin, order.begin() + std::min(n, begin + pool));
    std::stable_sort(part.begin(), part.end(), [&](std::int64_t a, std::int64_t b) {
      return lengths[static_cast<std::size_t>(a)] > lengths[static_cast<std::size_t>(b)];
    });
    for (std::size_t k = 0; k < part.size(); k += static_cast<std::size_t>(batch_size))
      batches.emplace_back(part.begin() + static_cast<std::ptrdiff_t>(k),
                           part.begin() + static_cast<std::ptrdiff_t>(std::min(part.size(), k + batch_size)));
  }
  // The batch order: a second permutation, of the batches, from a seed of its own.
  SamplerOptions batch_options;
  batch_options.dataset_size = static_cast<std::int64_t>(batches.size());
  batch_options.seed = seed ^ 0x9E3779B97F4A7C15ULL;
  const std::vector<std::int64_t> batch_order = DistributedSampler(batch_options, 0, 1).epoch_order(epoch);
  std::vector<std::vector<std::int64_t>> out;
  out.reserve(batches.size());
  for (const std::int64_t k : batch_order) out.push_back(std::move(batches[static_cast<std::size_t>(k)]));
  return out;
}

NlgPaddingCount nlg_padding_count(const std::vector<std::int64_t>& lengths,
                                  const std::vector<std::vector<std::int64_t>>& batches, std::int64_t max_seq_length) {
  NlgPaddingCount c;
  for (const auto& batch : batches) {
    std::int64_t longest = 0;
    for (const std::int64_t i : batch) {
      const std::int64_t length = lengths[static_cast<std::size_t>(i)];
      c.tokens += length;
      longest = std::max(longest, length);
    }
    c.padded += longest * static_cast<std::int64_t>(batch.size());
    c.fixed += max_seq_length * static_cast<std::int64_t>(batch.size());
  }
  return c;
}

}  // namespace dsee
