// libFuzzer target for the safetensors header parser (see tests/fuzz/run).
// The input is a whole file: 8-byte length, header, data. Every input must
// either parse into entries that are in bounds, sized and disjoint, or throw
// dsee::Error; anything else (a crash, a sanitizer report, an abort from a
// broken invariant below) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "base/error.h"
#include "core/io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const dsee::SafetensorsHeader header = dsee::safetensors_parse_file(bytes, size, "fuzz.safetensors");
    const std::uint64_t data_size = size - header.data_start;
    std::uint64_t previous_end = 0;
    for (const auto& entry : header.entries) {
      const auto& dtype = dsee::safetensors_dtype(entry.dtype, entry.name);
      std::uint64_t numel = 1;
      for (const std::int64_t dim : entry.shape) {
        if (dim < 0) std::abort();
        numel *= static_cast<std::uint64_t>(dim);
      }
      if (entry.begin > entry.end || entry.end > data_size) std::abort();
      if (entry.end - entry.begin != numel * dtype.size) std::abort();
      if (entry.begin != entry.end) {
        if (entry.begin < previous_end) std::abort();
        previous_end = entry.end;
      }
    }
  } catch (const dsee::Error&) {
    // Rejected input, as it should be.
  }
  return 0;
}
