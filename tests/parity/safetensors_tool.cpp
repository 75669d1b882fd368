// safetensors_tool: dsee's safetensors reader and writer, driven from
// tests/parity/test_safetensors_python.py to cross-check them against the
// Python safetensors library.
//
//   safetensors_tool describe IN     one JSON object on stdout:
//                                    {name: {dtype, shape, fnv1a}}, where
//                                    fnv1a is the 64-bit FNV-1a hash of the
//                                    tensor's bytes as dsee read them
//   safetensors_tool copy IN OUT     reads IN, writes every tensor and the
//                                    metadata to OUT with safetensors_save
//
// IN is a .safetensors file, a checkpoint index or a model folder. A
// dsee::Error goes to stderr with exit status 1.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "base/error.h"
#include "core/io/safetensors.h"

namespace {

std::uint64_t fnv1a(const at::Tensor& tensor) {
  const at::Tensor bytes = tensor.contiguous();
  const auto* data = static_cast<const unsigned char*>(bytes.const_data_ptr());
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < bytes.nbytes(); ++i) hash = (hash ^ data[i]) * 0x100000001b3ull;
  return hash;
}

void describe(const std::string& in) {
  const auto checkpoint = dsee::SafetensorsCheckpoint::open(in);
  nlohmann::json out = nlohmann::json::object();
  for (const auto& name : checkpoint.names()) {
    const at::Tensor tensor = checkpoint.tensor(name);
    const auto& dtype = dsee::safetensors_dtype(tensor.scalar_type(), name);
    out[name] = {{"dtype", dtype.name}, {"shape", tensor.sizes().vec()}, {"fnv1a", std::to_string(fnv1a(tensor))}};
  }
  std::printf("%s\n", out.dump().c_str());
}

void copy(const std::string& in, const std::string& out) {
  const auto file = dsee::SafetensorsFile::open(in);
  dsee::NamedTensors tensors;
  for (const auto& entry : file->entries()) tensors.emplace_back(entry.name, file->tensor(entry.name));
  dsee::safetensors_save(out, tensors, file->metadata());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((mode == "describe" && argc == 3) || (mode == "copy" && argc == 4))) {
    std::fprintf(stderr, "usage: safetensors_tool describe IN | copy IN OUT\n");
    return 2;
  }
  try {
    if (mode == "describe") describe(argv[2]);
    if (mode == "copy") copy(argv[2], argv[3]);
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "safetensors_tool: %s\n", e.what());
    return 1;
  }
  return 0;
}
