// Test driver for tests/parity/test_glue.py: reads one GLUE file with
// data/glue.h, encodes it with a model folder's tokenizer, prints the tensors
// as one JSON object (lists of rows) so Python compares them with
// transformers' tokenizers and its own reading of the file.
//
// usage: glue_driver TASK FILE TOKENIZER_DIR MAX_SEQ_LENGTH [--pad-to-max-length]
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>

#include "base/error.h"
#include "data/glue.h"
#include "data/tokenizer.h"

namespace {

nlohmann::json rows(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  const auto c = t.contiguous();
  for (std::int64_t i = 0; i < c.size(0); ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (std::int64_t j = 0; j < c.size(1); ++j) row.push_back(c[i][j].item<std::int64_t>());
    out.push_back(row);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: glue_driver TASK FILE TOKENIZER_DIR MAX_SEQ_LENGTH [--pad-to-max-length]\n");
    return 2;
  }
  try {
    const auto tokenizer = dsee::Tokenizer::load(argv[3]);
    const auto examples = dsee::glue_read(argv[1], argv[2]);
    const bool pad_to_max = argc > 5 && std::string(argv[5]) == "--pad-to-max-length";
    const auto t = dsee::glue_encode(tokenizer, examples, std::stoll(argv[4]), pad_to_max);
    nlohmann::json out;
    out["input_ids"] = rows(t.input_ids);
    out["attention_mask"] = rows(t.attention_mask);
    if (t.token_type_ids.defined()) out["token_type_ids"] = rows(t.token_type_ids);
    nlohmann::json labels = nlohmann::json::array();
    for (std::int64_t i = 0; i < t.labels.size(0); ++i)
      labels.push_back(t.labels.scalar_type() == at::kFloat ? nlohmann::json(t.labels[i].item<float>())
                                                            : nlohmann::json(t.labels[i].item<std::int64_t>()));
    out["labels"] = labels;
    out["labels_dtype"] = t.labels.scalar_type() == at::kFloat ? "float32" : "int64";
    std::cout << out.dump() << "\n";
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
