// safetensors: the Hugging Face checkpoint format, read and written by dsee.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header
// ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
// ..., optional "__metadata__": {str: str}}), then the raw little-endian data;
// offsets are relative to the end of the header.
//
// Reading maps the file and returns zero-copy CPU tensors whose storage keeps
// the mapping alive (a tensor outlives the SafetensorsFile it came from).
// The mapping is private and copy-on-write: writing to a tensor never changes
// the file, but tensors taken from one file share memory. A tensor whose
// offset is not a multiple of its element size (never written by a
// conforming writer) comes back as an aligned copy instead.
// Every field is validated before it is trusted (header length against the
// file size, offsets in bounds and non-overlapping, byte size = numel × dtype
// size, unique names, known dtypes); each failure is a dsee::Error naming the
// file and the tensor (Note [What the header may say] in
// safetensors_header.cpp lists where dsee is stricter or more lenient than
// the reference reader). Supported dtypes: F32, F16, BF16, F64, I64, I32,
// I16, I8, U8, BOOL. As with any mapping, a file truncated by another process
// while it is mapped faults (SIGBUS) on access; replace files by rename, as
// safetensors_save does, never in place.
//
// Writing lays tensors out as the reference writer does (Note [Writer order]
// in safetensors.cpp): the same tensors give a byte-identical file.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/named_tensor.h"
#include "core/io/safetensors_header.h"

namespace dsee {

// SafetensorsEntry, safetensors_parse_header and the dtype table live in
// core/io/safetensors_header.h (torch-free, for the fuzz target).

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws dsee::Error naming the file.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The whole file as mapped; tensors point into it.
  std::span<const std::byte> mapped_bytes() const;
  bool contains(const std::string& name) const;
  // The header entry for `name`; throws dsee::Error naming file and tensor if absent.
  const SafetensorsEntry& entry(const std::string& name) const;
  // Zero-copy tensor over the mapping; throws dsee::Error naming file and tensor if absent.
  at::Tensor tensor(const std::string& name) const;

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

 private:
  SafetensorsFile() = default;
  struct Mapping;
  std::filesystem::path path_;
  std::shared_ptr<Mapping> mapping_;
  std::uint64_t data_start_ = 0;  // file offset of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory or file: `model.safetensors`, or the
// shards listed in `model.safetensors.index.json` ("weight_map": name -> file).
// Names map to the shard that holds them; a name listed in the index but
// missing from its shard (or in two shards) is an error naming both files.
class SafetensorsCheckpoint {
 public:
  // `path` is a directory (model.safetensors or its index) or a .safetensors file.
  static SafetensorsCheckpoint open(const std::filesystem::path& path);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;
  std::string describe() const;  // the file or the index, for error messages

 private:
  std::filesystem::path source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<std::size_t, std::size_t>> where_;  // name -> (file, entry)
};

// Writes `tensors` (contiguous copies are made as needed; CPU or CUDA) with
// `metadata` to `path` atomically: a temporary file in the same folder,
// renamed over `path` once complete, so a crash never leaves a torn file.
void safetensors_save(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace dsee
