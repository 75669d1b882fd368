// The demo's synthetic pretrained model and token sequences: see demo_task.h.
//
// Note [The demo's planted structure]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// DSEE's claim is that a pretrained weight is close to low rank plus a
// sparse set of large entries, and that an update shaped the same way (low
// rank + a sparse residual on the outlier positions) is a better use of a
// small trainable budget than low rank alone. Random Gaussian weights have
// neither property, so a demo on them would show nothing. The projections
// drawn here have exactly that structure, with the outliers far above the
// low-rank entries (outlier_scale ≫ lowrank_std) so that GreBsmo's sparse
// part S finds them; the recipe stage then plants the teacher's update on the
// positions GreBsmo actually returns, and labels sequences with the teacher.
// Whether DSEE, LoRA or full fine-tuning recovers the teacher best is what
// the demo measures; nothing here decides it.
//
// All draws come from one generator in a fixed order (tensors in HF order),
// so adding a field to DemoSpec without drawing from it leaves every tensor
// unchanged.
#include "data/demo_task.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "base/error.h"

namespace dsee {

at::Tensor demo_projection_weight(std::int64_t out, std::int64_t in, const DemoSpec& spec, at::Generator& generator) {
  DSEE_CHECK(out > 0 && in > 0 && spec.weight_rank > 0 && spec.weight_rank <= std::min(out, in),
             "demo: a {}x{} projection cannot have rank {}", out, in, spec.weight_rank);
  DSEE_CHECK(spec.outliers >= 0 && spec.outliers <= out * in, "demo: {} outliers do not fit a {}x{} projection",
             spec.outliers, out, in);
  // U·Vᵀ with U, V ~ N(0, 1) has entries of variance rank; scale to lowrank_std.
  const auto u = at::randn({out, spec.weight_rank}, generator);
  const auto v = at::randn({in, spec.weight_rank}, generator);
  auto weight = u.matmul(v.t()) * (spec.lowrank_std / std::sqrt(double(spec.weight_rank)));
  weight += at::randn({out, in}, generator) * spec.noise_std;
  if (spec.outliers > 0) {
    // Distinct positions: the first `outliers` of a random permutation.
    const auto positions = at::randperm(out * in, generator, at::kLong).narrow(0, 0, spec.outliers);
    const auto signs = at::where(at::rand({spec.outliers}, generator) < 0.5, -1.0, 1.0).to(at::kFloat);
    weight.view({-1}).index_add_(0, positions, signs * spec.outlier_scale);
  }
  return weight;
}

NamedTensors demo_pretrained_tensors(const DemoSpec& spec) {
  DSEE_CHECK(spec.num_heads > 0 && spec.hidden_size % spec.num_heads == 0,
             "demo: hidden_size {} is not a multiple of num_heads {}", spec.hidden_size, spec.num_heads);
  DSEE_CHECK(spec.seq_len >= 2 && spec.seq_len <= spec.max_positions && spec.vocab_size > 4,
             "demo: need 2 <= seq_len ({}) <= max_positions ({}) and vocab_size ({}) > 4", spec.seq_len,
             spec.max_positions, spec.vocab_size);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(spec.seed);
  const auto h = spec.hidden_size;
  NamedTensors tensors;
  const auto add_normal = [&](const std::string& name, at::IntArrayRef shape, double std) {
    tensors.push_back({name, at::randn(shape, generator) * std});
  };
  const auto add_norm = [&](const std::string& name, std::int64_t size) {
    tensors.push_back({name + ".weight", at::ones({size})});
    tensors.push_back({name + ".bias", at::zeros({size})});
  };
  const auto add_projection = [&](const std::string& name, std::int64_t out, std::int64_t in) {
    tensors.push_back({name + ".weight", demo_projection_weight(out, in, spec, generator)});
    add_normal(name + ".bias", {out}, 0.02);
  };

  add_normal("bert.embeddings.word_embeddings.weight", {spec.vocab_size, h}, 0.5);
  add_normal("bert.embeddings.position_embeddings.weight", {spec.max_positions, h}, 0.5);
  add_normal("bert.embeddings.token_type_embeddings.weight", {2, h}, 0.02);
  add_norm("bert.embeddings.LayerNorm", h);
  for (std::int64_t layer = 0; layer < spec.num_layers; ++layer) {
    const auto p = fmt::format("bert.encoder.layer.{}.", layer);
    add_projection(p + "attention.self.query", h, h);
    add_projection(p + "attention.self.key", h, h);
    add_projection(p + "attention.self.value", h, h);
    add_projection(p + "attention.output.dense", h, h);
    add_norm(p + "attention.output.LayerNorm", h);
    add_projection(p + "intermediate.dense", spec.intermediate_size, h);
    add_projection(p + "output.dense", h, spec.intermediate_size);
    add_norm(p + "output.LayerNorm", h);
  }
  add_projection("bert.pooler.dense", h, h);
  add_normal("classifier.weight", {2, h}, 0.2);
  tensors.push_back({"classifier.bias", at::zeros({2})});
  return tensors;
}

at::Tensor demo_token_sequences(const DemoSpec& spec, std::int64_t count, std::uint64_t stream) {
  DSEE_CHECK(count > 0, "demo: asked for {} sequences", count);
  // A generator per stream, so the dev set does not depend on the train size.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(spec.seed + 0x9E3779B97F4A7C15ULL * (stream + 1));
  auto ids = at::randint(4, spec.vocab_size, {count, spec.seq_len}, generator, at::kLong);
  ids.select(1, 0).fill_(1);
  return ids;
}

}  // namespace dsee
