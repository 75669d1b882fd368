// The error path of main: user errors exit 1 with a message naming the file
// and key, usage errors exit 2, --help exits 0. Runs the real dsee binary.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "run_dsee.h"

namespace {

using dsee_test::Result;
using dsee_test::run_dsee;
using dsee_test::write_file;

TEST(MainErrors, HelpExitsZero) {
  const Result r = run_dsee("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("env"), std::string::npos) << r.output;
}

TEST(MainErrors, NoSubcommandIsAUsageError) { EXPECT_EQ(run_dsee("").exit_code, 2); }

TEST(MainErrors, UnknownOptionIsAUsageError) {
  const Result r = run_dsee("env --no-such-flag");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(MainErrors, BadLogLevelIsAUsageError) {
  const Result r = run_dsee("--log-level loud config");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown log level 'loud'"), std::string::npos) << r.output;
}

TEST(MainErrors, UnknownRecipeKeyExitsOneNamingFileAndKey) {
  const auto recipe = write_file("unknown.toml", "[train]\nlr = 1e-4\nepoch = 3\n");
  const Result r = run_dsee("config " + recipe.string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("dsee: error: " + recipe.string() + ":3: unknown key 'train.epoch'"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("did you mean 'train.epochs'"), std::string::npos) << r.output;
  std::filesystem::remove(recipe);
}

TEST(MainErrors, MissingRecipeExitsOne) {
  const Result r = run_dsee("config /nonexistent/r.toml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no such file"), std::string::npos) << r.output;
}

TEST(MainErrors, ConfigPrintsTheResolvedRecipe) {
  const auto recipe = write_file("ok.toml", "[train]\nlr = 1e-4\n");
  const Result r = run_dsee("config " + recipe.string() + " --set train.epochs=9");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("epochs = 9"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lr = 0.0001"), std::string::npos) << r.output;
  std::filesystem::remove(recipe);
}

TEST(MainErrors, ForwardWithoutAModelFolderExitsOneNamingConfigJson) {
  const auto ids = write_file("ids.json", "[[1, 2, 3]]");
  const Result r = run_dsee("forward --model /nonexistent/m --input-ids " + ids.string() + " --out /tmp/o.safetensors");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/m/config.json"), std::string::npos) << r.output;
  std::filesystem::remove(ids);
}

TEST(MainErrors, ForwardRejectsIdsThatAreNotListsOfTokenIds) {
  const auto ids = write_file("bad_ids.json", "{\"input_ids\": [[1, -2]]}");
  const Result r = run_dsee("forward --model /nonexistent/m --input-ids " + ids.string() + " --out /tmp/o.safetensors");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("input_ids[0] holds -2, not a token id"), std::string::npos) << r.output;
  std::filesystem::remove(ids);
}

TEST(MainErrors, ForwardDtypeIsChecked) {
  EXPECT_EQ(run_dsee("forward --model m --input-ids i.json --out o.safetensors --dtype fp16").exit_code, 2);
}

}  // namespace
