// Hashes dsee computes over bytes: dsee-hash64 (fast, for identities such as
// the config and the pretrained weights recorded in checkpoints) and SHA-256
// (checkpoint sidecars in `sha256sum` format). Neither is used for security.
// (The ranks' fingerprints are FNV-1a: distributed/fingerprint.h.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace dsee {

// dsee-hash64 (Note [dsee-hash64] in hashing.cpp), streaming: update() any
// number of times, digest() equals hash64 of the concatenation.
class Hash64 {
 public:
  void update(const void* data, std::size_t size);
  std::uint64_t digest() const;

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ULL;
  std::uint64_t pending_ = 0;
  unsigned fill_ = 0;
  std::uint64_t total_ = 0;
};
std::uint64_t hash64(const void* data, std::size_t size);

// SHA-256 (FIPS 180-4) as 64 lower-case hex digits, of bytes or of a file
// (dsee::Error naming the file when it cannot be read).
std::string sha256_hex(const void* data, std::size_t size);
std::string sha256_file(const std::filesystem::path& path);

}  // namespace dsee
