// Hashes (contract: hashing.h).
//
// Note [dsee-hash64]
// ~~~~~~~~~~~~~~~~~~
// A 64-bit FNV-1a variant over 8-byte words, for speed (one multiply per 8
// bytes; GB/s on one core), not for security:
//   h = 0xcbf29ce484222325
//   for each little-endian 64-bit word w of the input (the last one padded
//   with zero bytes): h = (h XOR w) · 0x100000001b3   (mod 2^64)
//   h = (h XOR total_byte_count) · 0x100000001b3
//   then the splitmix64 finalizer: h ^= h >> 30; h *= 0xbf58476d1ce4e5b9;
//   h ^= h >> 27; h *= 0x94d049bb133111eb; h ^= h >> 31.
// Streaming input is hashed as if concatenated.
#include "base/hashing.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "base/files.h"

namespace dsee {
namespace {

constexpr std::uint64_t kPrime = 0x100000001b3ULL;

// SHA-256 (FIPS 180-4). The constants are the fractional parts of the square
// roots (initial hash) and cube roots (round constants) of the first primes,
// computed here in long double (64-bit mantissa: ample for 32 bits of fraction).
class Sha256 {
 public:
  Sha256() {
    static const Constants constants;
    k_ = constants.k.data();
    state_ = constants.initial;
  }
  void update(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    length_ += size;
    while (size > 0) {
      const std::size_t take = std::min(size, 64 - fill_);
      std::memcpy(block_.data() + fill_, bytes, take);
      fill_ += take;
      bytes += take;
      size -= take;
      if (fill_ == 64) {
        compress(block_.data());
        fill_ = 0;
      }
    }
  }
  std::string hex() {
    const std::uint64_t bits = length_ * 8;
    const std::uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (fill_ != 56) update(&zero, 1);
    std::array<std::uint8_t, 8> length{};
    for (int i = 0; i < 8; ++i) length[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(bits >> (56 - 8 * i));
    update(length.data(), 8);
    std::string out;
    for (std::uint32_t word : state_) out += fmt::format("{:08x}", word);
    return out;
  }

 private:
  struct Constants {
    std::array<std::uint32_t, 64> k{};
    std::array<std::uint32_t, 8> initial{};
    Constants() {
      int found = 0;
      for (int n = 2; found < 64; ++n) {
        bool prime = true;
        for (int d = 2; d * d <= n; ++d) prime = prime && n % d != 0;
        if (!prime) continue;
        const auto fraction = [](long double x) {
          return static_cast<std::uint32_t>(std::floor((x - std::floor(x)) * 4294967296.0L));
        };
        if (found < 8) initial[static_cast<std::size_t>(found)] = fraction(std::sqrt(static_cast<long double>(n)));
        k[static_cast<std::size_t>(found)] = fraction(std::cbrt(static_cast<long double>(n)));
        ++found;
      }
    }
  };
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress(const std::uint8_t* block) {
    std::array<std::uint32_t, 64> w{};
    for (std::size_t t = 0; t < 16; ++t)
      w[t] = std::uint32_t{block[4 * t]} << 24 | std::uint32_t{block[4 * t + 1]} << 16 |
             std::uint32_t{block[4 * t + 2]} << 8 | std::uint32_t{block[4 * t + 3]};
    for (std::size_t t = 16; t < 64; ++t) {
      const std::uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      const std::uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, h] = state_;
    for (std::size_t t = 0; t < 64; ++t) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k_[t] + w[t];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    const std::array<std::uint32_t, 8> add = {a, b, c, d, e, f, g, h};
    for (std::size_t i = 0; i < 8; ++i) state_[i] += add[i];
  }
  const std::uint32_t* k_ = nullptr;
  std::array<std::uint32_t, 8> state_{};
  std::array<std::uint8_t, 64> block_{};
  std::size_t fill_ = 0;
  std::uint64_t length_ = 0;
};

}  // namespace

void Hash64::update(const void* data, std::size_t size) {
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  total_ += size;
  while (size > 0 && fill_ > 0) {
    pending_ |= std::uint64_t{*bytes++} << (8 * fill_++);
    --size;
    if (fill_ == 8) {
      h_ = (h_ ^ pending_) * kPrime;
      pending_ = 0;
      fill_ = 0;
    }
  }
  while (size >= 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, bytes, 8);  // little-endian hosts (x86-64, aarch64)
    h_ = (h_ ^ word) * kPrime;
    bytes += 8;
    size -= 8;
  }
  while (size > 0) {
    pending_ |= std::uint64_t{*bytes++} << (8 * fill_++);
    --size;
  }
}

std::uint64_t Hash64::digest() const {
  std::uint64_t h = h_;
  if (fill_ > 0) h = (h ^ pending_) * kPrime;
  h = (h ^ total_) * kPrime;
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

std::uint64_t hash64(const void* data, std::size_t size) {
  Hash64 hash;
  hash.update(data, size);
  return hash.digest();
}

std::string sha256_hex(const void* data, std::size_t size) {
  Sha256 sha;
  sha.update(data, size);
  return sha.hex();
}

std::string sha256_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  DSEE_CHECK(fd >= 0, "cannot open '{}': {}", path.string(), std::strerror(errno));
  Sha256 sha;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0) {
      const std::string reason = std::strerror(errno);
      ::close(fd);
      DSEE_CHECK(false, "cannot read '{}': {}", path.string(), reason);
    }
    if (got == 0) break;
    sha.update(buffer.data(), static_cast<std::size_t>(got));
  }
  ::close(fd);
  return sha.hex();
}

// Note [Checksum sidecars]
// ~~~~~~~~~~~~~~~~~~~~~~~~~
// HDF5 1.10 (Debian's library) parses a file before dsee sees any of it, and
// fuzzing showed it can crash on a malformed file (docs/testing.md,
// "Fuzzing"). For the HDF5 files dsee writes itself and reads back on resume
// or on other ranks, the SHA-256 sidecar is checked first, so a truncated or
// damaged file becomes an error naming it instead of a crash. The write order
// is: remove the old sidecar, write the file (atomically), write the sidecar.
// A crash in between leaves a file without sidecar: a checkpoint is then
// refused (`required`; the previous one is used), an Ω file or masks.h5 is
// read unchecked (`if_present`: such files may also come from other tools).
// A file replaced on purpose needs its stale sidecar deleted; the message
// says so.
std::filesystem::path checksum_sidecar(const std::filesystem::path& file) { return file.string() + ".sum"; }

void checksum_write(const std::filesystem::path& file) {
  file_write_text(checksum_sidecar(file), sha256_file(file) + "  " + file.filename().string() + "\n");
}

void checksum_remove(const std::filesystem::path& file) {
  const std::filesystem::path sidecar = checksum_sidecar(file);
  if (::unlink(sidecar.c_str()) != 0 && errno != ENOENT) {
    DSEE_CHECK(false, "cannot remove the checksum file '{}': {}", sidecar.string(), std::strerror(errno));
  }
}

void checksum_verify(const std::filesystem::path& file, const std::string& source, ChecksumSidecar sidecar) {
  const std::filesystem::path sum = checksum_sidecar(file);
  struct stat status {};
  if (::stat(sum.c_str(), &status) != 0 || !S_ISREG(status.st_mode)) {
    DSEE_CHECK(sidecar == ChecksumSidecar::if_present, "{}: its checksum file '{}' is missing (an interrupted write?)",
               source, sum.string());
    return;
  }
  const std::string text = file_read_text(sum);
  const std::string expected = text.substr(0, text.find(' '));
  DSEE_CHECK(expected.size() == 64 && expected.find_first_not_of("0123456789abcdef") == std::string::npos,
             "{}: checksum file '{}' does not start with a SHA-256 in hex; delete it to read the file unchecked",
             source, sum.string());
  const std::string actual = sha256_file(file);
  DSEE_CHECK(actual == expected,
             "{}: SHA-256 {} does not match {} in '{}' (truncated or corrupted since it was written; if you "
             "replaced the file on purpose, delete '{}')",
             source, actual, expected, sum.string(), sum.filename().string());
}

}  // namespace dsee
