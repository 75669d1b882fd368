// The text side of decoding a data-to-text model: which token ids end a
// completion, and the completion's text from the generated ids, as the LoRA
// NLG examples write their hypotheses (cut at the first eos and at the first
// blank line, one line, trimmed). Shared by `dsee generate` and the pipeline's
// eval stage, so both write the same hypotheses.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace dsee {

// config.json's eos_token_id (a number or a list) in `model_dir`, else the
// tokenizer's <|endoftext|>, plus the id of "\n\n" when the vocabulary has it
// as one token (GPT-2: 50256 and 628). dsee::Error when there is none.
std::vector<std::int64_t> nlg_stop_ids(const std::filesystem::path& model_dir, const Tokenizer& tokenizer);

// The text of generated `ids` without a final stop id, cut at the first
// blank line, newlines turned into spaces, trimmed.
std::string nlg_completion_text(const Tokenizer& tokenizer, std::vector<std::int64_t> ids,
                                const std::vector<std::int64_t>& stop_ids);

}  // namespace dsee
