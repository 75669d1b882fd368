// Configuration files: schema checks, overrides and the resolved TOML.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "base/config.h"
#include "base/error.h"
#include "error_of.h"

namespace dsee {
namespace {

// One schema for all tests, built once (also keeps GCC 12's dangling-pointer
// analysis away from a temporary schema copied into each Config).
ConfigSchema make_test_schema() {
  ConfigSchema s;
  s.add({"train.lr", 2e-4, "learning rate", 0.0, 1.0});
  s.add({"train.epochs", std::int64_t{3}, "epochs", 0.0});
  s.add({"train.clip", true, "clip gradients"});
  s.add({"model.path", std::string(""), "model directory"});
  s.add({"paths.models", std::string("models"), "folder of model folders"});
  s.add({"run.device", std::string("auto"), "device", {}, {}, {"auto", "cpu", "cuda"}});
  s.add({"dsee.targets", std::vector<std::string>{"query", "value"}, "adapted modules"});
  return s;
}

const ConfigSchema& test_schema() {
  static const ConfigSchema schema = make_test_schema();
  return schema;
}

TEST(Config, DefaultsFillEveryKey) {
  const Config c = Config::defaults(test_schema());
  EXPECT_DOUBLE_EQ(c.get_float("train.lr"), 2e-4);
  EXPECT_EQ(c.get_int("train.epochs"), 3);
  EXPECT_TRUE(c.get_bool("train.clip"));
  EXPECT_EQ(c.get_strings("dsee.targets"), (std::vector<std::string>{"query", "value"}));
}

TEST(Config, FileValuesReplaceDefaults) {
  const Config c = Config::parse(test_schema(),
                                 "[train]\nlr = 1e-3\nepochs = 7\n[model]\npath = \"/m\"\n"
                                 "[dsee]\ntargets = [\"query\"]\n",
                                 "r.toml");
  EXPECT_DOUBLE_EQ(c.get_float("train.lr"), 1e-3);
  EXPECT_EQ(c.get_int("train.epochs"), 7);
  EXPECT_EQ(c.get_string("model.path"), "/m");
  EXPECT_EQ(c.get_strings("dsee.targets"), std::vector<std::string>{"query"});
}

TEST(Config, DottedKeysAndIntegersForFloats) {
  const Config c = Config::parse(test_schema(), "train.lr = 1\n", "r.toml");
  EXPECT_DOUBLE_EQ(c.get_float("train.lr"), 1.0);
}

TEST(Config, OverridesApplyAfterTheFileInOrder) {
  const Config c = Config::parse(test_schema(), "[train]\nlr = 1e-3\n", "r.toml",
                                 {"train.lr=3e-4", "model.path=/data/bert base", "train.lr=5e-4", "train.clip=false",
                                  "dsee.targets=[\"key\", \"value\"]"});
  EXPECT_DOUBLE_EQ(c.get_float("train.lr"), 5e-4);
  EXPECT_EQ(c.get_string("model.path"), "/data/bert base");
  EXPECT_FALSE(c.get_bool("train.clip"));
  EXPECT_EQ(c.get_strings("dsee.targets"), (std::vector<std::string>{"key", "value"}));
}

TEST(Config, ReferencesResolveAfterEveryOverride) {
  // The file refers to paths.models; an override of paths.models later on
  // the command line still moves model.path, and lists resolve too.
  const Config c = Config::parse(test_schema(),
                                 "model.path = \"${paths.models}/bert\"\n"
                                 "dsee.targets = [\"${paths.models}\", \"value\"]\n",
                                 "r.toml", {"paths.models=/data/m"});
  EXPECT_EQ(c.get_string("model.path"), "/data/m/bert");
  EXPECT_EQ(c.get_strings("dsee.targets"), (std::vector<std::string>{"/data/m", "value"}));
  EXPECT_NE(c.to_toml().find("path = \"/data/m/bert\""), std::string::npos) << c.to_toml();
  EXPECT_EQ(Config::defaults(test_schema(), {"model.path=${paths.models}"}).get_string("model.path"), "models");
  const auto error = [](const std::string& assignment) {
    return error_of([&] { Config::defaults(test_schema(), {assignment}); });
  };
  EXPECT_NE(error("model.path=${paths.modles}/x").find("refers to ${paths.modles}, which is not a string key"),
            std::string::npos);
  EXPECT_NE(error("model.path=${train.lr}").find("not a string key"), std::string::npos);
  EXPECT_NE(error("model.path=${paths.models").find("without its closing"), std::string::npos);
  EXPECT_NE(error("run.device=${model.path}").find("is not one of"), std::string::npos);
  const auto chained = error_of([] {
    Config::defaults(test_schema(), {"paths.models=${model.path}", "model.path=${paths.models}/x"});
  });
  EXPECT_NE(chained.find("holds a reference"), std::string::npos) << chained;
}

TEST(Config, UnknownKeyNamesFileLineAndSuggestion) {
  const auto message =
      error_of([] { Config::parse(test_schema(), "[train]\nepochs = 2\nlrr = 0.1\n", "recipe.toml"); });
  EXPECT_NE(message.find("recipe.toml:3"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown key 'train.lrr'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'train.lr'"), std::string::npos) << message;
}

TEST(Config, UnknownOverrideKeyIsAnError) {
  const auto message = error_of([] { Config::defaults(test_schema(), {"train.steps=3"}); });
  EXPECT_NE(message.find("--set train.steps=3"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown key 'train.steps'"), std::string::npos) << message;
}

TEST(Config, WrongTypeNamesKeyExpectedAndGiven) {
  const auto message = error_of([] { Config::parse(test_schema(), "[train]\nepochs = \"ten\"\n", "r.toml"); });
  EXPECT_NE(message.find("r.toml:2: key 'train.epochs' must be a integer"), std::string::npos) << message;
  EXPECT_NE(message.find("gives a string"), std::string::npos) << message;
  EXPECT_NE(error_of([] { Config::parse(test_schema(), "train.epochs = 2.5\n", "r.toml"); }).find("must be a"),
            std::string::npos);
  const auto o = error_of([] { Config::defaults(test_schema(), {"train.lr=fast"}); });
  EXPECT_NE(o.find("key 'train.lr' must be a float, got 'fast'"), std::string::npos) << o;
}

TEST(Config, OutOfRangeAndChoices) {
  const auto range = error_of([] { Config::parse(test_schema(), "train.lr = 2.0\n", "r.toml"); });
  EXPECT_NE(range.find("'train.lr' = 2 is out of range: it must be in [0, 1]"), std::string::npos) << range;
  const auto negative = error_of([] { Config::defaults(test_schema(), {"train.epochs=-1"}); });
  EXPECT_NE(negative.find("must be >= 0"), std::string::npos) << negative;
  const auto choice = error_of([] { Config::defaults(test_schema(), {"run.device=tpu"}); });
  EXPECT_NE(choice.find("is not one of: auto, cpu, cuda"), std::string::npos) << choice;
}

TEST(Config, MalformedTomlNamesFileAndLine) {
  const auto message = error_of([] { Config::parse(test_schema(), "[train]\nlr = = 3\n", "bad.toml"); });
  EXPECT_NE(message.find("bad.toml:2:"), std::string::npos) << message;
  EXPECT_NE(message.find("not valid TOML"), std::string::npos) << message;
}

// Note [Non-ASCII in TOML text] in base/config.cpp: the sweep and recipe
// readers' fuzzing found these inputs.
TEST(Config, NonAsciiOutsideStringsIsRefusedWithItsPosition) {
  const auto message = error_of(
      [] { Config::parse(test_schema(), "[train]\nlr = 1\n[dsee]\ntargets = [\xe2\x82\xac-0]\n", "odd.toml"); });
  EXPECT_NE(message.find("odd.toml:4:12: not valid TOML: a character beyond ASCII outside a string or comment"),
            std::string::npos)
      << message;
  // U+0263 after a malformed value, inside what would be a string: toml++
  // skips the value character by character and would classify it.
  const auto skipped = error_of([] { Config::parse(test_schema(), "b = 3e3.e\")ab\xc9\xa3\n", "skip.toml"); });
  EXPECT_NE(skipped.find("skip.toml:1:14: character U+0263 cannot be read by this build's TOML library"),
            std::string::npos)
      << skipped;
  // U+FEFB after a multi-line string's line-ending backslash (the library skips whitespace there).
  const auto after_backslash =
      error_of([] { Config::parse(test_schema(), "[\"\"\"d\\\" me\\\n\xef\xbb\xbb{K", "m.toml"); });
  EXPECT_NE(after_backslash.find("m.toml:2:1: character U+FEFB cannot be read"), std::string::npos) << after_backslash;
  // U+FCFF right after a backslash.
  const auto escaped = error_of([] { Config::parse(test_schema(), "\"\"\"nme[i\\\xef\xb3\xbfpr(E#", "b.toml"); });
  EXPECT_NE(escaped.find("b.toml:1:10: character U+FCFF cannot be read"), std::string::npos) << escaped;
  // The same range in a string, and as an escape there.
  const auto in_string = error_of([] { Config::parse(test_schema(), "[model]\npath = \"/d/\xc3\xa9\"\n", "s.toml"); });
  EXPECT_NE(in_string.find("s.toml:2:12: character U+00E9 cannot be read by this build's TOML library (toml++ 3.3) "
                           "here; in a \"...\" string write it as \\u00E9"),
            std::string::npos)
      << in_string;
  EXPECT_EQ(Config::parse(test_schema(), "[model]\npath = \"/d/\\u00E9\"\n", "e.toml").get_string("model.path"),
            "/d/\xc3\xa9");
  // Printed back (config.toml) as escapes, so what a run records reads back
  // (the recipe fuzzer found U+0445 printed as itself).
  const Config escapes = Config::parse(test_schema(), "[model]\npath = \"/d/\\u00E9\\u3001x\"\n", "e.toml");
  const std::string printed = escapes.to_toml();
  EXPECT_NE(printed.find("\"/d/\\u00E9\\u3001x\""), std::string::npos) << printed;
  EXPECT_EQ(Config::parse(test_schema(), printed, "config.toml").get_string("model.path"), "/d/\xc3\xa9\xe3\x80\x81x");
  // Inside every kind of string and in comments other characters are text.
  const Config c =
      Config::parse(test_schema(),
                    "# caf\xc3\xa9\n[model]\npath = \"/d/\xe2\x82\xac \\\" # \xe2\x82\xac\" # \xe2\x82\xac\n"
                    "[run]\ndevice = 'cpu' # '\xe2\x82\xac'\n"
                    "[\"dsee\"]\ntargets = [\"\"\"\xe2\x82\xac\n\"\"\", '''\xe2\x82\xac''']\n",
                    "unicode.toml");
  EXPECT_EQ(c.get_string("model.path"), "/d/\xe2\x82\xac \" # \xe2\x82\xac");
  EXPECT_EQ(c.get_strings("dsee.targets"), (std::vector<std::string>{"\xe2\x82\xac\n", "\xe2\x82\xac"}));
}

TEST(Config, MissingFileIsAnError) {
  const auto message = error_of([] { Config::load(test_schema(), "/nonexistent/recipe.toml"); });
  EXPECT_NE(message.find("'/nonexistent/recipe.toml': no such file"), std::string::npos) << message;
  // A name longer than the system takes (found by fuzzing the sweep reader).
  const std::string long_name = "/tmp/" + std::string(300, 'r') + ".toml";
  const auto too_long = error_of([&] { Config::load(test_schema(), long_name); });
  EXPECT_NE(too_long.find(".toml': File name too long"), std::string::npos) << too_long;
}

TEST(Config, BadOverrideSyntaxIsAUsageError) {
  EXPECT_THROW(Config::defaults(test_schema(), {"train.lr"}), UsageError);
  EXPECT_THROW(Config::defaults(test_schema(), {"=3"}), UsageError);
}

TEST(Config, ResolvedTomlParsesBackToTheSameValues) {
  const Config c = Config::defaults(test_schema(), {"train.lr=3e-4", "model.path=/m"});
  const Config again = Config::parse(test_schema(), c.to_toml(), "resolved.toml");
  EXPECT_EQ(again.to_toml(), c.to_toml());
  EXPECT_DOUBLE_EQ(again.get_float("train.lr"), 3e-4);
  EXPECT_NE(c.to_toml().find("[train]"), std::string::npos) << c.to_toml();
}

TEST(Config, ResolvedTomlUsesShortestFloatsAndEscapesStrings) {
  const Config c = Config::defaults(test_schema(), {"train.lr=3e-4", "model.path=/a \"b\"\\c"});
  const std::string toml = c.to_toml();
  EXPECT_NE(toml.find("lr = 0.0003\n"), std::string::npos) << toml;
  EXPECT_NE(toml.find("path = \"/a \\\"b\\\"\\\\c\"\n"), std::string::npos) << toml;
  EXPECT_EQ(Config::parse(test_schema(), toml, "resolved.toml").get_string("model.path"), "/a \"b\"\\c");
}

TEST(ConfigSchema, MarkdownListsEveryKey) {
  const std::string table = test_schema().markdown();
  for (const auto& key : test_schema().keys())
    EXPECT_NE(table.find("`" + key.name + "`"), std::string::npos) << key.name;
}

}  // namespace
}  // namespace dsee
