// dsee generate: decode continuations of text contexts with a GPT-2 model
// folder or the final model of a finished run, one context per line in, one
// completion per line out. The search is core/train/generation.h (token for
// token transformers' generate); docs/generation.md describes the options.
//
//   input    CONTEXTS.txt, one context per line (a trailing '\r' is dropped;
//            invalid UTF-8 becomes U+FFFD with a warning). The prompt is the
//            last --max-prompt-tokens tokens of the context's BPE (followed
//            by <|endoftext|> with --append-eos, as the data-to-text runs
//            decode: data/nlg_encoding.h).
//   output   HYPS.txt, line i for context i: the decoded new tokens, cut at
//            the first eos id and at the first blank line ("\n\n"), other
//            line breaks turned into spaces, surrounding spaces stripped
//            (data/nlg_text.h, as the pipeline's eval stage writes them).
//            With --ids: the new token ids as a JSON list, up to and
//            including the first eos id.
//   eos      --eos, or config.json's eos_token_id (else the tokenizer's
//            <|endoftext|>) plus the id of "\n\n" when it is one token.
// Contexts are decoded in file order, --batch-size at a time (left-padded
// together), with a progress line per batch on stderr.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <sstream>

#include "base/error.h"
#include "base/files.h"
#include "base/log.h"
#include "core/model/device.h"
#include "core/model/pretrained_model.h"
#include "core/train/generation.h"
#include "data/nlg_encoding.h"
#include "data/nlg_text.h"
#include "data/tokenizer.h"
#include "data/unicode.h"
#include "launch/commands.h"
#include "recipes/export.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> contexts_read(const fs::path& path) {
  DSEE_CHECK(fs::exists(path), "--input '{}' does not exist; give a text file with one context per line",
             path.string());
  const std::string text = file_read_text(path);
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (const std::size_t n = unicode::utf8_repair(line))
      spdlog::warn("{} line {}: {} invalid UTF-8 sequence(s) replaced by U+FFFD", path.string(), lines.size() + 1, n);
    lines.push_back(std::move(line));
  }
  DSEE_CHECK(!lines.empty(), "--input '{}' is empty; give one context per line", path.string());
  return lines;
}

std::vector<std::int64_t> eos_ids_parse(const std::string& text) {
  std::vector<std::int64_t> ids;
  std::istringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    std::size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DSEE_CHECK(used == part.size() && id >= 0, "--eos '{}': '{}' is not a token id; give ids like 50256,628", text,
               part);
    ids.push_back(id);
  }
  DSEE_CHECK(!ids.empty(), "--eos is empty; give ids like 50256,628");
  return ids;
}

std::string ids_json(const std::vector<std::int64_t>& ids) { return fmt::format("[{}]", fmt::join(ids, ", ")); }

}  // namespace

Command generate_command(CLI::App& app) {
  struct Options {
    std::string model, run, input, out, eos, device = "cpu";
    bool ids = false, append_eos = false;
    std::int64_t beam = 10, no_repeat_ngram = 4, max_new_tokens = 64, min_new_tokens = 0, batch_size = 8;
    std::int64_t max_prompt_tokens = 0;
    double length_penalty = 0.8;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("generate", "Decode continuations of text contexts with GPT-2 (beam search)");
  sub->add_option("--model", o->model,
                  "GPT-2 model folder (config.json, model.safetensors, tokenizer); with --run: the tokenizer folder "
                  "(default: the run's pretrained model)");
  sub->add_option("--run", o->run, "Finished run directory: decode its final model (trained update, masks)");
  sub->add_option("--input", o->input, "Text file, one context per line")->required();
  sub->add_option("--out", o->out, "Output file, one completion per line")->required();
  sub->add_flag("--ids", o->ids, "Write the new token ids as a JSON list per line instead of text");
  sub->add_option("--beam", o->beam, "Beam size (1: greedy)")->capture_default_str();
  sub->add_option("--length-penalty", o->length_penalty, "Finished beams score sum log p / new_tokens^this")
      ->capture_default_str();
  sub->add_option("--no-repeat-ngram", o->no_repeat_ngram, "No n-gram of this size twice in a row (0: off)")
      ->capture_default_str();
  sub->add_option("--max-new-tokens", o->max_new_tokens, "Most new tokens per context")->capture_default_str();
  sub->add_option("--min-new-tokens", o->min_new_tokens, "No eos before this many new tokens")->capture_default_str();
  sub->add_option("--batch-size", o->batch_size, "Contexts decoded together")->capture_default_str();
  sub->add_option("--eos", o->eos, "Comma-separated end ids (default: config.json's eos_token_id and \"\\n\\n\")");
  sub->add_flag("--append-eos", o->append_eos,
                "Prompt = the context's BPE + <|endoftext|>, as the E2E / WebNLG / DART runs are trained and decoded "
                "(LoRA's NLG examples)");
  sub->add_option("--max-prompt-tokens", o->max_prompt_tokens,
                  "Keep the last N context tokens (default: the model's positions minus --max-new-tokens)");
  sub->add_option("--device", o->device, "cpu or cuda (--model only; a run is rebuilt on the CPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  return {sub, [o] {
            DSEE_CHECK(!o->model.empty() || !o->run.empty(), "give --model DIR or --run RUN_DIR");
            DSEE_CHECK(o->batch_size >= 1, "--batch-size must be at least 1, got {}", o->batch_size);
            DSEE_CHECK(o->max_prompt_tokens >= 0, "--max-prompt-tokens must be positive, got {}", o->max_prompt_tokens);
            const auto contexts = contexts_read(o->input);

            std::optional<RebuiltRun> rebuilt;
            std::unique_ptr<PretrainedModel> loaded;
            PretrainedModel* model = nullptr;
            fs::path tokenizer_dir = o->model;
            if (!o->run.empty()) {
              DSEE_CHECK(o->device == "cpu", "--run: the run's model is rebuilt on the CPU; leave out --device");
              rebuilt.emplace(o->run, false);
              model = rebuilt->model.get();
              if (tokenizer_dir.empty()) tokenizer_dir = rebuilt->model_path;
            } else {
              DSEE_CHECK(fs::exists(fs::path(o->model) / "config.json"),
                         "--model '{}' holds no config.json; give a GPT-2 model folder", o->model);
              ModelLoadOptions load;
              load.device = device_choose(o->device);
              loaded = model_load(o->model, load);
              model = loaded.get();
            }
            DSEE_CHECK(model->config().family == ModelFamily::gpt2,
                       "dsee generate needs a GPT-2 model (config.json model_type \"gpt2\"); '{}' is \"{}\"",
                       o->run.empty() ? o->model : o->run, model_family_name(model->config().family));
            const Tokenizer tokenizer = Tokenizer::load(tokenizer_dir);

            GenerationOptions generation;
            generation.beam_size = o->beam;
            generation.length_penalty = o->length_penalty;
            generation.no_repeat_ngram_size = o->no_repeat_ngram;
            generation.max_new_tokens = o->max_new_tokens;
            generation.min_new_tokens = o->min_new_tokens;
            generation.eos_ids = o->eos.empty() ? nlg_stop_ids(tokenizer_dir, tokenizer) : eos_ids_parse(o->eos);
            const auto positions = model->config().max_positions;
            DSEE_CHECK(o->max_new_tokens >= 1 && o->max_new_tokens < positions,
                       "--max-new-tokens must be in [1, {}) (the model's positions), got {}", positions,
                       o->max_new_tokens);
            const auto max_prompt = o->max_prompt_tokens > 0 ? o->max_prompt_tokens : positions - o->max_new_tokens;

            std::vector<std::vector<std::int64_t>> prompts;
            for (std::size_t i = 0; i < contexts.size(); ++i) {
              auto ids = tokenizer.tokenize(contexts[i]);
              DSEE_CHECK(!ids.empty(), "{} line {}: the context is empty; every line needs a context", o->input, i + 1);
              if (o->append_eos) ids.push_back(nlg_eos_id(tokenizer));
              if (std::int64_t(ids.size()) > max_prompt) ids.erase(ids.begin(), ids.end() - max_prompt);
              prompts.push_back(std::move(ids));
            }

            spdlog::info(
                "generate: {} context(s) from {}, beam {}, length penalty {}, no-repeat n-gram {}, {}..{} "
                "new tokens, eos {}",
                contexts.size(), o->input, o->beam, o->length_penalty, o->no_repeat_ngram, o->min_new_tokens,
                o->max_new_tokens, fmt::join(generation.eos_ids, ","));
            std::vector<std::vector<std::int64_t>> outputs;
            std::int64_t new_tokens = 0;
            const auto start = std::chrono::steady_clock::now();
            for (std::size_t first = 0; first < prompts.size(); first += std::size_t(o->batch_size)) {
              const auto last = std::min(prompts.size(), first + std::size_t(o->batch_size));
              const std::vector<std::vector<std::int64_t>> batch(prompts.begin() + first, prompts.begin() + last);
              for (auto& ids : generate(*model, batch, generation)) {
                new_tokens += std::int64_t(ids.size());
                outputs.push_back(std::move(ids));
              }
              const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
              spdlog::info("generate: {}/{} contexts, {} new tokens, {:.1f} tokens/s, {:.1f} s", last, prompts.size(),
                           new_tokens, seconds > 0 ? new_tokens / seconds : 0.0, seconds);
            }

            std::string text;
            for (const auto& ids : outputs)
              text += (o->ids ? ids_json(ids) : nlg_completion_text(tokenizer, ids, generation.eos_ids)) + "\n";
            file_write_atomic(o->out, [&](FileWriter& out) { out.write(text.data(), text.size()); });
            spdlog::info("generate: wrote {} line(s) to {}", outputs.size(), o->out);
            return 0;
          }};
}

}  // namespace dsee
