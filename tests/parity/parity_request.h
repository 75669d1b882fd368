// The I/O convention of dsee_parity, the one C++ driver of the parity tests
// (tests/parity/test_*.py run it through tests/harness/parity.py):
//
//   dsee_parity MODE REQUEST.json
//
// REQUEST.json is one JSON object. "in" names a safetensors file holding the
// mode's input tensors, "out" the safetensors file the mode writes its output
// tensors to; every other key is a parameter of the mode. The driver prints
// exactly one line on stdout, a JSON object (the mode's result, {} when it
// has none), and exits 0; a request dsee refuses (a missing key, a wrong
// value, a dsee::Error) prints "dsee_parity: error: ..." on stderr and exits
// 1; an unknown mode or no request exits 2. Product files a mode writes or
// reads (an Ω file, a checkpoint, masks.h5, a model folder) are named by
// parameters.
//
// Test code, linked into no library: each mode is a function in one of the
// parity_*.cpp files beside this one, registered in dsee_parity.cpp.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>

#include "base/error.h"
#include "base/named_tensor.h"
#include "core/io/safetensors.h"

namespace dsee {
class PretrainedModel;
}  // namespace dsee

namespace dsee::parity {

class Request {
 public:
  Request(std::string mode, nlohmann::json params) : mode_(std::move(mode)), params_(std::move(params)) {}

  const std::string& mode() const { return mode_; }
  bool has(const std::string& key) const { return params_.contains(key); }
  // A parameter the mode needs: dsee::Error naming the mode and the key when absent or of another type.
  template <class T>
  T get(const std::string& key) const {
    DSEE_CHECK(has(key), "{}: the request has no \"{}\"", mode_, key);
    const nlohmann::json& value = params_.at(key);
    try {
      return value.get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: \"{}\" is {}: {}", mode_, key, value.dump(), e.what()));
    }
  }
  template <class T>
  T get(const std::string& key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }

  // The "in" file, opened once.
  const SafetensorsFile& in() const {
    if (!in_) in_ = SafetensorsFile::open(get<std::string>("in"));
    return *in_;
  }
  // Writes `tensors` (and `metadata`) to the "out" file.
  void write_out(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {}) const {
    safetensors_save(get<std::string>("out"), tensors, metadata);
  }

 private:
  std::string mode_;
  nlohmann::json params_;
  mutable std::shared_ptr<SafetensorsFile> in_;
};

// A mode: reads what it needs from the request, returns the stdout object.
using Mode = nlohmann::json (*)(const Request&);

// parity_earlybert.cpp: EarlyBERT's coefficients against transformers with hooks
nlohmann::json earlybert_step(const Request&);

// parity_lora.cpp: LoRA against PEFT
nlohmann::json lora_step(const Request&);
nlohmann::json lora_train(const Request&);
nlohmann::json lora_generate(const Request&);  // parity_generate.cpp's generation_run on the LoRA model
// parity_training.cpp: the trainer's pieces against torch, transformers, scikit-learn, scipy
nlohmann::json optimize(const Request&);
nlohmann::json loss(const Request&);
nlohmann::json metrics(const Request&);
nlohmann::json decay(const Request&);
// parity_omega.cpp: Ω against the Python GreBsmo transcription
nlohmann::json omega(const Request&);
// parity_formats.cpp: files against the Python libraries that read them
nlohmann::json checkpoint(const Request&);
nlohmann::json safetensors_describe(const Request&);
nlohmann::json safetensors_copy(const Request&);
nlohmann::json prune_plan_write(const Request&);
nlohmann::json prune_plan_read(const Request&);
nlohmann::json model_resave(const Request&);
// parity_generate.cpp: greedy / beam search on `model` with the request's options and prompts
nlohmann::json generation_run(const Request& request, PretrainedModel& model);
// parity_glue.cpp: GLUE reading and encoding against transformers
nlohmann::json glue_encode(const Request&);
// parity_nlg.cpp: E2E / WebNLG / DART reading and GPT-2 encoding against Python readings and transformers
nlohmann::json nlg_read(const Request&);
nlohmann::json nlg_encode(const Request&);

}  // namespace dsee::parity
