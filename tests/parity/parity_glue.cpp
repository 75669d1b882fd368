// GLUE reading and encoding (data/glue.h) against transformers' tokenizers
// and a Python reading of the same TSV files (test_glue.py).
//
//   glue-encode  reads "file" as GLUE task "task", encodes it with the
//                tokenizer of the model folder "tokenizer" at
//                "max_seq_length" (padded to it with "pad_to_max_length").
//                out: "input_ids", "attention_mask", "token_type_ids" (when
//                the tokenizer makes them), "labels" (int64, or float32 for
//                STS-B).
#include <ATen/ATen.h>

#include "data/glue.h"
#include "data/tokenizer.h"
#include "parity_request.h"

namespace dsee::parity {

nlohmann::json glue_encode(const Request& request) {
  const auto tokenizer = Tokenizer::load(request.get<std::string>("tokenizer"));
  const auto examples = glue_read(request.get<std::string>("task"), request.get<std::string>("file"));
  const auto t = dsee::glue_encode(tokenizer, examples, request.get<std::int64_t>("max_seq_length"),
                                   request.get<bool>("pad_to_max_length", false));
  NamedTensors out = {{"input_ids", t.input_ids}, {"attention_mask", t.attention_mask}, {"labels", t.labels}};
  if (t.token_type_ids.defined()) out.push_back({"token_type_ids", t.token_type_ids});
  request.write_out(out);
  return nlohmann::json::object();
}

}  // namespace dsee::parity
