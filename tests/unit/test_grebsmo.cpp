// GreBsmo on planted matrices: what each variant recovers, and its counts.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <set>

#include "base/error.h"
#include "core/sparsity/grebsmo.h"
#include "core/sparsity/omega.h"

namespace dsee {
namespace {

// One intra-op thread: these matrices are small, and on a shared 2-core machine
// OpenMP's spinning threads made them 10-50x slower.
const bool single_threaded = (at::set_num_threads(1), true);

struct Planted {
  at::Tensor weight;              // low rank + small noise + spikes
  std::set<std::int64_t> spikes;  // flat indices of the spikes
};

// [m, n] = (rank-`rank` part, entries ~0.04) + N(0, noise²) + `spikes` entries of ±1.
Planted planted_matrix(std::int64_t m, std::int64_t n, std::int64_t rank, int spikes, double noise,
                       std::uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double factor_std = std::sqrt(0.04 / std::sqrt(double(rank)));
  at::Tensor w = at::randn({m, rank}, g) * factor_std;
  w = w.matmul(at::randn({rank, n}, g) * factor_std);
  w = w + at::randn({m, n}, g) * noise;
  Planted p;
  const at::Tensor positions = at::randperm(m * n, g).narrow(0, 0, spikes);
  auto flat = w.view({-1});
  for (std::int64_t i = 0; i < spikes; ++i) {
    const std::int64_t at_index = positions[i].item<std::int64_t>();
    flat[at_index] = (i % 2 ? 1.0 : -1.0);
    p.spikes.insert(at_index);
  }
  p.weight = w;
  return p;
}

std::int64_t count_in(const at::Tensor& indices, const std::set<std::int64_t>& wanted) {
  std::int64_t hits = 0;
  for (std::int64_t i = 0; i < indices.numel(); ++i) hits += wanted.count(indices[i].item<std::int64_t>());
  return hits;
}

at::Tensor initial_v(std::int64_t n, std::uint64_t seed = 7) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return grebsmo_initial_v(n, g);
}

TEST(Grebsmo, ToleranceWithRankCapAtPlantedRankFindsTheOutliers) {
  const Planted p = planted_matrix(256, 192, 8, 16, 1e-3, 1);
  GrebsmoOptions options = grebsmo_default_options(GrebsmoVariant::tolerance);
  options.max_rank = 8;
  const GrebsmoResult result = grebsmo(p.weight, initial_v(192), options);
  EXPECT_EQ(result.rank, 8);
  EXPECT_LT(result.outer_steps, options.outer) << "the stop rule should end it early";
  const at::Tensor omega = omega_top_c(result.sparse.abs(), 16);
  EXPECT_GE(count_in(omega, p.spikes), 15) << "at least 90% of the 16 planted outliers";
}

// The reference variant keeps growing the rank by 5 per outer step; once it
// passes planted rank + spikes (8 + 16) the low-rank part absorbs the spikes
// and S is empty, so Ω is the tie-break's first c flat indices. With the 100
// outer steps of docs/method.md ('GreBsmo') the last rank is 496, so the
// matrix must be larger than that for the effect not to be mere full rank:
// 512×512 runs in ~3 s.
TEST(Grebsmo, ReferenceAbsorbsPlantedSpikesOnceRankPassesPlantedRankPlusSpikes) {
  const Planted p = planted_matrix(512, 512, 8, 16, 1e-3, 1);
  const GrebsmoOptions options = grebsmo_default_options(GrebsmoVariant::reference);
  const GrebsmoResult result = grebsmo(p.weight, initial_v(512), options);
  EXPECT_EQ(result.outer_steps, 100);
  EXPECT_EQ(result.rank, 496);
  EXPECT_EQ(result.sparse.count_nonzero().item<std::int64_t>(), 0);
  EXPECT_TRUE(at::equal(omega_top_c(result.sparse.abs(), 16), at::arange(16, at::kLong)));
}

// Before that point (two outer steps, rank 6 < 8 in the last) S still holds
// most spikes (12 of 16 here, the rest crowded out by unfitted low-rank
// entries); by rank 36 (8 steps) it is already empty.
TEST(Grebsmo, ReferenceLosesTheSpikesAsSoonAsItsRankPassesPlantedRankPlusSpikes) {
  const Planted p = planted_matrix(128, 96, 8, 16, 1e-3, 1);
  GrebsmoOptions options = grebsmo_default_options(GrebsmoVariant::reference);
  options.outer = 2;
  const GrebsmoResult early = grebsmo(p.weight, initial_v(96), options);
  EXPECT_EQ(early.rank, 6);
  EXPECT_GT(early.sparse.count_nonzero().item<std::int64_t>(), 16);
  EXPECT_GE(count_in(omega_top_c(early.sparse.abs(), 16), p.spikes), 12);
  options.outer = 8;
  const GrebsmoResult late = grebsmo(p.weight, initial_v(96), options);
  EXPECT_EQ(late.rank, 36);
  EXPECT_EQ(late.sparse.count_nonzero().item<std::int64_t>(), 0);
}

TEST(Grebsmo, ReferenceRunsEveryOuterStepAndCapsTheRankAtMinShape) {
  const at::Tensor w = at::randn({40, 24}, at::make_generator<at::CPUGeneratorImpl>(3)) * 0.04;
  const GrebsmoResult result = grebsmo(w, initial_v(24), grebsmo_default_options(GrebsmoVariant::reference));
  EXPECT_EQ(result.outer_steps, 100);
  EXPECT_EQ(result.rank, 24);
  // At full rank Q·V reproduces W to rounding, far below tau: S is empty.
  EXPECT_EQ(result.sparse.count_nonzero().item<std::int64_t>(), 0);
}

TEST(Grebsmo, ToleranceDefaultCapsTheRankAt32AndStopsEarly) {
  const at::Tensor w = at::randn({128, 96}, at::make_generator<at::CPUGeneratorImpl>(4)) * 0.04;
  GrebsmoOptions options;
  options.variant = GrebsmoVariant::tolerance;  // max_rank = 0: the variant's default
  const GrebsmoResult result = grebsmo(w, initial_v(96), options);
  EXPECT_EQ(result.rank, 32);
  EXPECT_LT(result.outer_steps, 100);
  EXPECT_GT(result.sparse.count_nonzero().item<std::int64_t>(), 16);
}

TEST(Grebsmo, Float64OptionComputesInDouble) {
  const Planted p = planted_matrix(256, 192, 8, 16, 1e-3, 2);
  GrebsmoOptions options = grebsmo_default_options(GrebsmoVariant::tolerance);
  options.max_rank = 8;
  options.dtype = at::kDouble;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
  const GrebsmoResult result = grebsmo(p.weight, grebsmo_initial_v(192, g, at::kDouble), options);
  EXPECT_EQ(result.sparse.scalar_type(), at::kDouble);
  EXPECT_GE(count_in(omega_top_c(result.sparse.abs(), 16), p.spikes), 15);
}

TEST(Grebsmo, RejectsBadInputsWithTheMatrixName) {
  const GrebsmoOptions options;
  try {
    grebsmo(at::ones({4, 3}), at::ones({1, 4}), options, "layer.0.query.weight");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.0.query.weight"), std::string::npos) << e.what();
  }
  at::Tensor w = at::ones({4, 3});
  w[1][1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(grebsmo(w, at::ones({1, 3}), options), Error);
  EXPECT_THROW(grebsmo_variant_from_name("fast"), Error);
}

}  // namespace
}  // namespace dsee
