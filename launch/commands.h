// The dsee subcommands. Each registers its options on the CLI11 app and
// returns a Command whose run() is called once the command line is parsed.
// run() returns the exit code; user errors are thrown as dsee::Error and
// handled in main.cpp.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace dsee {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command env_command(CLI::App& app);         // dsee env
Command config_command(CLI::App& app);      // dsee config
Command forward_command(CLI::App& app);     // dsee forward
Command tokenize_command(CLI::App& app);    // dsee tokenize
Command detokenize_command(CLI::App& app);  // dsee detokenize
Command run_command(CLI::App& app);         // dsee run
Command sweep_command(CLI::App& app);       // dsee sweep
Command report_command(CLI::App& app);      // dsee report
Command count_command(CLI::App& app);       // dsee count
Command prune_command(CLI::App& app);       // dsee prune
Command omega_command(CLI::App& app);       // dsee omega
Command export_command(CLI::App& app);      // dsee export
Command generate_command(CLI::App& app);    // dsee generate
Command score_command(CLI::App& app);       // dsee score

}  // namespace dsee
