// dsee tokenize / dsee detokenize: the tokenizers on the command line, one
// line in, one line out, so that shell pipelines and the parity test can
// compare ids with the Hugging Face tokenizers line by line.
//
//   tokenize     text line (or "first<TAB>second" with --pair) →
//                {"input_ids":[…],"token_type_ids":[…],"attention_mask":[…]}
//   detokenize   a JSON list of ids, or an object with "input_ids" (what
//                tokenize prints) → the decoded text (byte-level BPE only)
//
// A line is everything up to '\n' (a '\r' before it is text, as it is to the
// Hugging Face tokenizers). Invalid UTF-8 in the input becomes U+FFFD with
// one warning per line.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "data/tokenizer.h"
#include "data/unicode.h"
#include "launch/commands.h"

namespace dsee {
namespace {

void append_ids(std::string& out, const char* key, const std::vector<int64_t>& ids) {
  out.append("\"").append(key).append("\":[");
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out.push_back(',');
    out.append(std::to_string(ids[i]));
  }
  out.push_back(']');
}

// Reads stdin up to `limit` lines; repairs invalid UTF-8 (warning per line).
bool read_lines(std::vector<std::string>& lines, std::size_t limit, std::size_t& line_number) {
  lines.clear();
  std::string line;
  while (lines.size() < limit && std::getline(std::cin, line)) {
    ++line_number;
    if (const std::size_t n = unicode::utf8_repair(line))
      spdlog::warn("stdin line {}: {} invalid UTF-8 sequence(s) replaced by U+FFFD", line_number, n);
    lines.push_back(std::move(line));
  }
  return !lines.empty();
}

}  // namespace

Command tokenize_command(CLI::App& app) {
  struct Options {
    std::string folder;
    bool pair = false;
    std::size_t max_length = 0;
    std::string truncation = "longest_first";
    bool pad = false;
    bool no_special_tokens = false;
    unsigned threads = 0;
    bool time = false;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("tokenize", "Encode lines of stdin, one JSON object of ids per line");
  sub->add_option("--tokenizer", o->folder, "Folder with tokenizer.json, vocab.txt or vocab.json + merges.txt")
      ->required();
  sub->add_flag("--pair", o->pair, "Each line is a pair: first text, a tab, second text (split at the first tab)");
  sub->add_option("--max-length", o->max_length, "Truncate to this many tokens, special tokens included (0: off)");
  sub->add_option("--truncation", o->truncation, "longest_first or only_second")
      ->check(CLI::IsMember({"longest_first", "only_second"}))
      ->capture_default_str();
  sub->add_flag("--pad-to-max-length", o->pad, "Pad every line to --max-length with the pad token (mask 0)");
  sub->add_flag("--no-special-tokens", o->no_special_tokens, "Leave out [CLS]/[SEP], <s>/</s>");
  sub->add_option("--threads", o->threads, "Encoding threads (0: one per core)")->capture_default_str();
  sub->add_flag("--time", o->time,
                "Read all of stdin, encode it, print {lines, tokens, seconds, tokens_per_s} instead of the ids");
  return {sub, [o] {
            const Tokenizer tokenizer = Tokenizer::load(o->folder);
            EncodeOptions options;
            options.add_special_tokens = !o->no_special_tokens;
            if (o->max_length > 0) options.max_length = o->max_length;
            options.truncation = o->truncation == "only_second" ? Truncation::only_second : Truncation::longest_first;
            if (o->pad) {
              if (o->max_length == 0) throw UsageError("--pad-to-max-length needs --max-length N");
              options.padding = Padding::max_length;
            }
            std::vector<std::string> lines, first, second;
            std::size_t line_number = 0;
            std::string out;
            // --time encodes all of stdin in one batch: bench/tokenize times it against the Rust library.
            while (read_lines(lines, o->time ? SIZE_MAX : 8192, line_number)) {
              first.clear();
              second.clear();
              if (o->pair) {
                const std::size_t base = line_number - lines.size();
                for (std::size_t i = 0; i < lines.size(); ++i) {
                  const std::size_t tab = lines[i].find('\t');
                  if (tab == std::string::npos)
                    throw Error(fmt::format("stdin line {}: --pair needs a tab between the two texts", base + i + 1));
                  first.push_back(lines[i].substr(0, tab));
                  second.push_back(lines[i].substr(tab + 1));
                }
              } else {
                first.swap(lines);
              }
              const auto start = std::chrono::steady_clock::now();
              const std::vector<Encoding> encodings = tokenizer.encode_batch(first, second, options, o->threads);
              if (o->time) {
                const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                std::size_t tokens = 0;
                for (const Encoding& e : encodings) tokens += e.input_ids.size();
                std::cout << nlohmann::json{{"lines", encodings.size()},
                                            {"tokens", tokens},
                                            {"seconds", seconds},
                                            {"tokens_per_s", static_cast<double>(tokens) / seconds}}
                                 .dump()
                          << std::endl;
                continue;
              }
              out.clear();
              for (const Encoding& e : encodings) {
                out.push_back('{');
                append_ids(out, "input_ids", e.input_ids);
                out.push_back(',');
                append_ids(out, "token_type_ids", e.token_type_ids);
                out.push_back(',');
                append_ids(out, "attention_mask", e.attention_mask);
                out.append("}\n");
              }
              std::cout << out;
            }
            std::cout.flush();
            return 0;
          }};
}

Command detokenize_command(CLI::App& app) {
  struct Options {
    std::string folder;
    bool skip_special_tokens = false;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("detokenize", "Decode lines of ids (byte-level BPE) back to text, one per line");
  sub->add_option("--tokenizer", o->folder, "Folder with tokenizer.json or vocab.json + merges.txt")->required();
  sub->add_flag("--skip-special-tokens", o->skip_special_tokens, "Leave out <s>, </s>, <|endoftext|>, <pad>");
  return {sub, [o] {
            const Tokenizer tokenizer = Tokenizer::load(o->folder);
            std::string line;
            std::size_t line_number = 0;
            while (std::getline(std::cin, line)) {
              ++line_number;
              std::vector<int64_t> ids;
              try {
                nlohmann::json j = nlohmann::json::parse(line);
                if (j.is_object()) j = j.at("input_ids");
                ids = j.get<std::vector<int64_t>>();
              } catch (const nlohmann::json::exception& e) {
                throw Error(
                    fmt::format("stdin line {}: expected a JSON list of token ids or an object with "
                                "\"input_ids\" ({})",
                                line_number, e.what()));
              }
              std::cout << tokenizer.decode(ids, o->skip_special_tokens) << '\n';
            }
            std::cout.flush();
            return 0;
          }};
}

}  // namespace dsee
