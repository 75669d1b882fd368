// Ω selection: exactly c indices, the tie-break, the methods' RNG order, and
// results independent of the worker count.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "core/sparsity/omega.h"

namespace dsee {
namespace {

at::Tensor longs(std::vector<std::int64_t> values) { return at::tensor(values, at::kLong); }

TEST(OmegaTopC, TiesGoToTheLowerFlatIndexAndTheResultIsAscending) {
  const at::Tensor scores = at::tensor({1.0f, 3.0f, 3.0f, 0.0f, 3.0f, 2.0f}).view({2, 3});
  EXPECT_TRUE(at::equal(omega_top_c(scores, 2), longs({1, 2})));
  EXPECT_TRUE(at::equal(omega_top_c(scores, 4), longs({1, 2, 4, 5})));
}

TEST(OmegaTopC, KeepsExactlyCWhenFewerThanCAreNonZero) {
  const at::Tensor scores = at::tensor({0.0f, 0.0f, 0.5f, 0.0f, 0.0f, 0.0f});
  EXPECT_TRUE(at::equal(omega_top_c(scores, 3), longs({0, 1, 2})));
  EXPECT_TRUE(at::equal(omega_top_c(at::zeros({3, 3}), 4), longs({0, 1, 2, 3})));
}

TEST(OmegaTopC, CZeroIsEmptyAndCBeyondTheMatrixIsAnError) {
  EXPECT_EQ(omega_top_c(at::ones({3, 3}), 0).numel(), 0);
  EXPECT_EQ(omega_top_c(at::ones({3, 3}), 9).numel(), 9);
  EXPECT_THROW(omega_top_c(at::ones({3, 3}), 10), Error);
  EXPECT_THROW(omega_top_c(at::full({2, 2}, std::numeric_limits<float>::quiet_NaN()), 1), Error);
}

std::vector<NamedMatrix> small_matrices() {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11);
  return {{"layer.0.query.weight", at::randn({48, 32}, g)},
          {"layer.0.value.weight", at::randn({48, 32}, g)},
          {"h.0.attn.c_attn.weight:q", at::randn({40, 40}, g)},
          {"h.0.attn.c_attn.weight:v", at::randn({40, 40}, g)}};
}

TEST(OmegaSelect, MagnitudeIsTopCOfAbsW) {
  const auto matrices = small_matrices();
  OmegaOptions options;
  options.method = OmegaMethod::magnitude;
  options.c = 5;
  const auto entries = omega_select(matrices, options);
  ASSERT_EQ(entries.size(), matrices.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i].name, matrices[i].name);
    const at::Tensor expected = std::get<0>(at::sort(std::get<1>(at::topk(matrices[i].weight.abs().view({-1}), 5))));
    EXPECT_TRUE(at::equal(entries[i].indices, expected)) << entries[i].name;
  }
}

TEST(OmegaSelect, RandomDrawsOneRandnPerMatrixInOrderFromTheSeed) {
  const auto matrices = small_matrices();
  OmegaOptions options;
  options.method = OmegaMethod::random;
  options.c = 6;
  options.seed = 1234;
  const auto entries = omega_select(matrices, options);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1234);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const at::Tensor draw = at::randn(matrices[i].weight.sizes(), g);
    EXPECT_TRUE(at::equal(entries[i].indices, omega_top_c(draw.abs(), 6))) << entries[i].name;
  }
}

TEST(OmegaSelect, WorkerCountDoesNotChangeTheResult) {
  const auto matrices = small_matrices();
  for (const GrebsmoVariant variant : {GrebsmoVariant::reference, GrebsmoVariant::tolerance}) {
    OmegaOptions options;
    options.grebsmo = grebsmo_default_options(variant);
    options.grebsmo.outer = 6;  // rank 26 < min shape: S keeps real entries
    options.seed = 3;
    const auto one = omega_select(matrices, options);
    options.workers = 2;
    const auto two = omega_select(matrices, options);
    for (std::size_t i = 0; i < one.size(); ++i) {
      EXPECT_GT(one[i].sparse_nonzeros, options.c);
      EXPECT_EQ(one[i].sparse_nonzeros, two[i].sparse_nonzeros);
      EXPECT_TRUE(at::equal(one[i].indices, two[i].indices)) << one[i].name;
    }
  }
}

// The pipeline's split across ranks: each share computed alone equals its
// part of the full selection (GreBsmo's draws are made for every matrix).
TEST(OmegaSelect, ARangeOfMatricesEqualsItsPartOfTheFullSelection) {
  const auto matrices = small_matrices();
  for (const OmegaMethod method : {OmegaMethod::grebsmo, OmegaMethod::random}) {
    OmegaOptions options;
    options.method = method;
    options.grebsmo = grebsmo_default_options(GrebsmoVariant::tolerance);
    options.grebsmo.outer = 6;
    options.seed = 5;
    const auto all = omega_select(matrices, options);
    std::vector<std::size_t> reported;
    options.on_matrix = [&](std::size_t index, const OmegaEntry&, double) { reported.push_back(index); };
    for (const auto& [first, count] :
         std::vector<std::pair<std::size_t, std::size_t>>{{0, 1}, {1, 2}, {3, 5}, {4, 1}}) {
      options.first = first;
      options.count = count;
      reported.clear();
      const auto part = omega_select(matrices, options);
      const std::size_t expected = first >= all.size() ? 0 : std::min(count, all.size() - first);
      ASSERT_EQ(part.size(), expected) << first << "+" << count;
      ASSERT_EQ(reported.size(), expected);
      for (std::size_t i = 0; i < part.size(); ++i) {
        EXPECT_EQ(reported[i], first + i);
        EXPECT_EQ(part[i].name, all[first + i].name);
        EXPECT_EQ(part[i].sparse_nonzeros, all[first + i].sparse_nonzeros);
        EXPECT_TRUE(at::equal(part[i].indices, all[first + i].indices)) << part[i].name;
      }
    }
  }
}

TEST(OmegaSelect, CZeroGivesEmptyOmegaForEveryMatrix) {
  OmegaOptions options;
  options.c = 0;
  options.grebsmo.outer = 2;
  for (const auto& entry : omega_select(small_matrices(), options)) EXPECT_EQ(entry.indices.numel(), 0);
}

TEST(OmegaStability, MagnitudeOfWellSeparatedWeightsIsUnmovedByOneUlp) {
  const auto matrices = small_matrices();
  OmegaOptions options;
  options.method = OmegaMethod::magnitude;
  for (const auto& s : omega_stability(matrices, options)) EXPECT_EQ(s.kept, s.c) << s.name;
}

TEST(OmegaStability, CountsSurvivorsBetweenZeroAndC) {
  OmegaOptions options;
  options.grebsmo.outer = 4;
  for (const auto& s : omega_stability(small_matrices(), options)) {
    EXPECT_EQ(s.c, 16);
    EXPECT_GE(s.kept, 0);
    EXPECT_LE(s.kept, 16);
  }
}

}  // namespace
}  // namespace dsee
