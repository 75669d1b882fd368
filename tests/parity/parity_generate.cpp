// Generation against transformers' generate (test_generate.py): the search
// of core/train/generation.h run on a model the calling mode prepared (LoRA
// attached: lora-generate in parity_lora.cpp).
//
//   request  "prompts": [[ids...], ...] (decoded as one batch), "beam",
//            "length_penalty", "no_repeat_ngram", "max_new_tokens",
//            "min_new_tokens" (default 0), "eos": [ids...]
//   result   {"tokens": [[ids...], ...]}: each prompt's new tokens up to and
//            including the first eos id
#include "core/train/generation.h"
#include "parity_request.h"

namespace dsee::parity {

nlohmann::json generation_run(const Request& request, PretrainedModel& model) {
  GenerationOptions options;
  options.beam_size = request.get<std::int64_t>("beam");
  options.length_penalty = request.get<double>("length_penalty");
  options.no_repeat_ngram_size = request.get<std::int64_t>("no_repeat_ngram");
  options.max_new_tokens = request.get<std::int64_t>("max_new_tokens");
  options.min_new_tokens = request.get<std::int64_t>("min_new_tokens", 0);
  options.eos_ids = request.get<std::vector<std::int64_t>>("eos");
  const auto prompts = request.get<std::vector<std::vector<std::int64_t>>>("prompts");
  return {{"tokens", generate(model, prompts, options)}};
}

}  // namespace dsee::parity
