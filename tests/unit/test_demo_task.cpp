// The demo's synthetic world: reproducible, shaped like the HF model it
// stands for, and with the structure DSEE assumes (low rank + outliers).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "data/demo_task.h"
#include "error_of.h"
#include "tiny_models.h"

namespace dsee {
namespace {

TEST(DemoTask, TensorsAreReproducibleAndMatchTheModelsSlots) {
  DemoSpec spec;
  const auto a = demo_pretrained_tensors(spec);
  const auto b = demo_pretrained_tensors(spec);
  nlohmann::json json = bert_json();
  json["vocab_size"] = spec.vocab_size;
  json["hidden_size"] = spec.hidden_size;
  json["num_hidden_layers"] = spec.num_layers;
  json["num_attention_heads"] = spec.num_heads;
  json["intermediate_size"] = spec.intermediate_size;
  json["max_position_embeddings"] = spec.max_positions;
  EncoderModel model(model_config_parse(json, "demo/config.json"), true, at::kFloat, at::kCPU);
  const auto slots = model.tensor_slots();
  ASSERT_EQ(a.size(), slots.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto expected = (slots[i].in_base_model ? "bert." : "") + slots[i].name;
    EXPECT_EQ(a[i].name, expected);
    EXPECT_EQ(a[i].tensor.sizes(), slots[i].tensor->sizes()) << a[i].name;
    EXPECT_TRUE(at::equal(a[i].tensor, b[i].tensor)) << a[i].name;
  }
  spec.seed += 1;
  EXPECT_FALSE(at::equal(demo_pretrained_tensors(spec)[0].tensor, a[0].tensor));
}

TEST(DemoTask, ProjectionIsLowRankPlusOutliers) {
  DemoSpec spec;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto w = demo_projection_weight(64, 48, spec, generator);
  // The outliers are the largest entries, far above the low-rank part.
  const auto flat = w.flatten();
  const auto top = flat.abs().topk(spec.outliers + 1);
  EXPECT_GT(std::get<0>(top)[spec.outliers - 1].item<double>(), 0.6 * spec.outlier_scale);
  EXPECT_LT(std::get<0>(top)[spec.outliers].item<double>(), 0.5 * spec.outlier_scale);
  // Without them, singular values past the planted rank are noise.
  auto rest = flat.clone();
  const auto positions = std::get<1>(top).narrow(0, 0, spec.outliers);
  rest.index_add_(0, positions, -flat.index_select(0, positions).sign() * spec.outlier_scale);
  rest = rest.view_as(w);
  const auto sv = at::linalg_svdvals(rest.to(at::kDouble));
  EXPECT_GT(sv[spec.weight_rank - 1].item<double>(), 20 * sv[spec.weight_rank].item<double>());
  EXPECT_LT(sv[spec.weight_rank].item<double>(), 3 * spec.noise_std * (std::sqrt(64.0) + std::sqrt(48.0)));
}

TEST(DemoTask, SequencesStartWithClsAndAvoidSpecialTokens) {
  DemoSpec spec;
  const auto train = demo_token_sequences(spec, 100, 0);
  EXPECT_EQ(train.sizes(), (std::vector<std::int64_t>{100, spec.seq_len}));
  EXPECT_TRUE(at::all(train.select(1, 0) == 1).item<bool>());
  const auto body = train.narrow(1, 1, spec.seq_len - 1);
  EXPECT_GE(body.min().item<std::int64_t>(), 4);
  EXPECT_LT(body.max().item<std::int64_t>(), spec.vocab_size);
  EXPECT_TRUE(at::equal(train, demo_token_sequences(spec, 100, 0)));
  EXPECT_FALSE(at::equal(train, demo_token_sequences(spec, 100, 1)));
  EXPECT_TRUE(at::equal(demo_token_sequences(spec, 10, 1), demo_token_sequences(spec, 20, 1).narrow(0, 0, 10)));
}

TEST(DemoTask, BadSpecIsAnError) {
  DemoSpec spec;
  spec.num_heads = 7;
  EXPECT_TRUE(contains(error_of([&] { demo_pretrained_tensors(spec); }), "not a multiple of num_heads"));
}

}  // namespace
}  // namespace dsee
