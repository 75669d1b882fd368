// Reading (memory-mapped, zero-copy), sharded checkpoints and atomic writing
// of safetensors files. The header is parsed and validated in
// safetensors_header.cpp before anything here turns an offset into a pointer.
#include "core/io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "base/error.h"
#include "base/files.h"

namespace dsee {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- one file

struct SafetensorsFile::Mapping {
  std::byte* base = nullptr;
  std::size_t size = 0;
  ~Mapping() {
    if (base) munmap(base, size);
  }
};

namespace {

// Closes a file descriptor on every path out.
struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) close(fd);
  }
};

std::string system_error_text() { return std::strerror(errno); }

}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
  const std::string source = path.string();
  FileDescriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  DSEE_CHECK(file.fd >= 0, "{}: cannot open: {}", source, system_error_text());
  struct stat info {};
  DSEE_CHECK(fstat(file.fd, &info) == 0, "{}: cannot stat: {}", source, system_error_text());
  DSEE_CHECK(S_ISREG(info.st_mode), "{}: not a regular file", source);
  const auto file_size = static_cast<std::uint64_t>(info.st_size);
  DSEE_CHECK(file_size >= 8,
             "{}: the file is {} bytes, too short for the 8-byte header length: it is truncated or not a "
             "safetensors file",
             source, file_size);

  // MAP_PRIVATE with PROT_WRITE: tensors may be written in place (an
  // optimiser step on a loaded weight) without a SIGSEGV and without the
  // file changing; untouched pages stay shared with the page cache.
  auto mapping = std::make_shared<Mapping>();
  void* base = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd, 0);
  DSEE_CHECK(base != MAP_FAILED, "{}: cannot map {} bytes: {}", source, file_size, system_error_text());
  mapping->base = static_cast<std::byte*>(base);
  mapping->size = file_size;

  SafetensorsHeader header =
      safetensors_parse_file({reinterpret_cast<const char*>(mapping->base), mapping->size}, file_size, source);
  std::shared_ptr<SafetensorsFile> opened(new SafetensorsFile());
  opened->path_ = path;
  opened->mapping_ = std::move(mapping);
  opened->entries_ = std::move(header.entries);
  opened->metadata_ = std::move(header.metadata);
  opened->data_start_ = header.data_start;
  for (std::size_t i = 0; i < opened->entries_.size(); ++i) opened->index_.emplace(opened->entries_[i].name, i);
  return opened;
}

SafetensorsFile::~SafetensorsFile() = default;

std::span<const std::byte> SafetensorsFile::mapped_bytes() const { return {mapping_->base, mapping_->size}; }

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = index_.find(name);
  DSEE_CHECK(it != index_.end(), "{}: no tensor \"{}\" in this file ({} tensors)", path_.string(), name,
             entries_.size());
  return entries_[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& found = entry(name);
  const auto& dtype = safetensors_dtype(found.dtype, path_.string());
  std::byte* data = mapping_->base + data_start_ + found.begin;
  const auto options = at::TensorOptions().dtype(found.dtype).device(at::kCPU);
  if (found.dtype == at::kBool) {
    // Any byte but 0 and 1 in a bool is undefined behaviour in LibTorch.
    const auto* bytes = reinterpret_cast<const unsigned char*>(data);
    const auto* bad = std::find_if(bytes, bytes + (found.end - found.begin), [](unsigned char b) { return b > 1; });
    DSEE_CHECK(bad == bytes + (found.end - found.begin),
               "{}: tensor \"{}\": BOOL byte {} is {}, not 0 or 1: the data is corrupt", path_.string(), name,
               bad - bytes, static_cast<int>(*bad));
  }
  if (reinterpret_cast<std::uintptr_t>(data) % dtype.size != 0) {
    return at::from_blob(data, found.shape, options).clone();  // see the header: misaligned, so copied
  }
  return at::from_blob(
      data, found.shape, [mapping = mapping_](void*) {}, options);
}

// ---------------------------------------------------------------- checkpoints

namespace {

constexpr const char* kSingleFileName = "model.safetensors";
constexpr const char* kIndexFileName = "model.safetensors.index.json";

std::map<std::string, std::string> read_weight_map(const fs::path& index_path) {
  DSEE_CHECK(fs::is_regular_file(index_path), "{}: cannot open the checkpoint index", index_path.string());
  const auto index = json_parse_unique_keys(file_read_text(index_path), index_path.string(), 4);
  DSEE_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
             "{}: a checkpoint index needs \"weight_map\": {{tensor name: shard file}}", index_path.string());
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    DSEE_CHECK(shard.is_string(), "{}: weight_map \"{}\" is a JSON {}, not a shard file name", index_path.string(),
               name, shard.type_name());
    const fs::path shard_path = shard.get<std::string>();
    // Shards sit next to the index (the Hugging Face layout); a path that
    // climbs out of the folder is not a shard name.
    DSEE_CHECK(shard_path.is_relative() && !shard_path.empty() &&
                   std::none_of(shard_path.begin(), shard_path.end(), [](const fs::path& p) { return p == ".."; }),
               "{}: weight_map \"{}\" names shard \"{}\", not a file name in the index's folder", index_path.string(),
               name, shard_path.string());
    weight_map.emplace(name, shard.get<std::string>());
  }
  return weight_map;
}

}  // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::open(const fs::path& path) {
  SafetensorsCheckpoint checkpoint;
  fs::path index_path;
  if (fs::is_directory(path)) {
    // As transformers: the single file first, then the index.
    if (fs::exists(path / kSingleFileName)) {
      checkpoint.source_ = path / kSingleFileName;
    } else {
      DSEE_CHECK(fs::exists(path / kIndexFileName), "{}: neither {} nor {} is in this folder", path.string(),
                 kSingleFileName, kIndexFileName);
      index_path = path / kIndexFileName;
    }
  } else if (path.string().ends_with(".index.json")) {
    index_path = path;
  } else {
    checkpoint.source_ = path;
  }

  if (index_path.empty()) {
    checkpoint.files_.push_back(SafetensorsFile::open(checkpoint.source_));
    const auto& entries = checkpoint.files_.front()->entries();
    for (std::size_t e = 0; e < entries.size(); ++e) checkpoint.where_.emplace(entries[e].name, std::pair{0, e});
    return checkpoint;
  }

  checkpoint.source_ = index_path;
  const auto weight_map = read_weight_map(index_path);
  std::map<std::string, std::size_t> shard_numbers;  // shard file name -> files_ position
  for (const auto& [name, shard] : weight_map) {
    if (shard_numbers.count(shard)) continue;
    const fs::path shard_path = index_path.parent_path() / shard;
    DSEE_CHECK(fs::exists(shard_path), "{}: shard {} (holding \"{}\") is missing: download it next to the index",
               index_path.string(), shard_path.string(), name);
    shard_numbers.emplace(shard, checkpoint.files_.size());
    checkpoint.files_.push_back(SafetensorsFile::open(shard_path));
  }
  // Every tensor of every shard is listed, in its own shard, once.
  for (std::size_t f = 0; f < checkpoint.files_.size(); ++f) {
    const auto& file = *checkpoint.files_[f];
    for (std::size_t e = 0; e < file.entries().size(); ++e) {
      const std::string& name = file.entries()[e].name;
      const auto [it, fresh] = checkpoint.where_.emplace(name, std::pair{f, e});
      DSEE_CHECK(fresh, "{}: tensor \"{}\" is in both {} and {}", index_path.string(), name,
                 checkpoint.files_[it->second.first]->path().string(), file.path().string());
      const auto listed = weight_map.find(name);
      DSEE_CHECK(listed != weight_map.end(), "{}: tensor \"{}\" is in {} but not in the index's weight_map",
                 index_path.string(), name, file.path().string());
      DSEE_CHECK(shard_numbers.at(listed->second) == f, "{}: tensor \"{}\" is listed in shard {} but found in {}",
                 index_path.string(), name, listed->second, file.path().string());
    }
  }
  for (const auto& [name, shard] : weight_map) {
    DSEE_CHECK(checkpoint.where_.count(name), "{}: tensor \"{}\" is listed in the index but missing from {}",
               index_path.string(), name, (index_path.parent_path() / shard).string());
  }
  return checkpoint;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> names;
  names.reserve(where_.size());
  for (const auto& [name, place] : where_) names.push_back(name);
  return names;
}

bool SafetensorsCheckpoint::contains(const std::string& name) const { return where_.count(name) > 0; }

const SafetensorsEntry& SafetensorsCheckpoint::entry(const std::string& name) const {
  const auto it = where_.find(name);
  DSEE_CHECK(it != where_.end(), "{}: no tensor \"{}\" in this checkpoint ({} tensors)", describe(), name,
             where_.size());
  return files_[it->second.first]->entries()[it->second.second];
}

at::Tensor SafetensorsCheckpoint::tensor(const std::string& name) const {
  const auto it = where_.find(name);
  DSEE_CHECK(it != where_.end(), "{}: no tensor \"{}\" in this checkpoint ({} tensors)", describe(), name,
             where_.size());
  return files_[it->second.first]->tensor(name);
}

std::string SafetensorsCheckpoint::describe() const { return source_.string(); }

// ---------------------------------------------------------------- writing

namespace {

// A JSON string literal, escaped as the reference writer (serde_json) does:
// quote, backslash and control characters; UTF-8 is kept as is.
std::string json_string(const std::string& text, const std::string& what) {
  try {
    return nlohmann::json(text).dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: \"{}\" is not valid UTF-8 ({})", what, text, e.what()));
  }
}

}  // namespace

// Note [Writer order]
// The reference writer (safetensors 0.8.0) lays tensors out by dtype, in
// descending order of its dtype enum (I64, F64, F32, I32, BF16, F16, I16, I8,
// U8, BOOL), then by name; the header lists them in that order, after
// "__metadata__", as compact JSON padded with spaces to a multiple of 8
// bytes. Doing the same makes our files byte-identical to Python's for the
// same tensors (tests/parity/test_safetensors_python.py checks it) and keeps
// every tensor aligned to its element size, since sizes only shrink along the
// way and the data starts at a multiple of 8.
void safetensors_save(const fs::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string target = path.string();
  struct Item {
    std::string name;
    const SafetensorsDtype* dtype;
    at::Tensor data;  // contiguous, on the CPU
  };
  std::vector<Item> items;
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    const std::string what = fmt::format("{}: tensor \"{}\"", target, name);
    DSEE_CHECK(name != "__metadata__", "{}: \"__metadata__\" is reserved for the metadata; rename the tensor", what);
    DSEE_CHECK(seen.insert(name).second, "{}: the name is given twice; tensor names must be unique", what);
    DSEE_CHECK(tensor.defined(), "{}: the tensor is undefined", what);
    items.push_back({name, &safetensors_dtype(tensor.scalar_type(), what), tensor.detach().to(at::kCPU).contiguous()});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.dtype->writer_rank != b.dtype->writer_rank) return a.dtype->writer_rank > b.dtype->writer_rank;
    return a.name < b.name;
  });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [key, value] : metadata) {
      if (header.back() != '{') header += ',';
      header += json_string(key, target + ": metadata key") + ':' + json_string(value, target + ": metadata value");
    }
    header += "},";
  }
  std::uint64_t offset = 0;
  for (const auto& item : items) {
    const std::uint64_t size = item.data.nbytes();
    header += fmt::format("{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}},",
                          json_string(item.name, target + ": tensor name"), item.dtype->name,
                          fmt::join(item.data.sizes(), ","), offset, offset + size);
    offset += size;
  }
  if (header.back() == ',') header.pop_back();
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');

  file_write_atomic(path, [&](FileWriter& out) {
    const std::uint64_t header_size = header.size();
    out.write(&header_size, sizeof header_size);
    out.write(header.data(), header.size());
    for (const auto& item : items) out.write(item.data.data_ptr(), item.data.nbytes());
  });
}

}  // namespace dsee
