// Greedy and beam search over a NextTokenModel, and GPT-2 as one; see
// generation.h.
//
// Note [Beam search as transformers runs it]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// "Token-identical to transformers" pins down more than the textbook beam
// search; these are the rules of transformers' GenerationMixin (5.x,
// generation/utils.py _beam_search and _sample) that this file follows, with
// the same tensor operations in the same order and dtypes (fp32 scores), so
// that even ties and the -1e9 sentinels sort the same way.
//
//   prompts    left-padded to the longest with pad_id; mask 1/0; position
//              ids cumsum(mask) - 1, 0 on padding. The prompt is run once per
//              prompt and its cache copied to every beam (transformers runs
//              the beam copies; the rows are the same computation).
//   scores     greedy: the processors on the raw logits, then argmax; a row
//              that ended keeps receiving pad_id. Beam: log_softmax, then the
//              processors, plus the beam's running sum.
//   processors no_repeat_ngram_size bans the last token of every earlier
//              n-gram whose first n-1 tokens equal the row's last n-1 (over
//              the whole row, padding and prompt included); before
//              min_new_tokens new tokens every eos id is banned.
//   candidates the top K·max(2, 1 + #eos) of the batch item's beams × vocab.
//              A candidate "hits" when its token is an eos id or the
//              sequence reaches prompt + max_new_tokens. The best K that do
//              not hit run on (a hit gets -1e9). Of the top K candidates,
//              those that hit join the item's K finished hypotheses if their
//              Σ log p / new_tokens^length_penalty beats one there.
//   stopping   early_stopping = False (transformers' default): an item stops
//              taking hypotheses once its K finished slots are full and its
//              best running sum divided by (current new tokens)^lp cannot beat
//              the worst finished score. The loop ends when no item can
//              improve or every candidate hit (max_new_tokens reached).
//   result     the best finished hypothesis of each item; this file returns
//              its new tokens up to the first eos (transformers pads the rest).
// The cache is reordered by the running beams' source rows after each step
// (KvCache::reorder), as transformers' DynamicCache.reorder_cache does.
#include "core/train/generation.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "base/error.h"
#include "core/model/pretrained_model.h"

namespace dsee {
namespace {

class Gpt2NextToken final : public NextTokenModel {
 public:
  explicit Gpt2NextToken(PretrainedModel& model) : model_(model) {}

  at::Tensor prefill(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) override {
    cache_ = KvCache{};
    padded_ = !mask.all().item<bool>();  // transformers drops an all-ones mask too
    return forward(ids, mask, positions);
  }
  at::Tensor step(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) override {
    return forward(ids, mask, positions);
  }
  void reorder(const at::Tensor& rows) override { cache_.reorder(rows.to(model_.device())); }

 private:
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& positions) {
    const auto device = model_.device();
    ModelInput input;
    input.input_ids = ids.to(device);
    if (padded_) input.attention_mask = mask.to(device);
    input.position_ids = positions.to(device);
    input.cache = &cache_;
    return model_.forward(input).logits.select(1, -1).to(at::kFloat);  // [rows, V]
  }

  PretrainedModel& model_;
  KvCache cache_;
  bool padded_ = false;
};

struct PaddedPrompts {
  at::Tensor ids, mask, positions;  // [batch, longest] int64
  std::int64_t longest = 0;
};

PaddedPrompts prompts_left_pad(const std::vector<std::vector<std::int64_t>>& prompts, std::int64_t pad) {
  PaddedPrompts out;
  for (const auto& p : prompts) out.longest = std::max(out.longest, std::int64_t(p.size()));
  const auto batch = std::int64_t(prompts.size());
  std::vector<std::int64_t> ids(batch * out.longest, pad), mask(batch * out.longest, 0);
  for (std::int64_t i = 0; i < batch; ++i) {
    const auto& p = prompts[i];
    const auto start = i * out.longest + out.longest - std::int64_t(p.size());
    std::copy(p.begin(), p.end(), ids.begin() + start);
    std::fill(mask.begin() + start, mask.begin() + (i + 1) * out.longest, 1);
  }
  out.ids = at::tensor(ids, at::kLong).view({batch, out.longest});
  out.mask = at::tensor(mask, at::kLong).view({batch, out.longest});
  out.positions = (out.mask.cumsum(-1) - 1).masked_fill(out.mask.eq(0), 0);
  return out;
}

void options_check(const std::vector<std::vector<std::int64_t>>& prompts, const GenerationOptions& o) {
  DSEE_CHECK(!prompts.empty(), "generation: no prompts given");
  for (std::size_t i = 0; i < prompts.size(); ++i)
    DSEE_CHECK(!prompts[i].empty(), "generation: prompt {} has no tokens; every prompt needs at least one", i);
  DSEE_CHECK(o.beam_size >= 1, "generation: beam size must be at least 1, got {}", o.beam_size);
  DSEE_CHECK(o.max_new_tokens >= 1, "generation: max_new_tokens must be at least 1, got {}", o.max_new_tokens);
  DSEE_CHECK(o.min_new_tokens >= 0 && o.min_new_tokens <= o.max_new_tokens,
             "generation: min_new_tokens must be in [0, max_new_tokens = {}], got {}", o.max_new_tokens,
             o.min_new_tokens);
  DSEE_CHECK(o.no_repeat_ngram_size >= 0, "generation: no_repeat_ngram_size must be 0 (off) or positive, got {}",
             o.no_repeat_ngram_size);
  DSEE_CHECK(std::isfinite(o.length_penalty), "generation: length_penalty must be finite, got {}", o.length_penalty);
  DSEE_CHECK(!o.eos_ids.empty(), "generation: give at least one eos id");
}

void eos_check(const GenerationOptions& o, std::int64_t vocab) {
  for (const auto id : o.eos_ids)
    DSEE_CHECK(id >= 0 && id < vocab, "generation: eos id {} is outside the model's vocabulary of {} ids", id, vocab);
}

// The processors of Note [Beam search as transformers runs it] on scores [R, V].
at::Tensor scores_process(at::Tensor scores, const at::Tensor& sequences, std::int64_t new_tokens,
                          const GenerationOptions& o, const at::Tensor& eos) {
  if (o.no_repeat_ngram_size > 0) scores = no_repeat_ngram_ban(sequences, scores, o.no_repeat_ngram_size);
  if (new_tokens < o.min_new_tokens) scores = scores.index_fill(1, eos, -std::numeric_limits<double>::infinity());
  return scores;
}

// Row i's tokens after `start` up to and including the first eos id.
std::vector<std::vector<std::int64_t>> continuations_cut(const at::Tensor& rows, std::int64_t start,
                                                         const std::vector<std::int64_t>& eos_ids) {
  const auto cpu = rows.to(at::kCPU).contiguous();
  const auto width = cpu.size(1);
  const auto* data = cpu.data_ptr<std::int64_t>();
  std::vector<std::vector<std::int64_t>> out(cpu.size(0));
  for (std::int64_t i = 0; i < cpu.size(0); ++i)
    for (std::int64_t j = start; j < width; ++j) {
      const auto id = data[i * width + j];
      out[i].push_back(id);
      if (std::find(eos_ids.begin(), eos_ids.end(), id) != eos_ids.end()) break;
    }
  return out;
}

std::vector<std::vector<std::int64_t>> greedy_search(NextTokenModel& model, const PaddedPrompts& prompt,
                                                     const GenerationOptions& o, std::int64_t pad) {
  const auto batch = prompt.ids.size(0), longest = prompt.longest;
  const auto max_length = longest + o.max_new_tokens;
  auto logits = model.prefill(prompt.ids, prompt.mask, prompt.positions);
  const auto device = logits.device();
  eos_check(o, logits.size(1));
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(device);
  const auto eos = at::tensor(o.eos_ids, at::kLong).to(device);
  auto sequences = at::full({batch, max_length}, pad, long_options);
  sequences.narrow(1, 0, longest).copy_(prompt.ids);
  auto mask = prompt.mask.to(device);
  auto positions = prompt.positions.to(device).narrow(1, longest - 1, 1) + 1;  // [batch, 1]
  auto unfinished = at::ones({batch}, long_options.dtype(at::kBool));
  for (std::int64_t length = longest;;) {
    const auto scores = scores_process(logits, sequences.narrow(1, 0, length), length - longest, o, eos);
    const auto next = at::where(unfinished, scores.argmax(-1), pad);
    sequences.select(1, length).copy_(next);
    ++length;
    unfinished = unfinished & at::isin(next, eos).logical_not();
    if (length >= max_length || !unfinished.any().item<bool>()) break;
    mask = at::cat({mask, at::ones({batch, 1}, long_options)}, 1);
    logits = model.step(next.unsqueeze(1), mask, positions);
    positions = positions + 1;
  }
  return continuations_cut(sequences, longest, o.eos_ids);
}

// Comments name the step of transformers' _beam_search each part mirrors.
std::vector<std::vector<std::int64_t>> beam_search(NextTokenModel& model, const PaddedPrompts& prompt,
                                                   const GenerationOptions& o, std::int64_t pad) {
  const auto batch = prompt.ids.size(0), longest = prompt.longest, beams = o.beam_size;
  const auto max_length = longest + o.max_new_tokens;
  const auto keep = std::max<std::int64_t>(2, 1 + std::int64_t(o.eos_ids.size())) * beams;
  constexpr double kNever = -1.0e9;  // transformers' sentinel score

  // Prefill once per prompt, then every beam row starts from a copy.
  const auto first_logits = model.prefill(prompt.ids, prompt.mask, prompt.positions);
  const auto device = first_logits.device();
  const auto vocab = first_logits.size(1);
  eos_check(o, vocab);
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(device);
  const auto float_options = at::TensorOptions().dtype(at::kFloat).device(device);
  const auto bool_options = at::TensorOptions().dtype(at::kBool).device(device);
  const auto eos = at::tensor(o.eos_ids, at::kLong).to(device);
  const auto beam_rows = at::arange(batch, long_options).repeat_interleave(beams);
  model.reorder(beam_rows);
  auto logits = first_logits.index_select(0, beam_rows);
  auto mask = prompt.mask.to(device).index_select(0, beam_rows);
  auto positions = prompt.positions.to(device).narrow(1, longest - 1, 1).index_select(0, beam_rows) + 1;

  // 3. running and finished hypotheses, [batch, beams, max_length] tokens.
  auto running = at::full({batch, beams, max_length}, pad, long_options);
  running.narrow(2, 0, longest).copy_(prompt.ids.to(device).unsqueeze(1).expand({batch, beams, longest}));
  auto finished = running.clone();
  auto running_scores = at::zeros({batch, beams}, float_options);
  running_scores.narrow(1, 1, beams - 1).fill_(kNever);  // only beam 0 expands at first
  auto finished_scores = at::full({batch, beams}, kNever, float_options);
  auto is_finished = at::zeros({batch, beams}, bool_options);
  auto can_improve = at::ones({batch, 1}, bool_options);
  const auto top_beams = at::cat({at::ones({beams}, bool_options), at::zeros({keep - beams}, bool_options)});
  const auto batch_offset = (at::arange(batch, long_options) * beams).unsqueeze(1);

  for (std::int64_t length = longest;;) {
    // b. log-probabilities, processed, plus the running sums → [batch, beams·V]
    auto log_probs = at::log_softmax(logits, -1);
    log_probs = scores_process(log_probs, running.narrow(2, 0, length).reshape({batch * beams, length}),
                               length - longest, o, eos);
    log_probs = (log_probs.view({batch, beams, vocab}) + running_scores.unsqueeze(2)).reshape({batch, -1});

    // c. the top `keep` continuations
    auto [top_scores, top_indices] = at::topk(log_probs, keep);
    const auto top_source = top_indices.div(vocab, "floor");
    auto top_sequences = at::take_along_dim(running, top_source.unsqueeze(-1), 1);
    const auto top_ids = top_indices.remainder(vocab);
    top_sequences.select(2, length).copy_(top_ids);
    const auto top_rows = top_source + batch_offset;

    // d. which of them end here
    auto hits = at::isin(top_ids, eos);
    if (length + 1 >= max_length) hits.fill_(true);

    // e. the best `beams` that go on
    const auto top_running_scores = top_scores + hits.to(at::kFloat) * kNever;
    const auto next = std::get<1>(at::topk(top_running_scores, beams));
    running = at::take_along_dim(top_sequences, next.unsqueeze(-1), 1);
    running_scores = at::take_along_dim(top_running_scores, next, 1);
    const auto source_rows = at::take_along_dim(top_rows, next, 1);

    // f. finished hypotheses: the top `beams` that ended, if they rank
    const auto ended = hits & top_beams.unsqueeze(0);
    auto ended_scores = length_penalized(top_scores, length + 1 - longest, o.length_penalty);
    ended_scores = ended_scores + can_improve.logical_not().to(at::kFloat) * kNever;
    ended_scores = ended_scores + ended.logical_not() * kNever;
    const auto merged_scores = at::cat({finished_scores, ended_scores}, 1);
    const auto best = std::get<1>(at::topk(merged_scores, beams));
    finished = at::take_along_dim(at::cat({finished, top_sequences}, 1), best.unsqueeze(-1), 1);
    finished_scores = at::take_along_dim(merged_scores, best, 1);
    is_finished = at::take_along_dim(at::cat({is_finished, ended}, 1), best, 1);

    // g. stop, or reorder the cache and run one more token
    ++length;
    const auto best_possible = length_penalized(running_scores.narrow(1, 0, 1), length - longest, o.length_penalty);
    const auto worst_finished = at::where(is_finished, std::get<0>(finished_scores.min(1, true)), kNever);
    can_improve = can_improve & best_possible.gt(worst_finished).any(-1, true);
    if (!(can_improve.any() & hits.all().logical_not()).item<bool>()) break;
    model.reorder(source_rows.flatten());
    mask = at::cat({mask, at::ones({batch * beams, 1}, long_options)}, 1);
    logits = model.step(running.select(2, length - 1).reshape({batch * beams, 1}), mask, positions);
    positions = positions + 1;
  }
  return continuations_cut(finished.select(1, 0), longest, o.eos_ids);
}

}  // namespace

std::unique_ptr<NextTokenModel> next_token_model_of(PretrainedModel& model) {
  DSEE_CHECK(model.config().family == ModelFamily::gpt2,
             "generation needs a GPT-2 model (config.json model_type \"gpt2\"), got model_type \"{}\"",
             model_family_name(model.config().family));
  return std::make_unique<Gpt2NextToken>(model);
}

at::Tensor no_repeat_ngram_ban(const at::Tensor& sequences, const at::Tensor& scores, std::int64_t ngram_size) {
  const auto length = sequences.size(-1);
  if (length < ngram_size) return scores;  // no complete n-gram yet
  const auto vocab = scores.size(-1);
  // Every window of n tokens whose first n-1 equal the row's last n-1 bans its
  // last token; windows that do not match write to a spare column.
  const auto suffix = sequences.narrow(1, length + 1 - ngram_size, ngram_size - 1);
  const auto windows = sequences.unfold(1, ngram_size, 1);  // [R, length - n + 1, n]
  const auto matches = windows.narrow(2, 0, ngram_size - 1).eq(suffix.unsqueeze(1)).all(-1);
  const auto banned_ids = at::where(matches, windows.select(2, ngram_size - 1).clamp_max(vocab), vocab);
  auto banned = at::zeros({scores.size(0), vocab + 1}, scores.options().dtype(at::kBool));
  banned.scatter_(1, banned_ids, true);
  return scores.masked_fill(banned.narrow(1, 0, vocab), -std::numeric_limits<double>::infinity());
}

at::Tensor length_penalized(const at::Tensor& sum_log_probs, std::int64_t new_tokens, double length_penalty) {
  // A double divisor, as Python's int ** float gives transformers.
  return sum_log_probs / std::pow(double(new_tokens), length_penalty);
}

std::vector<std::vector<std::int64_t>> generate(NextTokenModel& model,
                                                const std::vector<std::vector<std::int64_t>>& prompts,
                                                const GenerationOptions& options) {
  options_check(prompts, options);
  c10::InferenceMode inference;
  const auto pad = options.pad_id >= 0 ? options.pad_id : options.eos_ids.front();
  const auto prompt = prompts_left_pad(prompts, pad);
  return options.beam_size == 1 ? greedy_search(model, prompt, options, pad) : beam_search(model, prompt, options, pad);
}

std::vector<std::vector<std::int64_t>> generate(PretrainedModel& model,
                                                const std::vector<std::vector<std::int64_t>>& prompts,
                                                const GenerationOptions& options) {
  auto next_token = next_token_model_of(model);
  options_check(prompts, options);
  eos_check(options, model.config().vocab_size);
  DSEE_CHECK(options.pad_id < model.config().vocab_size,
             "generation: pad id {} is outside the model's vocabulary of {} ids", options.pad_id,
             model.config().vocab_size);
  for (std::size_t i = 0; i < prompts.size(); ++i)
    for (const auto id : prompts[i])
      DSEE_CHECK(id >= 0 && id < model.config().vocab_size,
                 "generation: prompt {} holds token id {}, outside the model's vocabulary of {} ids", i, id,
                 model.config().vocab_size);
  std::size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  DSEE_CHECK(std::int64_t(longest) + options.max_new_tokens <= model.config().max_positions,
             "generation: the longest prompt ({} tokens) plus max_new_tokens ({}) exceeds GPT-2's {} positions; "
             "keep fewer prompt tokens (dsee generate --max-prompt-tokens) or generate fewer",
             longest, options.max_new_tokens, model.config().max_positions);
  return generate(*next_token, prompts, options);
}

}  // namespace dsee
