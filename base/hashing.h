// Hashes dsee computes over bytes: dsee-hash64 (fast, for identities such as
// the config and the pretrained weights recorded in checkpoints) and SHA-256
// (checksum sidecars in `sha256sum` format: checkpoints, Ω files, masks.h5).
// Neither is used for security.
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

// Checksum sidecars: "<file>.sum" holds "<sha256 hex>  <file name>\n"
// (`sha256sum -c` reads it). Files dsee writes and reads back (checkpoints,
// Ω files, masks.h5) carry one, so a damaged file is refused with a clear
// message before HDF5, which can crash on malformed input, parses it
// (Note [Checksum sidecars] in hashing.cpp).
std::filesystem::path checksum_sidecar(const std::filesystem::path& file);
// Writes the sidecar of `file` as the file is now (atomically, base/files).
void checksum_write(const std::filesystem::path& file);
// Removes the sidecar of `file` if there is one (before rewriting the file,
// so that a crash between the two writes leaves no stale sidecar).
void checksum_remove(const std::filesystem::path& file);
enum class ChecksumSidecar { required, if_present };
// Verifies `file` against its sidecar; dsee::Error starting with `source`
// (e.g. "Ω file '…'") on a mismatch, a malformed sidecar, or, when
// `required`, a missing one. With `if_present` a file without a sidecar (one
// another tool wrote, or copied without it) passes unchecked.
void checksum_verify(const std::filesystem::path& file, const std::string& source, ChecksumSidecar sidecar);

}  // namespace dsee
