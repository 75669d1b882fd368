// dsee_parity: the C++ side of the parity tests, one binary with one mode per
// thing compared (the I/O convention is in parity_request.h). Not a user
// command: a separate binary in tests/ so that the dsee command line and its
// build stay free of test drivers; bench/ has its own (bench_omega).
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "parity_request.h"

namespace {

const std::map<std::string, dsee::parity::Mode>& modes() {
  using namespace dsee::parity;
  static const std::map<std::string, Mode> table = {
      {"lora-step", lora_step},
      {"earlybert-step", earlybert_step},
      {"lora-train", lora_train},
      {"lora-generate", lora_generate},
      {"optimize", optimize},
      {"loss", loss},
      {"metrics", metrics},
      {"decay", decay},
      {"omega", omega},
      {"checkpoint", checkpoint},
      {"safetensors-describe", safetensors_describe},
      {"safetensors-copy", safetensors_copy},
      {"prune-plan-write", prune_plan_write},
      {"prune-plan-read", prune_plan_read},
      {"model-resave", model_resave},
      {"glue-encode", glue_encode},
      {"nlg-read", nlg_read},
      {"nlg-encode", nlg_encode},
  };
  return table;
}

int usage() {
  std::string names;
  for (const auto& [name, mode] : modes()) names += (names.empty() ? "" : ", ") + name;
  std::fprintf(stderr, "usage: dsee_parity MODE REQUEST.json\n  modes: %s\n", names.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || !modes().contains(argv[1])) return usage();
  try {
    std::ifstream file(argv[2]);
    DSEE_CHECK(file, "cannot open the request '{}'", argv[2]);
    nlohmann::json params;
    try {
      params = nlohmann::json::parse(file);
    } catch (const nlohmann::json::exception& e) {
      throw dsee::Error(fmt::format("'{}' is not JSON: {}", argv[2], e.what()));
    }
    DSEE_CHECK(params.is_object(), "'{}' holds {}, not a JSON object", argv[2], params.dump());
    const nlohmann::json result = modes().at(argv[1])(dsee::parity::Request(argv[1], std::move(params)));
    std::printf("%s\n", result.dump().c_str());
    return 0;
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "dsee_parity: error: %s\n", e.what());
    return 1;
  }
}
