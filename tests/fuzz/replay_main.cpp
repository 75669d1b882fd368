// fuzz_corpus_replay TARGET FOLDER: feeds every file of FOLDER (a fuzz
// corpus, tests/fuzz/corpus/TARGET) to the fuzz target TARGET, in name
// order, as libFuzzer would (fuzz_target.h). Exit 0 when every file passed;
// a target that finds a bug aborts, and the last file named is the culprit.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_target.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s TARGET CORPUS_FOLDER\n", argv[0]);
    return 2;
  }
  const auto& targets = dsee_fuzz::targets();
  const auto target = targets.find(argv[1]);
  if (target == targets.end()) {
    std::fprintf(stderr, "fuzz_corpus_replay: no target '%s'; targets:", argv[1]);
    for (const auto& [name, function] : targets) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(argv[2]))
    if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "fuzz_corpus_replay: '%s' holds no files\n", argv[2]);
    return 1;
  }
  for (const auto& file : files) {
    std::fprintf(stderr, "%s\n", file.filename().c_str());
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    target->second(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("%s: %zu corpus files passed\n", argv[1], files.size());
  return 0;
}
