// Mean ± std over seeds: see seed_stats.h.
#include "recipes/seed_stats.h"

#include <fmt/format.h>

#include <cmath>

namespace dsee {

SeedStats seed_stats(const std::vector<double>& values) {
  SeedStats stats;
  stats.n = values.size();
  if (values.empty()) return stats;
  for (const double v : values) stats.mean += v;
  stats.mean /= static_cast<double>(values.size());
  if (values.size() < 2) return stats;
  double squares = 0.0;
  for (const double v : values) squares += (v - stats.mean) * (v - stats.mean);
  stats.std = std::sqrt(squares / static_cast<double>(values.size() - 1));
  return stats;
}

std::string seed_stats_cell(const SeedStats& stats, int decimals) {
  if (stats.n == 0) return "-";
  if (stats.n == 1) return fmt::format("{:.{}f} (1)", stats.mean, decimals);
  return fmt::format("{:.{}f} ± {:.{}f} ({})", stats.mean, decimals, stats.std, decimals, stats.n);
}

}  // namespace dsee
