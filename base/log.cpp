#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "base/error.h"

namespace dsee {
namespace {

LogOptions g_options;

void apply_pattern(const std::string& rank) {
  spdlog::set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%^%l%$] %v", rank));
}

}  // namespace

spdlog::level::level_enum log_level_from_name(const std::string& name) {
  const auto level = spdlog::level::from_str(name);
  // from_str maps every unknown name to "off"; only the literal "off" may.
  if (level == spdlog::level::off && name != "off")
    throw UsageError(fmt::format("unknown log level '{}': use one of trace, debug, info, warn, error, off", name));
  return level;
}

void log_init(const LogOptions& options) {
  g_options = options;
  auto logger = spdlog::stderr_color_mt("dsee");
  spdlog::set_default_logger(logger);
  spdlog::set_level(log_level_from_name(options.level));
  apply_pattern("-");
}

void log_set_rank(int rank, int world_size) {
  apply_pattern(world_size > 1 ? fmt::format("{}/{}", rank, world_size) : std::to_string(rank));
  auto level = log_level_from_name(g_options.level);
  if (rank != 0 && !g_options.all_ranks && level < spdlog::level::warn) level = spdlog::level::warn;
  spdlog::set_level(level);
}

}  // namespace dsee
