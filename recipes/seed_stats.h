// Mean ± standard deviation over the runs of one setting (seeds, rounds), as
// dsee report and the demo's comparison table print them.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace dsee {

struct SeedStats {
  double mean = 0.0;
  double std = 0.0;  // sample standard deviation (n − 1 in the denominator); 0 for n = 1
  std::size_t n = 0;
};

// The values' statistics; n = 0 (mean and std 0) for none.
SeedStats seed_stats(const std::vector<double>& values);

// "0.821 ± 0.015 (5)" with `decimals` digits after the point; "0.821 (1)"
// for one value (no spread to show); "-" for none.
std::string seed_stats_cell(const SeedStats& stats, int decimals);

}  // namespace dsee
