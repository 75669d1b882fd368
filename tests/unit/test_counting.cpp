// Counting (core/tuning/counting.h): trainable parameters of BERT-base from its
// shapes alone (meta device), parameters and FLOPs of a head-pruned and masked
// tiny model against hand computations written out here.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/sparsity/pruning.h"
#include "core/tuning/counting.h"
#include "tiny_models.h"

namespace dsee {
namespace {

ModelConfig bert_base_config() { return model_config_parse(bert_base_json(), "bert-base/config.json"); }

TEST(TrainableCount, BertBaseDseeR16C16IsTheSpecsNumber) {
  auto model = model_on_meta(bert_base_config(), true);
  TuningOptions options;
  options.method = TuningMethod::dsee;
  options.rank = 16;
  // 24 matrices of 768×768: r·(m + n) = 16·1536 = 24,576 each, plus c = 16
  // values each, plus the classifier 768·2 + 2 = 1,538 (docs/method.md,
  // 'Counting parameters and FLOPs').
  EXPECT_EQ(trainable_parameter_count(*model, options, 16), 24 * 24576 + 24 * 16 + 1538);
  EXPECT_EQ(trainable_parameter_count(*model, options, 16), 591746);
  options.method = TuningMethod::lora;
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), 24 * 24576 + 1538);
  options.method = TuningMethod::full;
  // transformers' BertForSequenceClassification(bert-base-uncased, 2 labels).num_parameters().
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), 109482240 + 1538);
}

TEST(TrainableCount, BertBaseBitfitAndTopKByHand) {
  auto model = model_on_meta(bert_base_config(), true);
  const std::int64_t h = 768, inter = 3072, head = h * 2 + 2;
  TuningOptions options;
  options.method = TuningMethod::bitfit;
  // Per layer: query, key, value, attention.output.dense (h each), two
  // LayerNorms (h each), intermediate.dense (inter), output.dense (h); plus
  // embeddings.LayerNorm and pooler.dense (h each), plus the classifier.
  const std::int64_t bitfit = 12 * (4 * h + 2 * h + inter + h) + 2 * h + head;
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), bitfit);
  EXPECT_EQ(bitfit, 104450);
  options.method = TuningMethod::top_k;
  options.top_layers = 2;
  const std::int64_t layer = 4 * (h * h + h) + (inter * h + inter) + (h * inter + h) + 2 * 2 * h;
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), 2 * layer + head);
  EXPECT_EQ(2 * layer + head, 14177282);
}

// GPT-2-medium (h = 1024, 24 blocks, no task head: the LM head is the tied
// wte). BitFit per block: ln_1, c_attn (3h), attn.c_proj, ln_2, mlp.c_fc (4h),
// mlp.c_proj biases, plus ln_f's; FT-Top2: two whole blocks plus ln_f.
TEST(TrainableCount, Gpt2MediumBitfitAndTopKByHand) {
  auto model = model_on_meta(model_config_parse(gpt2_medium_json(), "gpt2-medium/config.json"), false);
  const std::int64_t h = 1024;
  TuningOptions options;
  options.method = TuningMethod::bitfit;
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), 24 * (h + 3 * h + h + h + 4 * h + h) + h);
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), 271360);
  options.method = TuningMethod::top_k;
  options.top_layers = 2;
  const std::int64_t block = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * 4 * h + 4 * h) + (4 * h * h + h);
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), 2 * block + 2 * h);
  // recipes/paper/table2-baselines.toml's FT-Top2 count.
  EXPECT_EQ(trainable_parameter_count(*model, options, 0), 25194496);
}

TEST(TrainableCount, CIsCappedAtTheMatrixSizeAndHeadCanBeFrozen) {
  auto model = tiny_model(bert_json(), 1);
  TuningOptions options;
  options.rank = 2;
  options.train_head = false;
  // 4 matrices of 24×24: 2·48 + min(1000, 576).
  EXPECT_EQ(trainable_parameter_count(*model, options, 1000), 4 * (96 + 576));
  options.target_modules = {"intermediate.dense"};  // 30×24 in 2 layers
  EXPECT_EQ(trainable_parameter_count(*model, options, 3), 2 * (2 * 54 + 3));
}

TEST(ModelCount, BertBaseDenseFlopsFromShapesAlone) {
  auto model = model_on_meta(bert_base_config(), true);
  const std::int64_t L = 128, h = 768, inter = 3072;
  const auto count = model_count(*model, L);
  const std::int64_t per_layer_linears = 2 * L * (4 * h * h + 2 * h * inter);
  const std::int64_t per_layer_attention = 12 * 2 * 2 * L * L * 64;
  const std::int64_t heads = 2 * h * h + 2 * h * 2;  // pooler and classifier on one token
  EXPECT_EQ(count.flops_dense, 12 * (per_layer_linears + per_layer_attention) + heads);
  EXPECT_EQ(count.flops_nonzero, count.flops_dense);  // meta: no values, every entry counts
  EXPECT_EQ(count.parameters, 109483778);
}

TEST(ModelCount, HeadPrunedTinyBertByHand) {
  // hidden 24, 4 heads of 6, intermediate 30, 2 layers, 2 labels; layer 0
  // loses heads 1 and 3 (width 12), layer 1 keeps all 4 (width 24). L = 5.
  auto model = tiny_model(bert_json(), 3);
  PrunePlan plan;
  plan.heads = {{0, {1, 3}}};
  prune_plan_apply(*model, plan);
  const auto count = model_count(*model, 5);
  const std::int64_t layer0 = 3 * (2 * 12 * 24 * 5)       // query, key, value: [12, 24] on 5 tokens
                              + 2 * 24 * 12 * 5           // attention.output.dense [24, 12]
                              + 2 * 30 * 24 * 5           // intermediate.dense [30, 24]
                              + 2 * 24 * 30 * 5           // output.dense [24, 30]
                              + 2 * (2 * 2 * 5 * 5 * 6);  // 2 heads: scores and context
  const std::int64_t layer1 =
      3 * (2 * 24 * 24 * 5) + 2 * 24 * 24 * 5 + 2 * 30 * 24 * 5 + 2 * 24 * 30 * 5 + 4 * (2 * 2 * 5 * 5 * 6);
  const std::int64_t pooler_and_classifier = 2 * 24 * 24 + 2 * 2 * 24;
  EXPECT_EQ(layer0, 27120);
  EXPECT_EQ(layer1, 39840);
  EXPECT_EQ(count.flops_dense, layer0 + layer1 + pooler_and_classifier);
  EXPECT_EQ(count.flops_dense, 68208);
  EXPECT_EQ(count.attention_flops, 6 * 2 * 2 * 5 * 5 * 6);
  EXPECT_EQ(count.heads_per_layer, (std::vector<std::int64_t>{2, 4}));

  // Parameters: the unpruned tiny BERT less 2 heads × 6 rows of q, k, v
  // (weight 24 + bias 1 each) and 12 columns of the attention output.
  auto unpruned = tiny_model(bert_json(), 3);
  const auto full = model_count(*unpruned, 5).parameters;
  EXPECT_EQ(count.parameters, full - 3 * 12 * (24 + 1) - 24 * 12);
  EXPECT_EQ(count.nonzero_parameters, count.parameters);  // random weights: no zeros

  // A mask removing 100 entries of layer 1's intermediate.dense: 100 fewer
  // non-zeros, 2·100·5 fewer non-zero FLOPs, the same dense FLOPs.
  PrunePlan masks;
  auto mask = at::ones({30, 24}, at::kBool);
  mask.reshape({-1}).narrow(0, 200, 100).fill_(false);
  masks.masks.push_back({"encoder.layer.1.intermediate.dense", mask});
  prune_plan_apply(*model, masks);
  const auto masked = model_count(*model, 5);
  EXPECT_EQ(masked.flops_dense, 68208);
  EXPECT_EQ(masked.flops_nonzero, 68208 - 2 * 100 * 5);
  EXPECT_EQ(masked.nonzero_parameters, count.parameters - 100);
  EXPECT_EQ(masked.parameters, count.parameters);
}

TEST(ModelCount, Gpt2CountsTheTiedLmHeadOnEveryToken) {
  // n_embd 24, 3 layers, 4 heads of 6, inner 96, vocab 40, L = 4.
  auto model = tiny_model(gpt2_json(), 3);
  const auto count = model_count(*model, 4);
  const std::int64_t per_layer = 2 * 4 * (72 * 24 + 24 * 24 + 96 * 24 + 24 * 96) + 4 * (2 * 2 * 4 * 4 * 6);
  const std::int64_t lm_head = 2 * 4 * 40 * 24;
  EXPECT_EQ(count.flops_dense, 3 * per_layer + lm_head);
  ASSERT_EQ(count.linears.back().module, "lm_head");
  // wte 40·24 + wpe 20·24 + per layer (2 norms, c_attn, c_proj, c_fc, mlp.c_proj) + ln_f; the head is wte.
  const std::int64_t per_layer_params = 2 * 48 + (72 * 24 + 72) + (24 * 24 + 24) + (96 * 24 + 96) + (24 * 96 + 24);
  EXPECT_EQ(count.parameters, 40 * 24 + 20 * 24 + 3 * per_layer_params + 48);
}

}  // namespace
}  // namespace dsee
