// dsee score: corpus scores of a hypotheses file against reference files,
// the NLG metrics of the GPT-2 tables (docs/scoring.md). The native scorers
// (core/train/nlg_scores.h) by default; with --official the reference
// implementations in the project's Python environment, through
// launch/score_official.py, each number labelled with the tool that made it.
//
// Files: HYPS one hypothesis per line; each REFS file one reference per line,
// line k the reference of hypothesis k, an empty (or blank) line where item k
// has no reference of that index — sacrebleu's layout of several reference
// files, with an empty line read as "no reference" (None to sacrebleu's
// API). Lines end at '\n'; a '\r' before it is dropped.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include "base/env_vars.h"
#include "base/error.h"
#include "base/files.h"
#include "core/train/nlg_scores.h"
#include "data/unicode.h"
#include "launch/commands.h"
#include "launch/python_scripts.h"

namespace dsee {
namespace {

// Every metric dsee score knows, in the order it prints them. METEOR has no
// native scorer: only --official gives it.
const std::vector<std::string> all_metrics = {"bleu", "nist", "meteor", "rouge_l", "cider", "ter"};

std::vector<std::string> read_lines(const std::string& path, const char* option) {
  std::string text;
  try {
    text = file_read_text(path);
  } catch (const Error& e) {
    throw Error(fmt::format("dsee score {}: {}", option, e.what()));
  }
  std::string repaired = text;
  if (unicode::utf8_repair(repaired) > 0) {
    std::size_t line = 1, i = 0;
    for (; i < text.size() && text[i] == repaired[i]; ++i)
      if (text[i] == '\n') ++line;
    throw Error(fmt::format("dsee score: {} {} line {} is not UTF-8 (byte {}); save the file as UTF-8", option, path,
                            line, i + 1));
  }
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

// Hypotheses and references grouped per item; checks the files line up.
std::vector<TextItem> read_items(const std::string& hyp_path, const std::vector<std::string>& ref_paths) {
  const auto hypotheses = read_lines(hyp_path, "--hyp");
  DSEE_CHECK(!hypotheses.empty(), "dsee score: --hyp {} is empty; give one hypothesis per line", hyp_path);
  std::vector<TextItem> items(hypotheses.size());
  for (std::size_t k = 0; k < items.size(); ++k) items[k].hypothesis = hypotheses[k];
  for (const auto& ref_path : ref_paths) {
    const auto references = read_lines(ref_path, "--refs");
    DSEE_CHECK(references.size() == hypotheses.size(),
               "dsee score: --refs {} has {} lines but --hyp {} has {}: line k of every references file is a "
               "reference of hypothesis k (an empty line where item k has none of this index)",
               ref_path, references.size(), hyp_path, hypotheses.size());
    for (std::size_t k = 0; k < items.size(); ++k)
      if (!split_whitespace(references[k]).empty()) items[k].references.push_back(references[k]);
  }
  for (std::size_t k = 0; k < items.size(); ++k)
    DSEE_CHECK(!items[k].references.empty(),
               "dsee score: item {} (line {} of --hyp {}) has no reference: line {} is empty in every --refs file "
               "({}); give it at least one reference or remove the item from every file",
               k + 1, k + 1, hyp_path, k + 1, fmt::join(ref_paths, ", "));
  return items;
}

std::vector<std::string> parse_metrics(const std::string& list, bool official) {
  std::vector<std::string> metrics;
  std::size_t start = 0;
  while (start <= list.size()) {
    auto end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    const auto name = list.substr(start, end - start);
    if (!name.empty()) {
      DSEE_CHECK(std::find(all_metrics.begin(), all_metrics.end(), name) != all_metrics.end(),
                 "dsee score: unknown metric '{}' in --metrics; the metrics are {}", name, fmt::join(all_metrics, ","));
      DSEE_CHECK(official || name != "meteor",
                 "dsee score: METEOR has no native scorer; add --official to run METEOR 1.5 (pycocoevalcap's jar, "
                 "needs Java) or leave meteor out of --metrics");
      if (std::find(metrics.begin(), metrics.end(), name) == metrics.end()) metrics.push_back(name);
    }
    start = end + 1;
  }
  DSEE_CHECK(!metrics.empty(), "dsee score: --metrics names no metric; give some of {}", fmt::join(all_metrics, ","));
  // Printed in one order whatever the order asked, so outputs line up in tables.
  std::vector<std::string> ordered;
  for (const auto& name : all_metrics)
    if (std::find(metrics.begin(), metrics.end(), name) != metrics.end()) ordered.push_back(name);
  return ordered;
}

// Runs argv, returns its standard output; its standard error passes through.
std::string run_capturing_stdout(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  DSEE_CHECK(pipe(pipe_fds) == 0, "dsee score --official: pipe failed: {}", std::strerror(errno));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  DSEE_CHECK(pid >= 0, "dsee score --official: fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    execv(args[0], args.data());
    std::fprintf(stderr, "dsee score --official: cannot execute %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(pipe_fds[1]);
  std::string out;
  char buffer[65536];
  while (true) {
    const auto got = read(pipe_fds[0], buffer, sizeof buffer);
    if (got > 0) {
      out.append(buffer, std::size_t(got));
    } else if (got == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    DSEE_CHECK(errno == EINTR, "dsee score --official: waiting for Python failed: {}", std::strerror(errno));
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  DSEE_CHECK(code == 0,
             "dsee score --official: {} exited with {} (its message is above); the reference scorers need the "
             "project's Python environment (launch/setup makes .venv; or set {} to a python with sacrebleu, nltk "
             "and pycocoevalcap) and Java for METEOR and the PTB tokenizer",
             fmt::join(argv, " "), code, env_vars::python);
  return out;
}

}  // namespace

Command score_command(CLI::App& app) {
  struct Options {
    std::string hyp, metrics;
    std::vector<std::string> refs;
    bool official = false, json = false, case_sensitive = false;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("score",
                                 "Score generated text against references: BLEU, NIST, METEOR, ROUGE-L, "
                                 "CIDEr, TER (docs/scoring.md)");
  sub->add_option("--hyp", options->hyp, "Hypotheses, one per line")->required();
  sub->add_option("--refs", options->refs,
                  "Reference files, one reference per line aligned with --hyp (an empty line: no reference of that "
                  "index for that item)")
      ->required();
  sub->add_option("--metrics", options->metrics,
                  "Comma-separated metrics (default: bleu,nist,rouge_l,cider,ter; with --official meteor too)");
  sub->add_flag("--official", options->official,
                "Run the reference implementations (sacrebleu, nltk, pycocoevalcap) in the Python environment");
  sub->add_flag("--case-sensitive", options->case_sensitive,
                "BLEU, NIST and TER on cased text (default: lower-cased, as the E2E scorer and sacrebleu's TER)");
  sub->add_flag("--json", options->json, "One JSON object: {\"scores\": {...}, \"tools\": {...}, ...}");
  return {sub, [options] {
            const auto metrics = parse_metrics(
                options->metrics.empty()
                    ? (options->official ? "bleu,nist,meteor,rouge_l,cider,ter" : "bleu,nist,rouge_l,cider,ter")
                    : options->metrics,
                options->official);
            const auto items = read_items(options->hyp, options->refs);
            std::size_t references = 0;
            for (const auto& item : items) references += item.references.size();

            std::map<std::string, double> scores;
            std::map<std::string, std::string> tools;
            if (options->official) {
              std::vector<std::string> argv = {
                  project_python(), project_script("score_official.py"),        "--hyp", options->hyp,
                  "--metrics",      fmt::format("{}", fmt::join(metrics, ",")), "--refs"};
              argv.insert(argv.end(), options->refs.begin(), options->refs.end());
              if (options->case_sensitive) argv.emplace_back("--case-sensitive");
              const auto out = run_capturing_stdout(argv);
              nlohmann::json result;
              try {
                result = nlohmann::json::parse(out);
                for (const auto& metric : metrics) {
                  scores[metric] = result.at("scores").at(metric).get<double>();
                  tools[metric] = result.at("tools").at(metric).get<std::string>();
                }
              } catch (const nlohmann::json::exception& e) {
                throw Error(
                    fmt::format("dsee score --official: launch/score_official.py printed no scores JSON ({}); "
                                "its output was: {}",
                                e.what(), out.substr(0, 2000)));
              }
            } else {
              NlgScoreOptions score_options;
              score_options.case_sensitive = options->case_sensitive;
              scores = score_corpus(items, metrics, score_options);
              const char* cased = options->case_sensitive ? "cased" : "lower-cased";
              for (const auto& metric : metrics) {
                if (metric == "bleu") tools[metric] = fmt::format("dsee native, sacrebleu BLEU, 13a, {}", cased);
                if (metric == "nist") tools[metric] = fmt::format("dsee native, nltk corpus_nist, 13a, {}", cased);
                if (metric == "rouge_l") tools[metric] = "dsee native, pycocoevalcap Rouge, 13a lower-cased";
                if (metric == "cider") tools[metric] = "dsee native, pycocoevalcap Cider (CIDEr-D), 13a lower-cased";
                if (metric == "ter") tools[metric] = fmt::format("dsee native, sacrebleu TER, {}", cased);
              }
            }

            if (options->json) {
              nlohmann::json out = {{"scores", scores},
                                    {"tools", tools},
                                    {"items", items.size()},
                                    {"references", references},
                                    {"official", options->official}};
              fmt::print("{}\n", out.dump(2));
            } else {
              for (const auto& metric : metrics)
                fmt::print("{:<8} {:.4f}  ({})\n", metric, scores.at(metric), tools.at(metric));
            }
            return 0;
          }};
}

}  // namespace dsee
