// E2E, WebNLG and DART readers (data/nlg_data.h) on files in each format the
// tests write: LoRA's `context||completion` lines and their quirks, the
// challenge CSV's quoting and meaning representations, WebNLG JSON and XML
// (comments other than "good", seen / unseen categories), DART's several
// annotations and lower-cased relations, grouping by context, format
// detection, and every malformed-file error naming the file, the line or
// entry and the field. Then the GPT-2 encoding (data/nlg_encoding.h) on a
// small byte-level BPE vocabulary written here: sequence layout, truncation,
// labels, prompts, padding and length-bucketed batches. Token ids against
// transformers: tests/parity/test_nlg_encoding.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "data/nlg_data.h"
#include "data/nlg_encoding.h"
#include "data/nlg_xml.h"
#include "data/tokenizer.h"
#include "error_of.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

class NlgData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dsee-nlg-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  // std::filesystem::remove_all resolves to a copy in libtorch that crashes; rm -rf instead.
  void TearDown() override { std::system(("rm -rf '" + dir_.string() + "'").c_str()); }
  fs::path write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  // The error of reading `text` as a file `name`, which must name the file.
  std::string read_error(const std::string& name, const std::string& text, NlgFormat format = NlgFormat::automatic) {
    const auto path = write(name, text);
    const std::string e = error_of([&] { nlg_read(path, format); });
    EXPECT_TRUE(contains(e, path.string())) << e;
    return e;
  }
  fs::path dir_;
};

std::vector<std::string> contexts(const std::vector<NlgExample>& examples) {
  std::vector<std::string> out;
  for (const auto& e : examples) out.push_back(e.context);
  return out;
}
std::vector<std::string> completions(const std::vector<NlgExample>& examples) {
  std::vector<std::string> out;
  for (const auto& e : examples) out.push_back(e.completion);
  return out;
}

TEST_F(NlgData, E2eLinesSplitAtTheFirstBarsAndKeepTheRest) {
  const auto examples = nlg_read(write("train.txt",
                                       "  name : Blue Spice | Type : pub||Blue Spice is a pub .  \r\n"
                                       "\n"
                                       "name : A ||x || y||z\n"
                                       "name : A ||second\n"));
  EXPECT_EQ(contexts(examples), (std::vector<std::string>{"name : Blue Spice | Type : pub", "name : A ", "name : A "}));
  EXPECT_EQ(completions(examples), (std::vector<std::string>{"Blue Spice is a pub .", "x || y||z", "second"}));
  EXPECT_FALSE(examples[0].seen.has_value());
  const auto items = nlg_group(examples);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[1].context, "name : A ");
  EXPECT_EQ(items[1].references, (std::vector<std::string>{"x || y||z", "second"}));
}

TEST_F(NlgData, E2eLinesErrorsNameTheLine) {
  auto e = read_error("a.txt", "c||d\nno bars here\n");
  EXPECT_TRUE(contains(e, ": line 2: no '||' between the context and the completion")) << e;
  e = read_error("b.txt", "c||d\n\n  ||only completion\n");
  EXPECT_TRUE(contains(e, ": line 3: the context before '||' is empty")) << e;
  e = read_error("c.txt", "c||  \n");
  EXPECT_TRUE(contains(e, ": line 1: the completion after '||' is empty")) << e;
  e = read_error("d.txt", "\n \n");
  EXPECT_TRUE(contains(e, "no examples in the file (read as e2e)")) << e;
}

TEST_F(NlgData, E2eCsvQuotingAndMeaningRepresentations) {
  const auto examples = nlg_read(write("devset.csv",
                                       "\xEF\xBB\xBFmr,ref\r\n"
                                       "\"name[The Eagle], eatType[coffee shop], priceRange[£20-25], "
                                       "familyFriendly[yes]\",\"The Eagle, a \"\"family\"\" place.\"\r\n"
                                       "\"name[The Eagle], eatType[coffee shop], priceRange[£20-25], "
                                       "familyFriendly[yes]\",\"Two\nlines.\"\r\n"
                                       "name[Zizzi],Plain ref\n"));
  const std::string eagle = "name : The Eagle | Type : coffee shop | price : £20-25 | family friendly : yes";
  EXPECT_EQ(contexts(examples), (std::vector<std::string>{eagle, eagle, "name : Zizzi"}));
  EXPECT_EQ(completions(examples),
            (std::vector<std::string>{"The Eagle, a \"family\" place.", "Two\nlines.", "Plain ref"}));
  const auto items = nlg_group(examples);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].references.size(), 2u);
  // Columns are found by name, in either order.
  const auto swapped = nlg_read(write("swapped.csv", "REF,MR\nA sentence.,near[Café Rouge]\n"));
  EXPECT_EQ(contexts(swapped), (std::vector<std::string>{"near : Café Rouge"}));
}

TEST_F(NlgData, E2eCsvErrorsNameLineAndField) {
  auto e = read_error("a.csv", "mr,ref\nname[A],\"never closed\n\n");
  EXPECT_TRUE(contains(e, "the quoted field opened on line 2 is never closed")) << e;
  e = read_error("b.csv", "mr,ref\nname[A],one\nname[B],two,three\n");
  EXPECT_TRUE(contains(e, ": line 3: 3 comma-separated fields, the header has 2")) << e;
  e = read_error("c.csv", "mr,ref\n\"name[A], eatType pub\",x\n");
  EXPECT_TRUE(contains(e, ": line 2: field 'mr': no '[' after attribute text 'eatType pub'")) << e;
  e = read_error("d.csv", "mr,ref\n\"name[A] near[B]\",x\n");
  EXPECT_TRUE(contains(e, ": line 2: field 'mr': 'n' after the value of 'name', expected ','")) << e;
  e = read_error("e.csv", "mr,ref\n\"name[A\",x\n");
  EXPECT_TRUE(contains(e, "the value of 'name' has no closing ']'")) << e;
  e = read_error("f.csv", "meaning,text\nname[A],x\n");
  EXPECT_TRUE(contains(e, ": line 1: the header has no 'mr' column (columns: meaning, text)")) << e;
  e = read_error("g.csv", "mr,ref\nname[A],say \"hi\"\n");
  EXPECT_TRUE(contains(e, ": line 2: field 2 holds a '\"' but is not quoted")) << e;
  e = read_error("h.csv", "mr,ref\nname[A],\"x\"y\n");
  EXPECT_TRUE(contains(e, ": line 2: text after the closing quote of field 2")) << e;
  e = read_error("i.csv", "mr,ref\nname[A],\n");
  EXPECT_TRUE(contains(e, ": line 2: field 'ref' is empty")) << e;
}

const char* kWebnlgJson = R"J({"entries": [
  {"1": {"category": "Airport", "lexicalisations": [
           {"comment": "good", "lex": "Aarhus Airport serves \"Aarhus\".", "xml_id": "Id1"},
           {"comment": "toFix", "lex": "aarhus airport serve aarhus", "xml_id": "Id2"},
           {"comment": "good", "lex": "The airport of Aarhus is Aarhus Airport.", "xml_id": "Id3"}],
         "modifiedtripleset": [{"object": "\"Aarhus, Denmark\"", "property": "cityServed", "subject": "Aarhus_Airport"},
                               {"object": "25.0", "property": "elevationAboveTheSeaLevel_(in_metres)",
                                "subject": "Aarhus_Airport"}]}},
  {"2": {"category": "Athlete", "lexicalisations": [{"comment": "good", "lex": "A runs."}],
         "modifiedtripleset": [{"object": "B", "property": "club", "subject": "A"}]}},
  {"3": {"category": "City", "lexicalisations": [{"comment": "bad", "lex": "nothing good"}],
         "modifiedtripleset": [{"object": "Y", "property": "p", "subject": "X"}]}}
]})J";

const std::string kAarhus =
    "Aarhus_Airport : cityServed : \"Aarhus, Denmark\" | Aarhus_Airport : elevationAboveTheSeaLevel_(in_metres) : 25.0";

TEST_F(NlgData, WebnlgJsonKeepsGoodLexicalisationsAndFlagsSeenCategories) {
  const auto examples = nlg_read(write("train.json", kWebnlgJson));
  EXPECT_EQ(contexts(examples), (std::vector<std::string>{kAarhus, kAarhus, "A : club : B"}));
  EXPECT_EQ(completions(examples), (std::vector<std::string>{"Aarhus Airport serves \"Aarhus\".",
                                                             "The airport of Aarhus is Aarhus Airport.", "A runs."}));
  EXPECT_EQ(examples[0].category, "Airport");
  EXPECT_EQ(examples[0].seen, std::optional<bool>(true));
  EXPECT_EQ(examples[2].category, "Athlete");
  EXPECT_EQ(examples[2].seen, std::optional<bool>(false));
  const auto items = nlg_group(examples);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].references.size(), 2u);
  EXPECT_EQ(items[0].seen, std::optional<bool>(true));
  EXPECT_EQ(items[1].seen, std::optional<bool>(false));
  int seen = 0;
  for (const char* c :
       {"Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument", "SportsTeam", "University",
        "WrittenWork", "Athlete", "Artist", "CelestialBody", "MeanOfTransportation", "Politician", "airport"})
    seen += webnlg_is_seen_category(c);
  EXPECT_EQ(seen, 10);
}

TEST_F(NlgData, WebnlgXmlReadsAsItsJson) {
  const std::string xml = R"(<?xml version="1.0" ?>
<!-- WebNLG 2017 -->
<benchmark>
  <entries>
    <entry category="Airport" eid="Id1" size="2">
      <originaltripleset><otriple>Aarhus_Airport | cityServed | "Aarhus, Denmark"@en</otriple></originaltripleset>
      <modifiedtripleset>
        <mtriple>Aarhus_Airport | cityServed | "Aarhus, Denmark"</mtriple>
        <mtriple>Aarhus_Airport | elevationAboveTheSeaLevel_(in_metres) | 25.0</mtriple>
      </modifiedtripleset>
      <lex comment="good" lid="Id1">Aarhus Airport serves &quot;Aarhus&quot;.</lex>
      <lex comment="toFix" lid="Id2">aarhus airport serve aarhus</lex>
      <lex comment='good' lid="Id3"><![CDATA[The airport of Aarhus]]> is Aarhus&#32;Airport.</lex>
    </entry>
    <entry category="Athlete" eid="Id2" size="1">
      <modifiedtripleset><mtriple>A | club | B</mtriple></modifiedtripleset>
      <lex comment="good" lid="Id1"><sortedtripleset/><text>A runs.</text><template>AGENT-1 runs.</template></lex>
    </entry>
    <entry category="City" eid="Id3" size="1">
      <modifiedtripleset><mtriple>X | p | Y</mtriple></modifiedtripleset>
      <lex comment="bad" lid="Id1">nothing good</lex>
    </entry>
  </entries>
</benchmark>
)";
  const auto from_xml = nlg_read(write("train.xml", xml));
  const auto from_json = nlg_read(write("train.json", kWebnlgJson));
  ASSERT_EQ(from_xml.size(), from_json.size());
  for (std::size_t i = 0; i < from_xml.size(); ++i) {
    EXPECT_EQ(from_xml[i].context, from_json[i].context) << i;
    EXPECT_EQ(from_xml[i].completion, from_json[i].completion) << i;
    EXPECT_EQ(from_xml[i].category, from_json[i].category) << i;
    EXPECT_EQ(from_xml[i].seen, from_json[i].seen) << i;
  }
}

TEST_F(NlgData, WebnlgErrorsNameEntryAndField) {
  auto e = read_error("a.json", R"({"entries": [{"1": {"category": "A", "lexicalisations": [],
    "modifiedtripleset": [{"object": "o", "subject": "s"}]}}]})");
  EXPECT_TRUE(contains(e, "entries[0] (\"1\"): modifiedtripleset[0]: no field 'property'")) << e;
  e = read_error("b.json",
                 R"({"entries": [{"1": {"category": "A", "modifiedtripleset": [], "lexicalisations": []}}]})");
  EXPECT_TRUE(contains(e, "entries[0] (\"1\"): field 'modifiedtripleset' is empty")) << e;
  e = read_error("c.json", R"({"entries": [{"1": {"category": 3}}]})");
  EXPECT_TRUE(contains(e, "entries[0] (\"1\"): field 'category' is number, expected a string")) << e;
  e = read_error("d.json", R"({"entries": [{"1": {}, "2": {}}]})");
  EXPECT_TRUE(contains(e, "entries[0]: expected an object with one key (the entry number, \"1\"), got 2 keys")) << e;
  e = read_error("e.json", "{\"entries\": [\n{\"1\": \n}]}");
  EXPECT_TRUE(contains(e, ": line 3: not valid JSON")) << e;
  e = read_error("f.json", R"({"entries": [{"1": {"category": "A", "lexicalisations": [{"lex": "x"}],
    "modifiedtripleset": [{"object": "o", "property": "p", "subject": "s"}]}}]})");
  EXPECT_TRUE(contains(e, "lexicalisations[0]: no field 'comment'")) << e;

  const std::string head = "<benchmark><entries>\n<entry category=\"A\" eid=\"Id7\">\n";
  e = read_error(
      "g.xml", head + "<modifiedtripleset><mtriple>s | p</mtriple></modifiedtripleset></entry></entries></benchmark>");
  EXPECT_TRUE(contains(e, "line 2: entry 1 (eid Id7): line 3: <mtriple> 's | p' is not 'subject | property | object'"))
      << e;
  e = read_error("h.xml", head +
                              "<modifiedtripleset><mtriple>s | p | o</mtriple></modifiedtripleset>\n"
                              "<lex lid=\"Id1\">x</lex></entry></entries></benchmark>");
  EXPECT_TRUE(contains(e, "line 4: <lex> has no attribute 'comment'")) << e;
  e = read_error("i.xml", "<benchmark><entries>\n<entry eid=\"Id1\"></entry></entries></benchmark>");
  EXPECT_TRUE(contains(e, "entry 1 (eid Id1): no attribute 'category'")) << e;
  e = read_error("j.xml", head + "<modifiedtripleset></modifiedtripleset>\n</entri></entries></benchmark>");
  EXPECT_TRUE(contains(e, "line 4: not well-formed XML: </entri> closes <entry> (opened on line 2)")) << e;
  e = read_error("k.xml", head + "<lex comment=\"good\">a &nbsp; b</lex></entry></entries></benchmark>");
  EXPECT_TRUE(contains(e, "unknown entity '&nbsp;'")) << e;
  e = read_error("l.xml", "<benchmark><entries></entries></benchmark>");
  EXPECT_TRUE(contains(e, "no <entry> element")) << e;
  e = read_error("m.xml", std::string(300, '<'));
  EXPECT_TRUE(contains(e, "not well-formed XML")) << e;
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "<a>";
  e = read_error("n.xml", deep);
  EXPECT_TRUE(contains(e, "elements nest deeper than 200")) << e;
}

TEST_F(NlgData, DartKeepsEveryAnnotationAndLowerCasesRelations) {
  const auto examples = nlg_read(write("dart-v1.1.1-full-train.json", R"([
    {"tripleset": [["Mars Hill College", "JOINED", "1973"], ["Mars Hill College", "LOCATION", "Mars Hill, NC"]],
     "subtree_was_extended": false,
     "annotations": [{"source": "WikiSQL_decl_sents", "text": "A school from Mars Hill joined in 1973."},
                     {"source": "WikiSQL_decl_sents", "text": "Mars Hill College joined in 1973."}]},
    {"tripleset": [["[TABLE_CONTEXT]", "[TITLE]", "Élan"], ["Élan", "ÉTAT", "x"]],
     "annotations": [{"source": "e2e", "text": "Élan."}]},
    {"tripleset": [["a", "b", "c"]], "annotations": []}
  ])"));
  const std::string mars = "Mars Hill College : joined : 1973 | Mars Hill College : location : Mars Hill, NC";
  EXPECT_EQ(contexts(examples),
            (std::vector<std::string>{mars, mars, "[TABLE_CONTEXT] : [title] : Élan | Élan : état : x"}));
  EXPECT_EQ(completions(examples)[1], "Mars Hill College joined in 1973.");
  EXPECT_FALSE(examples[0].seen.has_value());
  EXPECT_EQ(nlg_group(examples).size(), 2u);
}

TEST_F(NlgData, DartErrorsNameEntryAndField) {
  auto e = read_error("a.json", R"([{"tripleset": [["a", "b"]], "annotations": []}])");
  EXPECT_TRUE(contains(e, "entry 0: tripleset[0] is [\"a\",\"b\"], expected [subject, relation, object] strings")) << e;
  e = read_error("b.json", R"([{"tripleset": [["a", "b", "c"]], "annotations": [{"source": "x"}]}])");
  EXPECT_TRUE(contains(e, "entry 0: annotations[0]: no field 'text'")) << e;
  e = read_error("c.json", R"([{"tripleset": [["a", "b", "c"]]}, {"annotations": []}])");
  EXPECT_TRUE(contains(e, "entry 0: no field 'annotations'")) << e;
  e = read_error("d.json", R"([{"tripleset": [], "annotations": []}])");
  EXPECT_TRUE(contains(e, "entry 0: field 'tripleset' is empty")) << e;
  e = read_error("e.json", R"({"data": []})", NlgFormat::dart_json);
  EXPECT_TRUE(contains(e, "the top level is object, expected DART's list of entries")) << e;
}

TEST_F(NlgData, JsonlLinesCarryTheSeenFlag) {
  const auto examples = nlg_read(write("train.jsonl",
                                       "{\"context\": \"a : b : c\", \"completion\": \"x\", \"cate\": true}\n"
                                       "\n{\"context\": \"d\", \"completion\": \"y\"}\n"));
  EXPECT_EQ(contexts(examples), (std::vector<std::string>{"a : b : c", "d"}));
  EXPECT_EQ(examples[0].seen, std::optional<bool>(true));
  EXPECT_FALSE(examples[1].seen.has_value());
  auto e = read_error("b.jsonl", "{\"context\": \"d\", \"completion\": \"y\"}\n{\"context\": \"d\"}\n");
  EXPECT_TRUE(contains(e, ": line 2: no field 'completion'")) << e;
  e = read_error("c.jsonl", "{\"context\": \"d\", \"completion\": \"y\", \"cate\": \"Airport\"}\n");
  EXPECT_TRUE(contains(e, ": line 1: field 'cate' is \"Airport\", expected true (seen) or false (unseen)")) << e;
  e = read_error("d.jsonl", "{\"context\": \"d\",\n");
  EXPECT_TRUE(contains(e, ": line 1: not valid JSON")) << e;
  // nlohmann::json reports a number beyond double as out_of_range, not as a parse error (found by fuzzing).
  e = read_error("e.jsonl", "{\"context\": \"d\", \"completion\": \"y\", \"x\": 1e999}\n");
  EXPECT_TRUE(contains(e, ": line 1: not valid JSON")) << e;
  e = read_error("f.json", "[1e999]");
  EXPECT_TRUE(contains(e, "not valid JSON")) << e;
}

TEST_F(NlgData, FormatDetectionAndOverride) {
  EXPECT_EQ(nlg_detect_format(write("x.csv", "mr,ref\n")), NlgFormat::e2e_csv);
  EXPECT_EQ(nlg_detect_format(write("x.xml", "")), NlgFormat::webnlg_xml);
  EXPECT_EQ(nlg_detect_format(write("x.jsonl", "")), NlgFormat::jsonl);
  EXPECT_EQ(nlg_detect_format(write("w.json", " {\"entries\": []}")), NlgFormat::webnlg_json);
  EXPECT_EQ(nlg_detect_format(write("d.json", "\n[]")), NlgFormat::dart_json);
  EXPECT_EQ(nlg_detect_format(write("l.json", "{\"context\": \"a\"}\n")), NlgFormat::jsonl);
  EXPECT_EQ(nlg_detect_format(write("x.txt", "a||b\n")), NlgFormat::e2e_lines);
  EXPECT_EQ(nlg_detect_format(write("noext", "<benchmark/>")), NlgFormat::webnlg_xml);
  // An override reads a file whatever its name.
  const auto path = write("data.dat", "mr,ref\nname[A],x\n");
  EXPECT_EQ(contexts(nlg_read(path, nlg_format_from_name("e2e-csv"))), (std::vector<std::string>{"name : A"}));
  EXPECT_TRUE(contains(error_of([&] { nlg_read(path); }), "line 1: no '||'"));
  EXPECT_TRUE(contains(
      error_of([] { nlg_format_from_name("webnlg"); }),
      "unknown data format 'webnlg'; the formats are auto, e2e, e2e-csv, webnlg-json, webnlg-xml, dart, jsonl"));
  for (const char* name : {"auto", "e2e", "e2e-csv", "webnlg-json", "webnlg-xml", "dart", "jsonl"})
    EXPECT_STREQ(nlg_format_name(nlg_format_from_name(name)), name);
  EXPECT_TRUE(contains(error_of([&] { nlg_read(dir_ / "missing.txt"); }), "missing.txt"));
}

// A byte-level BPE vocabulary of the printable ASCII bytes, 'Ġ' (the space
// byte), two merges and <|endoftext|>: enough to check the encoding's layout.
class NlgEncoding : public NlgData {
 protected:
  void SetUp() override {
    NlgData::SetUp();
    std::string vocab = "{";
    int id = 0;
    for (char c = '!'; c <= '~'; ++c) {
      const std::string token = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : std::string(1, c);
      vocab += "\"" + token + "\": " + std::to_string(id++) + ", ";
    }
    for (const char* token : {"\xC4\xA0",
                              "\xC4\xA0"
                              "a",
                              "bc", "<|endoftext|>"})
      vocab += "\"" + std::string(token) + "\": " + std::to_string(id++) + ", ";
    vocab.replace(vocab.size() - 2, 2, "}");
    fs::create_directories(dir_ / "tok");
    write("tok/vocab.json", vocab);
    write("tok/merges.txt", "#version: 0.2\n\xC4\xA0 a\nb c\n");
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(dir_ / "tok"));
    eos_ = nlg_eos_id(*tokenizer_);
    space_a_ = tokenizer_
                   ->token_id(
                       "\xC4\xA0"
                       "a")
                   .value_or(-1);
    bc_ = tokenizer_->token_id("bc").value_or(-1);
  }
  std::int64_t id(char c) const { return c - '!'; }
  std::unique_ptr<Tokenizer> tokenizer_;
  std::int64_t eos_ = -1;
  std::int64_t space_a_ = -1, bc_ = -1;
};

TEST_F(NlgEncoding, TrainingSequenceIsContextEosSpaceCompletionEos) {
  EXPECT_EQ(tokenizer_->tokenize("bc a"), (std::vector<std::int64_t>{bc_, space_a_}));
  EXPECT_EQ(eos_, *tokenizer_->token_id("<|endoftext|>"));
  const auto s = nlg_encode_training(*tokenizer_, "bc", "a", eos_, 64);
  EXPECT_EQ(s.ids, (std::vector<std::int64_t>{bc_, eos_, space_a_, eos_}));
  EXPECT_EQ(s.context_length, 2);
  const auto cut = nlg_encode_training(*tokenizer_, "xyz", "a bc", eos_, 5);
  EXPECT_EQ(cut.ids, (std::vector<std::int64_t>{id('x'), id('y'), id('z'), eos_, space_a_}));
  EXPECT_EQ(cut.context_length, 4);
  const auto context_only = nlg_encode_training(*tokenizer_, "xyzxyz", "a", eos_, 3);
  EXPECT_EQ(context_only.ids.size(), 3u);
  EXPECT_EQ(context_only.context_length, 7);

  const auto batch = nlg_collate({s, cut, context_only}, {1, 0, 2}, /*pad_id=*/eos_);
  EXPECT_EQ(batch.input_ids.sizes(), (at::IntArrayRef{3, 5}));
  const std::vector<std::int64_t> labels(batch.labels.data_ptr<std::int64_t>(),
                                         batch.labels.data_ptr<std::int64_t>() + 15);
  EXPECT_EQ(labels, (std::vector<std::int64_t>{-100, -100, -100, -100, space_a_,  //
                                               -100, -100, space_a_, eos_, -100,  //
                                               -100, -100, -100, -100, -100}));
  const std::vector<std::int64_t> mask(batch.attention_mask.data_ptr<std::int64_t>(),
                                       batch.attention_mask.data_ptr<std::int64_t>() + 15);
  EXPECT_EQ(mask, (std::vector<std::int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0}));
  EXPECT_EQ(batch.input_ids[1][4].item<std::int64_t>(), eos_);  // padding
  EXPECT_EQ(nlg_collate({s}, {0}, 0, 8).input_ids.size(1), 8);

  EXPECT_EQ(nlg_encode_prompt(*tokenizer_, "xyz", eos_, 64),
            (std::vector<std::int64_t>{id('x'), id('y'), id('z'), eos_}));
  EXPECT_EQ(nlg_encode_prompt(*tokenizer_, "xyz", eos_, 2), (std::vector<std::int64_t>{id('z'), eos_}));
  EXPECT_TRUE(contains(error_of([&] { nlg_encode_prompt(*tokenizer_, "x", eos_, 0); }), "the prompt length is 0"));
  EXPECT_TRUE(
      contains(error_of([&] { nlg_encode_training(*tokenizer_, "x", "y", eos_, 0); }), "task.max_seq_length is 0"));
}

TEST_F(NlgEncoding, ATokenizerWithoutEndOfTextIsRefused) {
  fs::create_directories(dir_ / "plain");
  write("plain/vocab.json", "{\"a\": 0, \"b\": 1}");
  write("plain/merges.txt", "#version: 0.2\n");
  write("plain/tokenizer_config.json", "{\"eos_token\": \"b\", \"bos_token\": \"b\", \"unk_token\": \"b\"}");
  const auto tokenizer = Tokenizer::load(dir_ / "plain");
  EXPECT_TRUE(contains(error_of([&] { nlg_eos_id(tokenizer); }), "has no '<|endoftext|>' token"));
}

TEST(NlgBatches, LengthBucketsAreADeterministicPartitionThatSavesPadding) {
  std::vector<std::int64_t> lengths;
  for (int i = 0; i < 1000; ++i) lengths.push_back(20 + (i * 7919) % 61);
  const auto batches = nlg_length_batches(lengths, 8, 110, 0, 20);
  EXPECT_EQ(batches, nlg_length_batches(lengths, 8, 110, 0, 20));
  EXPECT_NE(batches, nlg_length_batches(lengths, 8, 110, 1, 20));
  EXPECT_NE(batches, nlg_length_batches(lengths, 8, 111, 0, 20));
  std::multiset<std::int64_t> seen;
  for (const auto& b : batches) {
    EXPECT_LE(b.size(), 8u);
    seen.insert(b.begin(), b.end());
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(std::set<std::int64_t>(seen.begin(), seen.end()).size(), 1000u);
  // Pools of one batch (plain shuffled batches) against pools of 20: the same tokens, less padding.
  const auto one_pool = nlg_length_batches(lengths, 8, 110, 0, 1);
  const auto bucketed = nlg_padding_count(lengths, batches, 128);
  const auto plain = nlg_padding_count(lengths, one_pool, 128);
  EXPECT_EQ(bucketed.tokens, plain.tokens);
  EXPECT_EQ(bucketed.fixed, 128 * 1000);
  EXPECT_LT(bucketed.padded, plain.padded);
  EXPECT_LT(bucketed.padded - bucketed.tokens, (plain.padded - plain.tokens) / 4);
  EXPECT_TRUE(nlg_length_batches({}, 8, 0, 0).empty());
}

}  // namespace
}  // namespace dsee
