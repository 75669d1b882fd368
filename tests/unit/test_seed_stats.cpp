// Mean ± sample standard deviation over seeds, as report tables print them.
#include <gtest/gtest.h>

#include "recipes/seed_stats.h"

namespace dsee {
namespace {

TEST(SeedStats, SampleStandardDeviationAndCells) {
  // numpy: mean 0.8196, statistics.stdev 0.0314849
  const auto s = seed_stats({0.838, 0.854, 0.801, 0.775, 0.830});
  EXPECT_EQ(s.n, 5u);
  EXPECT_NEAR(s.mean, 0.8196, 1e-12);
  EXPECT_NEAR(s.std, 0.0314849, 1e-6);
  EXPECT_EQ(seed_stats_cell(s, 3), "0.820 ± 0.031 (5)");
  EXPECT_EQ(seed_stats_cell(seed_stats({0.5}), 3), "0.500 (1)");
  EXPECT_EQ(seed_stats_cell(seed_stats({}), 3), "-");
  EXPECT_EQ(seed_stats({2.0, 2.0}).std, 0.0);
}

}  // namespace
}  // namespace dsee
