// E2E / WebNLG / DART reading and GPT-2 encoding (data/nlg_data.h,
// data/nlg_encoding.h) against Python readings of the same files and
// transformers' GPT-2 tokenizer (test_nlg_encoding.py).
//
//   nlg-read    reads "file" (as "format", default auto).
//               {"examples": [{"context", "completion", "category", "seen"}],
//                "items": [{"context", "references", "category", "seen"}]}
//               ("seen" null where the format has none)
//   nlg-encode  reads "file" and encodes its examples with the tokenizer of
//               the folder "tokenizer" at "max_seq_length"; prompts keep the
//               last "prompt_length" tokens of each item's context.
//               {"eos": id, "ids": [[...]], "context_lengths": [...],
//                "labels": [[...]] (the collated batch of every example, so
//                padding shows), "prompts": [[...]], and with "batch_size"
//                and "seed": "padding": {"tokens", "bucketed", "shuffled",
//                "fixed"} of one epoch's batches with and without buckets}
#include <ATen/ATen.h>

#include "data/nlg_data.h"
#include "data/nlg_encoding.h"
#include "data/tokenizer.h"
#include "parity_request.h"

namespace dsee::parity {
namespace {

nlohmann::json seen_json(const std::optional<bool>& seen) { return seen ? nlohmann::json(*seen) : nlohmann::json(); }

std::vector<NlgExample> read_request_file(const Request& request) {
  return nlg_read(request.get<std::string>("file"), nlg_format_from_name(request.get<std::string>("format", "auto")));
}

}  // namespace

nlohmann::json nlg_read(const Request& request) {
  const auto examples = read_request_file(request);
  nlohmann::json out = {{"examples", nlohmann::json::array()}, {"items", nlohmann::json::array()}};
  for (const auto& e : examples)
    out["examples"].push_back(
        {{"context", e.context}, {"completion", e.completion}, {"category", e.category}, {"seen", seen_json(e.seen)}});
  for (const auto& item : nlg_group(examples))
    out["items"].push_back({{"context", item.context},
                            {"references", item.references},
                            {"category", item.category},
                            {"seen", seen_json(item.seen)}});
  return out;
}

nlohmann::json nlg_encode(const Request& request) {
  const auto tokenizer = Tokenizer::load(request.get<std::string>("tokenizer"));
  const auto examples = read_request_file(request);
  const std::int64_t eos = nlg_eos_id(tokenizer);
  const auto sequences = nlg_encode_examples(tokenizer, examples, eos, request.get<std::int64_t>("max_seq_length"));
  nlohmann::json out = {{"eos", eos}, {"ids", nlohmann::json::array()}, {"context_lengths", nlohmann::json::array()}};
  std::vector<std::int64_t> rows, lengths;
  for (const auto& s : sequences) {
    out["ids"].push_back(s.ids);
    out["context_lengths"].push_back(s.context_length);
    rows.push_back(static_cast<std::int64_t>(rows.size()));
    lengths.push_back(static_cast<std::int64_t>(s.ids.size()));
  }
  const NlgBatch batch = nlg_collate(sequences, rows, eos);
  const auto labels = batch.labels.contiguous();
  for (std::int64_t r = 0; r < labels.size(0); ++r) {
    const auto* row = labels[r].data_ptr<std::int64_t>();
    out["labels"].push_back(std::vector<std::int64_t>(row, row + labels.size(1)));
  }
  out["prompts"] = nlohmann::json::array();
  for (const auto& item : nlg_group(examples))
    out["prompts"].push_back(
        nlg_encode_prompt(tokenizer, item.context, eos, request.get<std::int64_t>("prompt_length")));
  if (request.has("batch_size")) {
    const auto batch_size = request.get<std::int64_t>("batch_size");
    const auto seed = request.get<std::uint64_t>("seed");
    const auto max_seq_length = request.get<std::int64_t>("max_seq_length");
    const auto bucketed = nlg_padding_count(lengths, nlg_length_batches(lengths, batch_size, seed, 0), max_seq_length);
    const auto shuffled =
        nlg_padding_count(lengths, nlg_length_batches(lengths, batch_size, seed, 0, 1), max_seq_length);
    out["padding"] = {{"tokens", bucketed.tokens},
                      {"bucketed", bucketed.padded},
                      {"shuffled", shuffled.padded},
                      {"fixed", bucketed.fixed}};
  }
  return out;
}

}  // namespace dsee::parity
