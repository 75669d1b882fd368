// safetensors header parsing, kept free of LibTorch beyond at::ScalarType so
// the libFuzzer target (tests/fuzz/) builds it with clang alone. Most code
// includes core/io/safetensors.h, which includes this file.
#pragma once

#include <c10/core/ScalarType.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace dsee {

struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

// A dtype dsee reads and writes: its safetensors name ("F32"), its size in
// bytes, and its rank in the order the reference writer lays tensors out
// (see Note [Writer order] in safetensors.cpp).
struct SafetensorsDtype {
  std::string_view name;
  at::ScalarType type;
  std::size_t size;
  int writer_rank;
};

// The table entry for `type`; throws dsee::Error naming `what` (a file and a
// tensor) when safetensors or dsee cannot store that dtype.
const SafetensorsDtype& safetensors_dtype(at::ScalarType type, const std::string& what);

// Parses and validates a header. `header_json` is the N header bytes,
// `data_size` the bytes that follow it; `source` names the file in errors.
// Entries come back sorted by begin offset. The fuzz target drives this.
std::vector<SafetensorsEntry> safetensors_parse_header(std::string_view header_json, std::uint64_t data_size,
                                                       const std::string& source,
                                                       std::map<std::string, std::string>* metadata = nullptr);

// A whole file in memory: the 8-byte length, the header, the data.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
  std::uint64_t data_start = 0;  // file offset of the data section: 8 + N
};

// Checks the 8-byte header length against the size of `file_bytes` (which
// may be just a prefix of the file, as long as it holds the header:
// `file_size` is the size of the whole file), then parses the header.
SafetensorsHeader safetensors_parse_file(std::string_view file_bytes, std::uint64_t file_size,
                                         const std::string& source);

// Parses JSON `text` (from `source`, for errors) and rejects what
// nlohmann::json would otherwise accept quietly: a key repeated in one object
// (it keeps the last) and nesting deeper than `max_depth` containers.
nlohmann::json json_parse_unique_keys(std::string_view text, const std::string& source, int max_depth);

// The largest header dsee reads, as the reference reader: 100 MB.
inline constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

}  // namespace dsee
