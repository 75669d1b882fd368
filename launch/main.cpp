// dsee: the command line. Parses the subcommand, sets up logging, runs it,
// and turns errors into exit codes once, here (see Note [Errors] in
// base/error.cpp): a dsee::Error prints its message and exits 1, a usage
// error exits 2, anything else is a bug and aborts.
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "base/env_vars.h"
#include "base/error.h"
#include "base/log.h"
#include "distributed/stop_signal.h"
#include "launch/commands.h"

namespace {

[[noreturn]] void internal_error(const char* what) {
  std::fprintf(stderr, "dsee: internal error (a bug in dsee, please report it): %s\n", what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dsee: Dually Sparsity-Embedded Efficient Tuning of BERT, RoBERTa and GPT-2", "dsee"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand
  dsee::LogOptions log;
  if (const char* level = std::getenv(dsee::env_vars::log_level)) log.level = level;
  app.add_option("--log-level", log.level, "trace, debug, info, warn, error or off (env DSEE_LOG_LEVEL)")
      ->capture_default_str();
  app.add_flag("--log-all-ranks", log.all_ranks, "Log info messages from every rank, not only rank 0");

  // One line per subcommand, in the order --help lists them.
  const std::vector<dsee::Command> commands = {
      dsee::env_command(app),        dsee::config_command(app), dsee::forward_command(app), dsee::tokenize_command(app),
      dsee::detokenize_command(app), dsee::run_command(app),    dsee::sweep_command(app),   dsee::report_command(app),
      dsee::count_command(app),      dsee::prune_command(app),  dsee::omega_command(app),   dsee::export_command(app),
      dsee::generate_command(app),   dsee::score_command(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  try {
    dsee::log_init(log);
    for (const auto& command : commands)
      if (command.app->parsed()) return command.run();
    internal_error("no subcommand was run");
  } catch (const dsee::StopRequested& e) {
    std::fprintf(stderr, "dsee: %s\n", e.what());
    return e.exit_code();
  } catch (const dsee::UsageError& e) {
    std::fprintf(stderr, "dsee: usage error: %s\n", e.what());
    return 2;
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "dsee: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    internal_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    internal_error(e.what());
  }
}
