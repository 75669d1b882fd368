// Tokenizer: file loading, added tokens, templates, truncation, padding and
// batch encoding around the WordPiece and byte-level BPE models.
#include "data/tokenizer.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <exception>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "base/error.h"
#include "base/files.h"
#include "data/byte_bpe.h"
#include "data/unicode.h"
#include "data/wordpiece.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool special = true;
  bool lstrip = false;
  bool rstrip = false;
};

// One element of a template: a special token, or sequence 0 / 1.
struct TemplatePiece {
  int sequence = -1;  // -1: the special token `id`
  int64_t id = -1;
  int64_t type_id = 0;
};

std::string read_file(const fs::path& path) {
  DSEE_CHECK(fs::is_regular_file(path), "cannot read {}: the tokenizer folder must contain it", path.string());
  return file_read_text(path);
}

json read_json(const fs::path& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    const std::size_t upto = std::min(e.byte, text.size());
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(upto), '\n');
    throw Error(fmt::format("{}:{}: not valid JSON ({}); re-save the tokenizer files", path.string(), line, e.what()));
  }
}

// Splits a file into lines (without "\n" or "\r\n"), checking each is UTF-8.
std::vector<std::string> read_lines(const fs::path& path) {
  const std::string text = read_file(path);
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string repaired = line;
    DSEE_CHECK(unicode::utf8_repair(repaired) == 0, "{}:{}: the line is not valid UTF-8", path.string(),
               lines.size() + 1);
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

VocabMap read_vocab_txt(const fs::path& path) {
  VocabMap vocab;
  const std::vector<std::string> lines = read_lines(path);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string token = lines[i];
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.pop_back();
    vocab[token] = static_cast<int64_t>(i);
  }
  DSEE_CHECK(!vocab.empty(), "{} is empty: a WordPiece vocabulary has one token per line", path.string());
  return vocab;
}

VocabMap vocab_from_json(const json& object, const std::string& where) {
  DSEE_CHECK(object.is_object(), "{}: the vocabulary must be a JSON object of token: id", where);
  VocabMap vocab;
  for (const auto& [token, id] : object.items()) {
    DSEE_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0,
               "{}: token '{}' has id {}, expected a non-negative integer", where, token, id.dump());
    vocab[token] = id.get<int64_t>();
  }
  DSEE_CHECK(!vocab.empty(), "{}: the vocabulary is empty", where);
  return vocab;
}

std::vector<std::pair<std::string, std::string>> read_merges_txt(const fs::path& path) {
  std::vector<std::pair<std::string, std::string>> merges;
  const std::vector<std::string> lines = read_lines(path);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (i == 0 && line.starts_with("#version")) continue;
    if (line.empty() && i + 1 == lines.size()) continue;
    const std::size_t space = line.find(' ');
    DSEE_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string::npos,
               "{}:{}: expected two tokens separated by one space, got '{}'", path.string(), i + 1, line);
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return merges;
}

// A special token in tokenizer_config.json: "x" or {"content": "x", ...}.
std::optional<std::string> token_text(const json& config, const char* key) {
  if (!config.contains(key) || config[key].is_null()) return std::nullopt;
  const json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content")) return value["content"].get<std::string>();
  return std::nullopt;
}

bool json_bool(const json& object, const char* key, bool fallback) {
  return object.contains(key) && object[key].is_boolean() ? object[key].get<bool>() : fallback;
}

std::vector<TemplatePiece> bert_like_template(int64_t cls, int64_t sep, bool pair, bool roberta) {
  std::vector<TemplatePiece> t = {{-1, cls, 0}, {0, -1, 0}, {-1, sep, 0}};
  if (!pair) return t;
  const int64_t type = roberta ? 0 : 1;
  if (roberta) t.push_back({-1, sep, 0});
  t.push_back({1, -1, type});
  t.push_back({-1, sep, type});
  return t;
}

}  // namespace

struct Tokenizer::State {
  TokenizerKind kind = TokenizerKind::wordpiece;
  std::unique_ptr<WordPiece> wordpiece;
  std::unique_ptr<ByteLevelBpe> bpe;
  std::vector<AddedToken> added;
  std::array<std::vector<std::size_t>, 256> added_by_first_byte;  // longest first
  std::unordered_map<int64_t, std::size_t> added_by_id;
  std::vector<TemplatePiece> single = {{0, -1, 0}};
  std::vector<TemplatePiece> pair = {{0, -1, 0}, {1, -1, 1}};
  std::string template_name = "none";
  std::optional<int64_t> pad;
  std::string source;

  const VocabMap& vocab() const { return wordpiece ? wordpiece->vocab() : bpe->vocab(); }

  void add_token(AddedToken token) {
    if (token.id < 0) return;
    if (const auto it = added_by_id.find(token.id); it != added_by_id.end()) {
      added[it->second] = std::move(token);
      return;
    }
    added_by_id.emplace(token.id, added.size());
    added.push_back(std::move(token));
  }

  void index_added() {
    for (auto& list : added_by_first_byte) list.clear();
    for (std::size_t i = 0; i < added.size(); ++i)
      if (!added[i].content.empty()) added_by_first_byte[static_cast<unsigned char>(added[i].content[0])].push_back(i);
    for (auto& list : added_by_first_byte)
      std::stable_sort(list.begin(), list.end(),
                       [&](std::size_t a, std::size_t b) { return added[a].content.size() > added[b].content.size(); });
  }

  void set_template(int64_t cls, int64_t sep, bool roberta) {
    single = bert_like_template(cls, sep, false, roberta);
    pair = bert_like_template(cls, sep, true, roberta);
    template_name = roberta ? "RoBERTa" : "BERT";
  }

  // The model's ids for text between added tokens.
  void encode_text(std::string_view text, std::vector<int64_t>& ids) const {
    if (wordpiece) {
      wordpiece->encode(text, ids);
    } else {
      bpe->encode(text, ids);
    }
  }

  // Note [Added tokens]: the leftmost match wins, the longest among those
  // starting there; lstrip / rstrip tokens (RoBERTa's <mask>) swallow the
  // white space beside them. The text between matches is encoded on its own.
  std::vector<int64_t> tokenize(std::string_view text) const {
    std::vector<int64_t> ids;
    std::size_t done = 0, i = 0;
    while (i < text.size()) {
      const AddedToken* match = nullptr;
      for (std::size_t k : added_by_first_byte[static_cast<unsigned char>(text[i])])
        if (text.substr(i).starts_with(added[k].content)) {
          match = &added[k];
          break;
        }
      if (!match) {
        ++i;
        continue;
      }
      std::size_t start = i, end = i + match->content.size();
      if (match->lstrip) {
        std::size_t j = start;
        while (j > done) {
          std::size_t k = j - 1;
          while (k > done && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) --k;
          std::size_t after = k;
          if (!unicode::is_whitespace(unicode::utf8_next(text, after))) break;
          j = k;
        }
        start = j;
      }
      if (match->rstrip) {
        while (end < text.size()) {
          std::size_t after = end;
          if (!unicode::is_whitespace(unicode::utf8_next(text, after))) break;
          end = after;
        }
      }
      if (start > done) encode_text(text.substr(done, start - done), ids);
      ids.push_back(match->id);
      done = i = end;
    }
    if (done < text.size()) encode_text(text.substr(done), ids);
    return ids;
  }
};

Tokenizer::Tokenizer(std::unique_ptr<State> state) : state_(std::move(state)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace {

// An added token as tokenizer.json and added_tokens_decoder write it. Two
// options are refused rather than ignored: single_word, and matching after a
// normaliser that changes text (normalized: true with WordPiece).
AddedToken added_token_from_json(const json& t, int64_t id, const Tokenizer::State& s, const std::string& where) {
  const std::string content = t.at("content").get<std::string>();
  DSEE_CHECK(!json_bool(t, "single_word", false),
             "{}: added token '{}' sets single_word, which dsee does not support; set it to false", where, content);
  DSEE_CHECK(!s.wordpiece || !json_bool(t, "normalized", false),
             "{}: added token '{}' is matched after normalisation (normalized: true), which dsee does not support "
             "for WordPiece; set it to false",
             where, content);
  return {content, id, json_bool(t, "special", false), json_bool(t, "lstrip", false), json_bool(t, "rstrip", false)};
}

void load_tokenizer_json(Tokenizer::State& s, const fs::path& path) {
  const json root = read_json(path);
  const std::string where = path.string();
  const auto type_of = [](const json& j) {
    return j.is_object() && j.contains("type") ? j["type"].get<std::string>() : "";
  };
  const json& model = root.at("model");
  const std::string model_type = type_of(model);
  const json normalizer = root.contains("normalizer") ? root["normalizer"] : json();
  const json pre_tokenizer = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json();
  if (model_type == "WordPiece") {
    BertNormalizerOptions options{false, false, false, false};
    if (type_of(normalizer) == "BertNormalizer") {
      options.clean_text = json_bool(normalizer, "clean_text", true);
      options.handle_chinese_chars = json_bool(normalizer, "handle_chinese_chars", true);
      options.lowercase = json_bool(normalizer, "lowercase", true);
      options.strip_accents = json_bool(normalizer, "strip_accents", options.lowercase);
    } else {
      DSEE_CHECK(normalizer.is_null(), "{}: normalizer '{}' is not supported with WordPiece (BertNormalizer is)", where,
                 type_of(normalizer));
    }
    DSEE_CHECK(type_of(pre_tokenizer) == "BertPreTokenizer",
               "{}: pre_tokenizer '{}' is not supported with WordPiece (BertPreTokenizer is)", where,
               type_of(pre_tokenizer));
    s.kind = TokenizerKind::wordpiece;
    s.wordpiece =
        std::make_unique<WordPiece>(vocab_from_json(model.at("vocab"), where + " model.vocab"),
                                    model.value("unk_token", "[UNK]"), model.value("continuing_subword_prefix", "##"),
                                    model.value("max_input_chars_per_word", std::size_t{100}), options);
  } else if (model_type == "BPE") {
    DSEE_CHECK(normalizer.is_null(), "{}: a byte-level BPE tokenizer with normalizer '{}' is not supported", where,
               type_of(normalizer));
    DSEE_CHECK(type_of(pre_tokenizer) == "ByteLevel" && json_bool(pre_tokenizer, "use_regex", true),
               "{}: pre_tokenizer '{}' is not supported with BPE (ByteLevel with use_regex is)", where,
               type_of(pre_tokenizer));
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
      DSEE_CHECK(!model.contains(key) || model[key].is_null() || model[key] == "",
                 "{}: model.{} is not supported for byte-level BPE", where, key);
    std::vector<std::pair<std::string, std::string>> merges;
    for (const json& m : model.at("merges")) {
      if (m.is_array() && m.size() == 2) {
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        continue;
      }
      const std::string line = m.is_string() ? m.get<std::string>() : "";
      const std::size_t space = line.find(' ');
      DSEE_CHECK(space != std::string::npos && space > 0,
                 "{}: model.merges[{}] is {}, expected \"a b\" or [\"a\", \"b\"]", where, merges.size(), m.dump());
      merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    }
    s.kind = TokenizerKind::byte_level_bpe;
    s.bpe = std::make_unique<ByteLevelBpe>(vocab_from_json(model.at("vocab"), where + " model.vocab"), merges,
                                           json_bool(pre_tokenizer, "add_prefix_space", false),
                                           json_bool(model, "ignore_merges", false));
  } else {
    throw Error(fmt::format("{}: model type '{}' is not supported (WordPiece and BPE are)", where, model_type));
  }
  const json added_tokens = root.value("added_tokens", json::array());
  for (const json& t : added_tokens) s.add_token(added_token_from_json(t, t.at("id").get<int64_t>(), s, where));

  json post = root.contains("post_processor") ? root["post_processor"] : json();
  if (type_of(post) == "Sequence") {
    const json processors = post.value("processors", json::array());
    for (const json& p : processors)
      if (type_of(p) != "ByteLevel") post = p;
  }
  const std::string post_type = type_of(post);
  if (post_type == "BertProcessing" || post_type == "RobertaProcessing") {
    s.set_template(post.at("cls").at(1).get<int64_t>(), post.at("sep").at(1).get<int64_t>(),
                   post_type == "RobertaProcessing");
  } else if (post_type == "TemplateProcessing") {
    const auto parse = [&](const json& list) {
      std::vector<TemplatePiece> pieces;
      for (const json& item : list) {
        if (item.contains("Sequence")) {
          pieces.push_back({item["Sequence"].at("id").get<std::string>() == "A" ? 0 : 1, -1,
                            item["Sequence"].value("type_id", int64_t{0})});
        } else {
          const std::string name = item.at("SpecialToken").at("id").get<std::string>();
          const json& ids = post.at("special_tokens").at(name).at("ids");
          DSEE_CHECK(ids.size() == 1, "{}: special token '{}' of the template has {} ids, expected 1", where, name,
                     ids.size());
          pieces.push_back({-1, ids[0].get<int64_t>(), item["SpecialToken"].value("type_id", int64_t{0})});
        }
      }
      return pieces;
    };
    s.single = parse(post.at("single"));
    s.pair = parse(post.at("pair"));
    s.template_name = "from tokenizer.json";
  } else {
    DSEE_CHECK(post.is_null() || post_type == "ByteLevel",
               "{}: post_processor '{}' is not supported (TemplateProcessing, BertProcessing, RobertaProcessing and "
               "ByteLevel are)",
               where, post_type);
  }
  const json padding = root.value("padding", json());
  if (padding.is_object() && padding.contains("pad_id")) s.pad = padding["pad_id"].get<int64_t>();
}

// Note [Legacy added_tokens.json]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Folders saved before tokenizer_config.json carried added_tokens_decoder
// (older GPT-2-family folders, whisper's multilingual BPE) list their added
// tokens in added_tokens.json as {"token": id}, often with ids past
// vocab.json, <|endoftext|> among them. transformers reads that file when
// the configuration has no added_tokens_decoder: every token becomes a
// never-split added token, special when it is one of the configuration's
// special tokens. Without it the special tokens' ids would not be found and
// "<|endoftext|>" in a text would be encoded as its characters.
std::vector<AddedToken> legacy_added_tokens(const fs::path& folder, const json& config) {
  const fs::path path = folder / "added_tokens.json";
  if (config.contains("added_tokens_decoder") || !fs::exists(path)) return {};
  const json tokens = read_json(path);
  DSEE_CHECK(tokens.is_object(), "{}: expected a JSON object of token: id; re-save the tokenizer with transformers",
             path.string());
  std::vector<std::string> specials;
  for (const auto& [key, value] : config.items()) {
    if (key.ends_with("_token")) {
      if (const auto text = token_text(config, key.c_str())) specials.push_back(*text);
    } else if ((key == "additional_special_tokens" || key == "extra_special_tokens") && value.is_array()) {
      for (const json& t : value)
        if (t.is_string())
          specials.push_back(t.get<std::string>());
        else if (t.is_object() && t.contains("content") && t["content"].is_string())
          specials.push_back(t["content"].get<std::string>());
    }
  }
  std::vector<AddedToken> out;
  for (const auto& [token, id] : tokens.items()) {
    DSEE_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0,
               "{}: token '{}' has id {}, expected a non-negative integer", path.string(), token, id.dump());
    DSEE_CHECK(!token.empty(), "{}: an added token is the empty string; remove it", path.string());
    const bool special = std::find(specials.begin(), specials.end(), token) != specials.end();
    out.push_back({token, id.get<int64_t>(), special});
  }
  return out;
}

void load_split_files(Tokenizer::State& s, const fs::path& folder, const json& config,
                      const std::vector<AddedToken>& legacy_added) {
  using Specials = std::vector<std::pair<const char*, const char*>>;  // config key, default token
  const auto special = [&](const char* key, const char* fallback) {
    std::optional<std::string> text = token_text(config, key);
    return text ? *text : std::string(fallback);
  };
  // The vocabulary's id, else added_tokens.json's (Note [Legacy added_tokens.json]).
  const auto id_of = [&](const std::string& token) {
    const int64_t id = vocab_find(s.vocab(), token);
    if (id >= 0) return id;
    for (const AddedToken& t : legacy_added)
      if (t.content == token) return t.id;
    return int64_t{-1};
  };
  // Registers the special tokens (as never-split added tokens; no lstrip on
  // RoBERTa's <mask>: transformers 5 builds it so from split files, and
  // added_tokens_decoder overrides it where it says otherwise), the template
  // and the pad token.
  const auto finish = [&](const Specials& specials, const fs::path& file, bool roberta) {
    for (const auto& [key, fallback] : specials) s.add_token({special(key, fallback), id_of(special(key, fallback))});
    const int64_t pad = id_of(special("pad_token", roberta ? "<pad>" : "[PAD]"));
    if (pad >= 0) s.pad = pad;
    const int64_t cls = id_of(special("cls_token", roberta ? "<s>" : "[CLS]"));
    const int64_t sep = id_of(special("sep_token", roberta ? "</s>" : "[SEP]"));
    DSEE_CHECK(cls >= 0 && sep >= 0, "{}: the vocabulary lacks the {} or {} token", file.string(),
               special("cls_token", roberta ? "<s>" : "[CLS]"), special("sep_token", roberta ? "</s>" : "[SEP]"));
    s.set_template(cls, sep, roberta);
  };
  if (fs::exists(folder / "vocab.txt")) {
    BertNormalizerOptions options;
    options.lowercase = json_bool(config, "do_lower_case", true);
    options.strip_accents = json_bool(config, "strip_accents", options.lowercase);
    options.handle_chinese_chars = json_bool(config, "tokenize_chinese_chars", true);
    s.kind = TokenizerKind::wordpiece;
    s.wordpiece = std::make_unique<WordPiece>(read_vocab_txt(folder / "vocab.txt"), special("unk_token", "[UNK]"), "##",
                                              100, options);
    finish({{"pad_token", "[PAD]"},
            {"unk_token", "[UNK]"},
            {"cls_token", "[CLS]"},
            {"sep_token", "[SEP]"},
            {"mask_token", "[MASK]"}},
           folder / "vocab.txt", false);
    return;
  }
  DSEE_CHECK(fs::exists(folder / "vocab.json") && fs::exists(folder / "merges.txt"),
             "{} has no tokenizer.json, vocab.txt or vocab.json + merges.txt; point --tokenizer at the folder "
             "holding the model's tokenizer files",
             folder.string());
  const json vocab_json = read_json(folder / "vocab.json");
  VocabMap vocab = vocab_from_json(vocab_json, (folder / "vocab.json").string());
  const std::string tokenizer_class = config.value("tokenizer_class", "");
  const bool roberta = tokenizer_class.empty() ? (vocab.contains("<s>") && vocab.contains("</s>"))
                                               : tokenizer_class.find("Roberta") != std::string::npos;
  s.kind = TokenizerKind::byte_level_bpe;
  s.bpe = std::make_unique<ByteLevelBpe>(std::move(vocab), read_merges_txt(folder / "merges.txt"),
                                         json_bool(config, "add_prefix_space", false), false);
  if (roberta) {
    finish({{"bos_token", "<s>"},
            {"pad_token", "<pad>"},
            {"eos_token", "</s>"},
            {"unk_token", "<unk>"},
            {"mask_token", "<mask>"}},
           folder / "vocab.json", true);
    return;
  }
  for (const char* key : {"bos_token", "eos_token", "unk_token"})  // GPT-2: no template, no pad unless configured
    s.add_token({special(key, "<|endoftext|>"), id_of(special(key, "<|endoftext|>"))});
  if (const auto pad = token_text(config, "pad_token"); pad && id_of(*pad) >= 0) s.pad = id_of(*pad);
}

// The ids the files give that reach the model must be ids: the template's
// special tokens, its token types and the padding id non-negative.
void check_ids(const Tokenizer::State& s) {
  for (const auto* pieces : {&s.single, &s.pair})
    for (const TemplatePiece& piece : *pieces)
      DSEE_CHECK((piece.sequence >= 0 || piece.id >= 0) && piece.type_id >= 0,
                 "{}: the template holds the token id {} with token type {}; both must be non-negative", s.source,
                 piece.id, piece.type_id);
  DSEE_CHECK(!s.pad || *s.pad >= 0, "{}: the padding token id {} is negative", s.source, s.pad.value_or(0));
}

// "12" → 12; dsee::Error naming `where` otherwise.
int64_t id_of_key(const std::string& key, const std::string& where) {
  int64_t id = -1;
  const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
  DSEE_CHECK(error == std::errc() && end == key.data() + key.size() && id >= 0,
             "{}: added_tokens_decoder has the key '{}', which is not a token id", where, key);
  return id;
}

}  // namespace

Tokenizer Tokenizer::load(const fs::path& folder) {
  DSEE_CHECK(fs::is_directory(folder), "tokenizer folder {} does not exist", folder.string());
  auto s = std::make_unique<State>();
  s->source = folder.string();
  try {
    json config = json::object();
    for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"})
      if (fs::exists(folder / name)) {
        const json part = read_json(folder / name);
        DSEE_CHECK(part.is_object(), "{}: expected a JSON object", (folder / name).string());
        config.update(part);
      }
    if (fs::exists(folder / "tokenizer.json")) {
      s->source = (folder / "tokenizer.json").string();
      load_tokenizer_json(*s, folder / "tokenizer.json");
      // The pad token: tokenizer_config.json's, else the conventional special
      // token of the family ([PAD], <pad>) when tokenizer.json has it.
      std::optional<std::string> pad = token_text(config, "pad_token");
      for (const AddedToken& t : s->added)
        if (!pad && t.special && (t.content == "[PAD]" || t.content == "<pad>")) pad = t.content;
      if (pad && !s->pad) {
        const int64_t id = vocab_find(s->vocab(), *pad);
        if (id >= 0) s->pad = id;
      }
    } else {
      const std::vector<AddedToken> legacy_added = legacy_added_tokens(folder, config);
      load_split_files(*s, folder, config, legacy_added);
      for (const AddedToken& t : legacy_added) s->add_token(t);
      // Added tokens saved by transformers: {"id": {"content": ..., "lstrip": ...}}.
      const std::string where = (folder / "tokenizer_config.json").string();
      const json added_tokens = config.value("added_tokens_decoder", json::object());
      for (const auto& [id, t] : added_tokens.items())
        s->add_token(added_token_from_json(t, id_of_key(id, where), *s, where));
    }
  } catch (const json::exception& e) {
    // A value of the wrong type or a missing key deep in the files.
    throw Error(
        fmt::format("{}: not laid out as the tokenizers library writes it ({}); re-save the tokenizer with "
                    "transformers",
                    s->source, e.what()));
  }
  check_ids(*s);
  s->index_added();
  return Tokenizer(std::move(s));
}

std::vector<int64_t> Tokenizer::tokenize(std::string_view text) const { return state_->tokenize(text); }

namespace {

// The tokenizers library's truncation (right side, no stride). `budget` is
// max_length minus the special tokens the template adds.
void truncate(std::vector<int64_t>& a, std::vector<int64_t>* b, std::size_t budget, Truncation strategy) {
  const std::size_t total = a.size() + (b ? b->size() : 0);
  if (total <= budget) return;
  if (!b) {
    DSEE_CHECK(strategy == Truncation::longest_first,
               "truncation only_second needs a pair of texts; use longest_first for single texts");
    a.resize(budget);
    return;
  }
  if (strategy == Truncation::only_second) {
    const std::size_t remove = total - budget;
    DSEE_CHECK(b->size() > remove,
               "cannot truncate only the second text to fit max_length: the first text alone has {} tokens and "
               "{} remain for both; raise --max-length or use longest_first",
               a.size(), budget);
    b->resize(b->size() - remove);
    return;
  }
  // Longest first: the shorter keeps its length when the longer can take the
  // cut alone, otherwise both get half (the second the odd token).
  std::size_t n1 = a.size(), n2 = b->size();
  const bool swapped = n1 > n2;
  if (swapped) std::swap(n1, n2);
  n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
  if (n1 + n2 > budget) {
    n1 = budget / 2;
    n2 = n1 + budget % 2;
  }
  if (swapped) std::swap(n1, n2);
  a.resize(std::min(a.size(), n1));
  b->resize(std::min(b->size(), n2));
}

}  // namespace

std::size_t Tokenizer::special_tokens_added(bool pair) const {
  const auto& t = pair ? state_->pair : state_->single;
  return static_cast<std::size_t>(
      std::count_if(t.begin(), t.end(), [](const TemplatePiece& p) { return p.sequence < 0; }));
}

Encoding Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  return assemble(state_->tokenize(text), std::nullopt, options);
}

Encoding Tokenizer::encode_pair(std::string_view first, std::string_view second, const EncodeOptions& options) const {
  return assemble(state_->tokenize(first), state_->tokenize(second), options);
}

Encoding Tokenizer::assemble(std::vector<int64_t> a, std::optional<std::vector<int64_t>> b,
                             const EncodeOptions& options) const {
  const bool pair = b.has_value();
  const std::size_t specials = options.add_special_tokens ? special_tokens_added(pair) : 0;
  if (options.max_length) {
    DSEE_CHECK(*options.max_length >= specials, "max_length {} leaves no room beside the {} special tokens",
               *options.max_length, specials);
    truncate(a, pair ? &*b : nullptr, *options.max_length - specials, options.truncation);
  }
  static const std::vector<TemplatePiece> plain_single = {{0, -1, 0}}, plain_pair = {{0, -1, 0}, {1, -1, 1}};
  const std::vector<TemplatePiece>& pieces =
      options.add_special_tokens ? (pair ? state_->pair : state_->single) : (pair ? plain_pair : plain_single);
  Encoding e;
  for (const TemplatePiece& p : pieces) {
    if (p.sequence < 0) {
      e.input_ids.push_back(p.id);
    } else {
      const std::vector<int64_t>& ids = p.sequence == 0 ? a : *b;
      e.input_ids.insert(e.input_ids.end(), ids.begin(), ids.end());
    }
    e.token_type_ids.resize(e.input_ids.size(), p.type_id);
  }
  e.attention_mask.assign(e.input_ids.size(), 1);
  if (options.padding == Padding::none) return e;
  std::vector<Encoding> one;
  one.push_back(std::move(e));
  pad(one, options);
  return std::move(one[0]);
}

void Tokenizer::pad(std::vector<Encoding>& batch, const EncodeOptions& options) const {
  if (options.padding == Padding::none) return;
  std::size_t target = 0;
  if (options.padding == Padding::max_length) {
    DSEE_CHECK(options.max_length.has_value(), "padding to max_length needs a max_length");
    target = *options.max_length;
  } else {
    for (const Encoding& e : batch) target = std::max(target, e.input_ids.size());
  }
  const std::optional<int64_t> pad = options.pad_id ? options.pad_id : state_->pad;
  DSEE_CHECK(pad.has_value(), "{} defines no pad token; set pad_token in tokenizer_config.json or pass a pad id",
             state_->source);
  for (Encoding& e : batch) {
    if (e.input_ids.size() >= target) continue;
    e.input_ids.resize(target, *pad);
    e.token_type_ids.resize(target, 0);
    e.attention_mask.resize(target, 0);
  }
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                              const std::vector<std::string>& second, const EncodeOptions& options,
                                              unsigned threads) const {
  DSEE_CHECK(second.empty() || second.size() == texts.size(), "encode_batch: {} first texts but {} second texts",
             texts.size(), second.size());
  EncodeOptions unpadded = options;
  unpadded.padding = Padding::none;
  std::vector<Encoding> out(texts.size());
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<std::size_t>(threads, std::max<std::size_t>(1, texts.size() / 64)));
  const auto work = [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i)
      out[i] = second.empty() ? encode(texts[i], unpadded) : encode_pair(texts[i], second[i], unpadded);
  };
  if (threads <= 1) {
    work(0, texts.size());
  } else {
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(threads);
    const std::size_t chunk = (texts.size() + threads - 1) / threads;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        try {
          work(std::min(texts.size(), t * chunk), std::min(texts.size(), (t + 1) * chunk));
        } catch (...) {
          errors[t] = std::current_exception();
        }
      });
    for (auto& thread : pool) thread.join();
    for (const auto& error : errors)
      if (error) std::rethrow_exception(error);
  }
  pad(out, options);
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  DSEE_CHECK(state_->bpe, "decoding is implemented for byte-level BPE tokenizers (GPT-2, RoBERTa); {} is WordPiece",
             state_->source);
  std::string bytes;
  for (int64_t id : ids) {
    if (const auto it = state_->added_by_id.find(id); it != state_->added_by_id.end()) {
      const AddedToken& t = state_->added[it->second];
      if (!(skip_special_tokens && t.special)) bytes.append(t.content);
      continue;
    }
    state_->bpe->append_token_bytes(id, bytes);
  }
  unicode::utf8_repair(bytes);
  return bytes;
}

TokenizerKind Tokenizer::kind() const { return state_->kind; }
std::optional<int64_t> Tokenizer::pad_id() const { return state_->pad; }

std::optional<int64_t> Tokenizer::token_id(std::string_view token) const {
  for (const AddedToken& t : state_->added)
    if (t.content == token) return t.id;
  const int64_t id = vocab_find(state_->vocab(), token);
  return id >= 0 ? std::optional<int64_t>(id) : std::nullopt;
}

std::string Tokenizer::describe() const {
  return fmt::format("{} from {}, {} tokens, {} added, template {}", state_->wordpiece ? "WordPiece" : "byte-level BPE",
                     state_->source, state_->vocab().size(), state_->added.size(), state_->template_name);
}

}  // namespace dsee
