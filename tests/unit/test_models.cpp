// Models without a reference library: config.json errors, the linear seam,
// head pruning, the GPT-2 key/value cache, load errors. Parity with
// transformers is in tests/parity/test_models.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "core/io/safetensors.h"
#include "core/model/bert.h"
#include "core/model/gpt2.h"
#include "core/model/model_config.h"
#include "core/model/pretrained_model.h"
#include "error_of.h"
#include "tiny_models.h"

namespace dsee {
namespace {

TEST(ModelConfig, MissingFieldNamesFieldAndFile) {
  auto json = bert_json();
  json.erase("intermediate_size");
  const auto message = error_of([&] { model_config_parse(json, "m/config.json"); });
  EXPECT_NE(message.find("\"intermediate_size\""), std::string::npos) << message;
  EXPECT_NE(message.find("m/config.json"), std::string::npos) << message;
  auto gpt2 = gpt2_json();
  gpt2.erase("layer_norm_epsilon");
  EXPECT_NE(error_of([&] { model_config_parse(gpt2, "g.json"); }).find("\"layer_norm_epsilon\""), std::string::npos);
}

// Found by fuzzing (tests/fuzz/corpus/model_config/regression-huge-layer-count.json).
TEST(ModelConfig, ADamagedLayerCountIsRefusedBeforeAnythingIsSizedByIt) {
  auto json = gpt2_json();
  json["n_layer"] = 3999999999999;
  EXPECT_TRUE(contains(error_of([&] { model_config_parse(json, "g.json"); }),
                       "g.json: the layer count is 3999999999999; dsee reads at most 4096 layers"));
  json["n_layer"] = 4096;
  EXPECT_EQ(model_config_parse(json, "g.json").num_layers, 4096);
}

TEST(ModelConfig, UntiedGpt2HeadIsAnError) {
  auto json = gpt2_json();
  json["tie_word_embeddings"] = false;
  EXPECT_TRUE(contains(error_of([&] { model_config_parse(json, "g.json"); }), "\"tie_word_embeddings\""));
}

TEST(ModelConfig, UnsupportedArchitectureAndActivationAreErrors) {
  auto json = bert_json();
  json["model_type"] = "t5";
  EXPECT_NE(error_of([&] { model_config_parse(json, "c.json"); }).find("\"model_type\" is \"t5\""), std::string::npos);
  json = bert_json();
  json["hidden_act"] = "swish";
  EXPECT_NE(error_of([&] { model_config_parse(json, "c.json"); }).find("\"hidden_act\""), std::string::npos);
  json = bert_json();
  json["position_embedding_type"] = "relative_key";
  EXPECT_NE(error_of([&] { model_config_parse(json, "c.json"); }).find("position_embedding_type"), std::string::npos);
}

TEST(ModelConfig, HfDefaultsAndDerivedFields) {
  auto roberta = bert_json();
  roberta["model_type"] = "roberta";
  roberta["pad_token_id"] = 1;
  roberta["id2label"] = {{"0", "neg"}, {"1", "neu"}, {"2", "pos"}};
  roberta["pruned_heads"] = {{"1", {3, 0}}};
  const auto c = model_config_parse(roberta, "r.json");
  EXPECT_EQ(c.position_offset, 2);
  EXPECT_EQ(c.num_labels, 3);
  EXPECT_EQ(c.id2label[2], "pos");
  EXPECT_EQ(c.kept_heads(1), (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(c.kept_heads(0).size(), 4u);
  const auto g = model_config_parse(gpt2_json(), "g.json");
  EXPECT_EQ(g.intermediate_size, 96);  // n_inner absent: 4 * n_embd
  EXPECT_TRUE(g.scale_attn_weights);
  EXPECT_EQ(g.activation, Activation::gelu_new);
}

TEST(LinearSeam, MaskAndShrinkActOnWeightBiasAndMask) {
  Linear linear{at::randn({6, 4}), at::randn({6}), at::ones({6, 4}), nullptr};
  linear.mask[2].zero_();
  const auto x = at::randn({3, 4});
  const auto y = linear.forward(x);
  EXPECT_TRUE(at::allclose(y.select(1, 2), linear.bias[2].expand({3})));
  linear.keep_rows(at::tensor(std::vector<std::int64_t>{0, 2, 5}, at::kLong));
  EXPECT_EQ(linear.out_features(), 3);
  EXPECT_TRUE(at::allclose(linear.forward(x), y.index_select(1, at::tensor(std::vector<std::int64_t>{0, 2, 5}))));
  linear.keep_columns(at::tensor(std::vector<std::int64_t>{1, 3}, at::kLong));
  EXPECT_EQ(linear.in_features(), 2);
  EXPECT_EQ(linear.mask.sizes(), linear.weight.sizes());
}

struct AddConstant : LinearTuning {
  at::Tensor forward(const Linear& base, const at::Tensor& x) override { return base.forward_frozen(x) + 1.0; }
  void keep_rows(const at::Tensor& rows) override { kept_rows = rows.size(0); }
  void keep_columns(const at::Tensor&) override {}
  std::int64_t kept_rows = -1;
};

TEST(LinearSeam, TuningMethodWrapsTheProjectionAndHearsOfShrinking) {
  auto config = model_config_parse(bert_json(), "c.json");
  EncoderModel model(config, true, at::kFloat, at::kCPU);
  randomise(model, 1);
  auto& query = model.linear("bert.encoder.layer.1.attention.self.query");
  EXPECT_EQ(&query, &model.linear("encoder.layer.1.attention.self.query"));
  const auto x = at::randn({2, 24});
  const auto before = query.forward(x);
  auto tuning = std::make_shared<AddConstant>();
  query.tuning = tuning;
  EXPECT_TRUE(at::allclose(query.forward(x), before + 1.0));
  model.prune_heads({{1, {2}}});
  EXPECT_EQ(tuning->kept_rows, 18);
  EXPECT_NE(error_of([&] { model.linear("encoder.layer.1.attention.self.nothing"); }).find("no projection"),
            std::string::npos);
}

// Removing a head equals zeroing its columns of the attention output.
TEST(HeadPruning, EqualsZeroingTheHeadsOutputColumns) {
  for (const auto* family : {"bert", "gpt2"}) {
    auto json = std::string(family) == "bert" ? bert_json() : gpt2_json();
    const auto config = model_config_parse(json, "c.json");
    std::unique_ptr<PretrainedModel> model;
    if (config.family == ModelFamily::gpt2)
      model = std::make_unique<Gpt2Model>(config, at::kFloat, at::kCPU);
    else
      model = std::make_unique<EncoderModel>(config, true, at::kFloat, at::kCPU);
    randomise(*model, 2);
    ModelInput input;
    input.input_ids = at::randint(0, 40, {2, 7}, at::kLong);
    const auto output_name =
        config.family == ModelFamily::gpt2 ? "h.1.attn.c_proj" : "encoder.layer.1.attention.output.dense";
    auto& output = model->linear(output_name);
    const auto full_weight = output.weight.clone();
    output.weight.narrow(1, 6, 6).zero_();   // head 1 of 4 (head_dim 6)
    output.weight.narrow(1, 18, 6).zero_();  // head 3
    const auto zeroed = model->forward(input).last_hidden_state;
    output.weight.copy_(full_weight);
    model->prune_heads({{1, {3, 1}}});
    EXPECT_EQ(model->linear(output_name).in_features(), 12);
    EXPECT_EQ(model->config().pruned_heads.at(1), (std::vector<std::int64_t>{1, 3}));
    const auto pruned = model->forward(input).last_hidden_state;
    EXPECT_TRUE(at::allclose(pruned, zeroed, 1e-5, 1e-6))
        << family << " " << (pruned - zeroed).abs().max().item<float>();
  }
}

// Decoding token by token with the cache gives the full forward's logits at
// every position, also with a padded batch.
TEST(Gpt2Cache, IncrementalDecodingEqualsFullForward) {
  Gpt2Model model(model_config_parse(gpt2_json(), "g.json"), at::kFloat, at::kCPU);
  randomise(model, 3);
  ModelInput full;
  full.input_ids = at::randint(0, 40, {2, 9}, at::kLong);
  full.attention_mask = at::ones({2, 9}, at::kLong);
  full.attention_mask[1].narrow(0, 6, 3).zero_();  // second sequence: 6 tokens
  const auto expected = model.forward(full).logits;
  KvCache cache;
  // A 3-token prompt, then one token at a time.
  for (std::int64_t start = 0; start < 9;) {
    const std::int64_t step = start == 0 ? 3 : 1;
    ModelInput input;
    input.input_ids = full.input_ids.narrow(1, start, step);
    input.attention_mask = full.attention_mask.narrow(1, 0, start + step);
    input.cache = &cache;
    const auto logits = model.forward(input).logits;
    const auto want = expected.narrow(1, start, step);
    const auto error = ((logits - want).abs().max() / want.abs().max()).item<double>();
    EXPECT_LE(error, 1e-5) << "positions " << start << ".." << start + step - 1;
    start += step;
  }
  EXPECT_EQ(cache.length(), 9);
}

// A folder with config.json and the given tensors.
std::filesystem::path write_model(const std::string& name, const nlohmann::json& config, const NamedTensors& tensors) {
  const auto dir = std::filesystem::temp_directory_path() / ("dsee_test_models_" + name);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump();
  safetensors_save(dir / "model.safetensors", tensors);
  return dir;
}

NamedTensors saved_tensors(PretrainedModel& model, const std::string& prefix) {
  NamedTensors tensors;
  for (const auto& slot : model.tensor_slots())
    tensors.emplace_back((slot.in_base_model ? prefix : "") + slot.name,
                         slot.stored_in_by_out ? slot.tensor->t().contiguous() : *slot.tensor);
  return tensors;
}

TEST(ModelLoad, NewHeadMayBeMissingOtherTensorsMayNot) {
  const auto config = model_config_parse(bert_json(), "c.json");
  EncoderModel model(config, true, at::kFloat, at::kCPU);
  randomise(model, 4);
  auto tensors = saved_tensors(model, "bert.");
  std::erase_if(tensors, [](const auto& t) { return t.name.rfind("classifier.", 0) == 0; });
  tensors.emplace_back("cls.predictions.bias", at::zeros({50}));  // another head: skipped
  const auto dir = write_model("new_head", bert_json(), tensors);
  auto loaded = model_load(dir);
  EXPECT_TRUE(loaded->has_task_head());
  ModelLoadOptions five_labels;
  five_labels.num_labels = 5;
  auto relabelled = model_load(dir, five_labels);
  ModelInput input;
  input.input_ids = at::randint(0, 50, {3, 4}, at::kLong);
  EXPECT_EQ(relabelled->forward(input).logits.sizes(), (std::vector<std::int64_t>{3, 5}));
  EXPECT_EQ(relabelled->config().id2label.size(), 5u);

  auto without_key = tensors;
  std::erase_if(without_key, [](const auto& t) { return t.name == "bert.encoder.layer.1.attention.self.key.weight"; });
  const auto missing = error_of([&] { model_load(write_model("missing", bert_json(), without_key)); });
  EXPECT_NE(missing.find("bert.encoder.layer.1.attention.self.key.weight [24, 24]"), std::string::npos) << missing;

  auto wrong = tensors;
  for (auto& [name, t] : wrong)
    if (name == "bert.encoder.layer.0.intermediate.dense.weight") t = at::zeros({31, 24});
  const auto shape = error_of([&] { model_load(write_model("shape", bert_json(), wrong)); });
  EXPECT_NE(shape.find("\"bert.encoder.layer.0.intermediate.dense.weight\" has shape [31, 24], the config implies "
                       "[30, 24]"),
            std::string::npos)
      << shape;

  auto extra = tensors;
  extra.emplace_back("bert.encoder.layer.0.adapter.weight", at::zeros({2, 2}));
  const auto unexpected = error_of([&] { model_load(write_model("extra", bert_json(), extra)); });
  EXPECT_NE(unexpected.find("bert.encoder.layer.0.adapter.weight [2, 2]"), std::string::npos) << unexpected;
}

// bert-base-uncased's checkpoint names its layer norms gamma/beta.
TEST(ModelLoad, LayerNormGammaBetaNamesLoad) {
  EncoderModel model(model_config_parse(bert_json(), "c.json"), true, at::kFloat, at::kCPU);
  randomise(model, 6);
  auto tensors = saved_tensors(model, "bert.");
  for (auto& [name, t] : tensors) {
    if (name.ends_with("LayerNorm.weight")) name.replace(name.size() - 6, 6, "gamma");
    if (name.ends_with("LayerNorm.bias")) name.replace(name.size() - 4, 4, "beta");
  }
  auto loaded = model_load(write_model("gamma_beta", bert_json(), tensors));
  ModelInput input;
  input.input_ids = at::randint(0, 50, {2, 5}, at::kLong);
  EXPECT_TRUE(at::equal(loaded->forward(input).logits, model.forward(input).logits));
}

TEST(ModelLoad, Bf16CheckpointIntoBf16AndFp32) {
  Gpt2Model model(model_config_parse(gpt2_json(), "g.json"), at::kFloat, at::kCPU);
  randomise(model, 5);
  auto tensors = saved_tensors(model, "transformer.");
  for (auto& [name, t] : tensors) t = t.to(at::kBFloat16);
  const auto dir = write_model("bf16", gpt2_json(), tensors);
  ModelInput input;
  input.input_ids = at::randint(0, 40, {1, 5}, at::kLong);
  auto fp32 = model_load(dir);
  ModelLoadOptions options;
  options.dtype = at::kBFloat16;
  auto bf16 = model_load(dir, options);
  const auto a = fp32->forward(input).logits;
  const auto b = bf16->forward(input).logits.to(at::kFloat);
  EXPECT_EQ(bf16->dtype(), at::kBFloat16);
  EXPECT_LE(((a - b).abs().max() / a.abs().max()).item<double>(), 0.05);
}

// ModelInput::first_token_only (the last layer for position 0 alone) gives
// the full forward's logits and, through a DSEE update on every layer, the
// same gradients of A, B, S and the head: BERT and RoBERTa, with padding.
TEST(FirstTokenOnly, SameLogitsAndGradientsAsTheFullLastLayer) {
  for (const auto& json : {bert_json(), roberta_json()}) {
    auto model = tiny_model(json, 4);
    TuningOptions options;
    options.method = TuningMethod::dsee;
    options.rank = 2;
    options.alpha = 4.0;
    auto tuning = tuning_attach(*model, options, random_omega(*model, 5, 2));
    randomise_updates(*tuning, 3);
    tuning->set_training(true);
    ModelInput input;
    input.input_ids = at::randint(2, 40, {3, 9}, at::kLong);
    input.attention_mask = at::ones({3, 9}, at::kLong);
    input.attention_mask[1].narrow(0, 5, 4).zero_();
    auto logits_and_grads = [&](bool first_only) {
      input.first_token_only = first_only;
      for (const auto& [name, tensor] : tuning->trainable_parameters()) tensor.mutable_grad() = at::Tensor();
      const auto output = model->forward(input);
      EXPECT_EQ(output.last_hidden_state.size(1), first_only ? 1 : 9);
      output.logits.pow(2).sum().backward();
      std::vector<at::Tensor> out = {output.logits.detach()};
      for (const auto& [name, tensor] : tuning->trainable_parameters()) out.push_back(tensor.grad().clone());
      return out;
    };
    const auto full = logits_and_grads(false);
    const auto first = logits_and_grads(true);
    ASSERT_EQ(full.size(), first.size());
    // Only the GEMM shapes differ (rows of position 0 alone), so only the
    // rounding does: within 1e-5 of each tensor's largest entry.
    for (std::size_t i = 0; i < full.size(); ++i) {
      const double scale = full[i].abs().max().item<double>();
      const double error = (first[i] - full[i]).abs().max().item<double>();
      EXPECT_LE(error, 1e-5 * scale) << json["model_type"] << " tensor " << i << ": " << error << " of " << scale;
    }
  }
}

}  // namespace
}  // namespace dsee
