// The tokenizers' rules one at a time, on hand-picked strings with the pieces
// the Hugging Face tokenizers produce for them, and the bad-input errors.
// (Id-for-id parity on a large corpus: tests/parity/test_tokenizers.py.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "data/byte_bpe.h"
#include "data/tokenizer.h"
#include "data/unicode.h"
#include "data/wordpiece.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> gpt2_pieces(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : gpt2_pre_tokenize(text)) out.emplace_back(p);
  return out;
}

std::string normalize(std::string_view text, bool lowercase = true) {
  BertNormalizerOptions options;
  options.lowercase = options.strip_accents = lowercase;
  return unicode::utf8_encode(bert_normalize(unicode::utf8_decode(text), options));
}

std::vector<std::string> bert_words(std::string_view text) { return bert_pre_tokenize(unicode::utf8_decode(text)); }

using Pieces = std::vector<std::string>;

TEST(Gpt2PreTokenize, ContractionsAreCaseSensitive) {
  EXPECT_EQ(gpt2_pieces("it's we'll I'M"), (Pieces{"it", "'s", " we", "'ll", " I", "'", "M"}));
}

TEST(Gpt2PreTokenize, OptionalSpaceJoinsLettersNumbersAndOthers) {
  EXPECT_EQ(gpt2_pieces("héllo 123 ?! x"), (Pieces{"héllo", " 123", " ?!", " x"}));
  EXPECT_EQ(gpt2_pieces("ab12cd"), (Pieces{"ab", "12", "cd"}));
}

TEST(Gpt2PreTokenize, OtherRunsSwallowApostrophes) { EXPECT_EQ(gpt2_pieces("?'s"), (Pieces{"?'", "s"})); }

TEST(Gpt2PreTokenize, WhitespaceRunLeavesLastSpaceForTheNextWord) {
  EXPECT_EQ(gpt2_pieces("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(gpt2_pieces("a  \t x"), (Pieces{"a", "  \t", " x"}));
}

TEST(Gpt2PreTokenize, LoneTabBeforeWordAndTrailingWhitespace) {
  EXPECT_EQ(gpt2_pieces("a\tb  "), (Pieces{"a", "\t", "b", "  "}));
  EXPECT_EQ(gpt2_pieces("x\u3000y"), (Pieces{"x", "\u3000", "y"}));  // U+3000 is \s but not " ?"
}

TEST(Gpt2PreTokenize, AstralAndUnassignedAreOthers) {
  EXPECT_EQ(gpt2_pieces("a😀b \U0001D518x"), (Pieces{"a", "😀", "b", " \U0001D518x"}));  // math fraktur is a letter
  EXPECT_EQ(gpt2_pieces("a\u0378b"), (Pieces{"a", "\u0378", "b"}));
}

TEST(ByteToUnicode, PrintableBytesSpellThemselves) {
  EXPECT_EQ(byte_to_unicode()['a'], U'a');
  EXPECT_EQ(byte_to_unicode()[' '], U'\u0120');   // Ġ
  EXPECT_EQ(byte_to_unicode()['\n'], U'\u010A');  // Ċ
  EXPECT_EQ(byte_to_unicode()[0xAD], U'\u0143');
}

TEST(BertNormalize, RemovesControlsAndMapsWhitespace) {
  EXPECT_EQ(normalize("a\x01"
                      "b\u200bc\td\u00a0e\u0085f\ue000g\u0378h"),
            "abc d efg\u0378h");
}

TEST(BertNormalize, SpacesAroundCjkIdeographsOnly) { EXPECT_EQ(normalize("ab漢字cd한국", false), "ab 漢  字 cd한국"); }

TEST(BertNormalize, UncasedStripsAccentsThroughNfd) {
  EXPECT_EQ(normalize("Café e\u0301 Ångström ǅ"), "cafe e angstrom ǆ");
  EXPECT_EQ(normalize("Café", false), "Café");
}

TEST(BertNormalize, FullLowerCaseOfDottedCapitalI) {
  BertNormalizerOptions options;
  options.strip_accents = false;
  EXPECT_EQ(unicode::utf8_encode(bert_normalize(U"İ", options)), "i\u0307");
}

TEST(BertPreTokenize, SplitsPunctuationAndAsciiSymbols) {
  EXPECT_EQ(bert_words("a$b+c ¿d’e😀f"), (Pieces{"a", "$", "b", "+", "c", "¿", "d", "’", "e😀f"}));
}

TEST(Utf8Repair, MaximalSubpartsBecomeOneReplacementEach) {
  std::string s =
      "a\xe2\x82"
      "b\xed\xa0\x80"
      "c\xff";
  EXPECT_EQ(unicode::utf8_repair(s), 5u);
  EXPECT_EQ(s,
            "a\ufffd"
            "b\ufffd\ufffd\ufffd"
            "c\ufffd");
  std::string ok = "ok ✓";
  EXPECT_EQ(unicode::utf8_repair(ok), 0u);
}

WordPiece small_wordpiece() {
  VocabMap vocab = {{"[UNK]", 0}, {"un", 1}, {"##aff", 2}, {"##able", 3}, {"a", 4}};
  return WordPiece(vocab, "[UNK]", "##", 100, BertNormalizerOptions{});
}

TEST(WordPiece, GreedyLongestMatchWithContinuations) {
  std::vector<int64_t> ids;
  small_wordpiece().encode("Unaffable", ids);
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 2, 3}));
}

TEST(WordPiece, UnmatchedRestOrOverLongWordIsUnknown) {
  std::vector<int64_t> ids;
  small_wordpiece().encode("unaffx " + std::string(101, 'a'), ids);
  EXPECT_EQ(ids, (std::vector<int64_t>{0, 0}));
}

TEST(ByteLevelBpe, MergesLowestRankFirstAndDecodesBytes) {
  const VocabMap vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"\u0120", 5}, {"\u0120a", 6}};
  const ByteLevelBpe bpe(vocab, {{"b", "c"}, {"a", "b"}, {"\u0120", "a"}}, false, false);
  std::vector<int64_t> ids;
  bpe.encode("abc ab", ids);  // "bc" (rank 0) before "ab" (rank 1); then "ab" (1) before "Ġa" (2)
  EXPECT_EQ(ids, (std::vector<int64_t>{0, 4, 5, 3}));
  std::string text;
  for (int64_t id : ids) bpe.append_token_bytes(id, text);
  EXPECT_EQ(text, "abc ab");
}

fs::path folder_with(const std::vector<std::pair<std::string, std::string>>& files) {
  static int counter = 0;
  const fs::path dir =
      fs::temp_directory_path() / ("dsee-tok-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::create_directories(dir);
  for (const auto& [name, text] : files) std::ofstream(dir / name, std::ios::binary) << text;
  return dir;
}

std::string error_of(const fs::path& dir) {
  try {
    Tokenizer::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(TokenizerLoad, MissingFilesNameTheFolder) {
  const fs::path dir = folder_with({});
  EXPECT_NE(error_of(dir).find("has no tokenizer.json, vocab.txt or vocab.json + merges.txt"), std::string::npos);
}

TEST(TokenizerLoad, MalformedVocabJsonNamesFileAndLine) {
  const fs::path dir = folder_with({{"vocab.json", "{\"a\": 0,\n\"b\": }"}, {"merges.txt", ""}});
  EXPECT_NE(error_of(dir).find("vocab.json:2: not valid JSON"), std::string::npos) << error_of(dir);
}

TEST(TokenizerLoad, BadMergeLineNamesFileAndLine) {
  const fs::path dir =
      folder_with({{"vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}"}, {"merges.txt", "#version: 0.2\na b\nab\n"}});
  EXPECT_NE(error_of(dir).find("merges.txt:3: expected two tokens separated by one space"), std::string::npos)
      << error_of(dir);
}

TEST(TokenizerLoad, InvalidUtf8InVocabTxtNamesLine) {
  const fs::path dir = folder_with({{"vocab.txt", "[UNK]\n[CLS]\n\xff\xfe\n"}});
  EXPECT_NE(error_of(dir).find("vocab.txt:3: the line is not valid UTF-8"), std::string::npos) << error_of(dir);
}

TEST(TokenizerLoad, UnsupportedAddedTokenOptionIsAnError) {
  const fs::path dir = folder_with(
      {{"tokenizer.json",
        R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"},
            "added_tokens": [{"id": 0, "content": "a", "single_word": true}]})"}});
  EXPECT_NE(error_of(dir).find("tokenizer.json: added token 'a' sets single_word"), std::string::npos) << error_of(dir);
}

Tokenizer small_bert() {
  return Tokenizer::load(folder_with({{"vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\nc\n"}}));
}

TEST(TokenizerEncode, BertPairTemplateWithTokenTypes) {
  const Encoding e = small_bert().encode_pair("a b", "C");
  EXPECT_EQ(e.input_ids, (std::vector<int64_t>{2, 5, 6, 3, 7, 3}));
  EXPECT_EQ(e.token_type_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1}));
}

TEST(TokenizerEncode, SpecialTokensInTextAreNotSplit) {
  EXPECT_EQ(small_bert().tokenize("a[SEP]b [sep]"), (std::vector<int64_t>{5, 3, 6, 1, 1, 1}));
}

TEST(TokenizerEncode, LongestFirstCutsTheLongerThenBoth) {
  EncodeOptions options;
  options.max_length = 8;  // 5 tokens left beside [CLS] [SEP] [SEP]
  EXPECT_EQ(small_bert().encode_pair("a a a a a a", "b", options).input_ids,
            (std::vector<int64_t>{2, 5, 5, 5, 5, 3, 6, 3}));
  options.max_length = 6;
  EXPECT_EQ(small_bert().encode_pair("a a a a", "b b b", options).input_ids, (std::vector<int64_t>{2, 5, 5, 3, 6, 3}));
}

TEST(TokenizerEncode, OnlySecondFailsWhenTheFirstDoesNotFit) {
  EncodeOptions options;
  options.max_length = 5;
  options.truncation = Truncation::only_second;
  EXPECT_EQ(small_bert().encode_pair("a", "b b b", options).input_ids, (std::vector<int64_t>{2, 5, 3, 6, 3}));
  EXPECT_THROW(small_bert().encode_pair("a a a", "b", options), Error);
}

TEST(TokenizerEncode, BatchPadsToLongestOnSeveralThreads) {
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i) texts.push_back(std::string(static_cast<std::size_t>(i % 5), 'a'));
  EncodeOptions options;
  options.padding = Padding::longest;
  const Tokenizer tokenizer = small_bert();
  const std::vector<Encoding> batch = tokenizer.encode_batch(texts, {}, options, 3);
  ASSERT_EQ(batch.size(), 300u);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    ASSERT_EQ(batch[i].input_ids.size(), 3u);  // "a" x4 is one word of 4 chars: [CLS] [UNK] [SEP]
    EXPECT_EQ(batch[i].attention_mask, (std::vector<int64_t>{1, 1, i % 5 ? 1 : 0})) << i;
  }
}

}  // namespace
}  // namespace dsee
