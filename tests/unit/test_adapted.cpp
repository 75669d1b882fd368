// adapted_matrices: which matrices a tuning method adapts, by HF name pattern.
#include <gtest/gtest.h>

#include "core/tuning/adapted.h"
#include "error_of.h"
#include "tiny_models.h"

namespace dsee {
namespace {

std::vector<std::string> names_of(const std::vector<AdaptedMatrix>& matrices) {
  std::vector<std::string> names;
  for (const auto& m : matrices) names.push_back(m.name);
  return names;
}

TEST(AdaptedMatrices, BertDefaultIsQueryThenValuePerLayer) {
  auto model = tiny_model(bert_json(), 1);
  const auto matrices = adapted_matrices(*model, default_target_modules(ModelFamily::bert));
  EXPECT_EQ(names_of(matrices),
            (std::vector<std::string>{
                "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.value.weight",
                "encoder.layer.1.attention.self.query.weight", "encoder.layer.1.attention.self.value.weight"}));
  EXPECT_EQ(matrices[2].layer, 1);
  EXPECT_EQ(matrices[2].prefix, "encoder.layer.1.attention.self.query");
  EXPECT_EQ(matrices[2].rows, 24);
  EXPECT_EQ(matrices[2].cols(), 24);
  EXPECT_EQ(matrices[2].linear, &model->linear("encoder.layer.1.attention.self.query"));
}

TEST(AdaptedMatrices, Gpt2DefaultIsTheQAndVThirdsOfCAttn) {
  auto model = tiny_model(gpt2_json(), 2);
  const auto matrices = adapted_matrices(*model, default_target_modules(ModelFamily::gpt2));
  ASSERT_EQ(matrices.size(), 6u);
  EXPECT_EQ(matrices[0].name, "h.0.attn.c_attn.weight:q");
  EXPECT_EQ(matrices[1].name, "h.0.attn.c_attn.weight:v");
  EXPECT_EQ(matrices[1].prefix, "h.0.attn.c_attn:v");
  EXPECT_EQ(matrices[1].module, "h.0.attn.c_attn");
  EXPECT_EQ(matrices[1].row_offset, 48);
  EXPECT_EQ(matrices[1].rows, 24);
  EXPECT_EQ(matrices[5].layer, 2);
  EXPECT_TRUE(at::equal(matrices[1].weight(), model->linear("h.0.attn.c_attn").weight.narrow(0, 48, 24)));
}

TEST(AdaptedMatrices, SuffixMatchesWholeNameComponentsOnly) {
  auto model = tiny_model(bert_json(), 3);
  // "dense" matches attention.output.dense, intermediate.dense, output.dense
  // and pooler.dense, never a name merely ending in the letters.
  EXPECT_EQ(adapted_matrices(*model, {"dense"}).size(), 2u * 3 + 1);
  EXPECT_EQ(adapted_matrices(*model, {"output.dense"}).size(), 4u);
  EXPECT_EQ(adapted_matrices(*model, {"re:encoder\\.layer\\.1\\..*(key|value)"}).size(), 2u);
}

TEST(AdaptedMatrices, UnmatchedPatternIsAnErrorNamingIt) {
  auto model = tiny_model(bert_json(), 4);
  EXPECT_TRUE(contains(error_of([&] { adapted_matrices(*model, {"query", "qkv"}); }), "'qkv' matches no projection"));
  EXPECT_TRUE(contains(error_of([&] { adapted_matrices(*model, {"query:q"}); }), "only GPT-2's attn.c_attn"));
  EXPECT_TRUE(contains(error_of([&] { adapted_matrices(*model, {"re:("}); }), "not a valid regular expression"));
}

}  // namespace
}  // namespace dsee
