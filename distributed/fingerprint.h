// 64-bit fingerprints, and the check that every rank holds the same thing.
//
// A fingerprint is FNV-1a (64-bit) over bytes: for a tensor its dtype, shape
// and values (so 0 as int64 and 0 as float differ), for a named set of
// tensors every name and tensor in order. Equal fingerprints on all ranks are
// how the ranks agree on the resolved config, model shapes, pretrained
// weights, Ω, masks and (every dist.fingerprint_every steps) the trainable
// parameters without sending them.
//
// fingerprint_verify all-gathers one fingerprint per rank (a collective:
// every rank calls it, in the same order) and throws FingerprintMismatch
// naming the label and which ranks hold which value; fingerprint_verify_items
// and fingerprint_verify_state also name which of several things differed
// (a tensor, the collective order).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/named_tensor.h"
#include "distributed/communicator.h"

namespace dsee {

class FingerprintMismatch : public Error {
 public:
  using Error::Error;
};

using NamedTensors = NamedTensors;

inline constexpr std::uint64_t kFingerprintSeed = 0xcbf29ce484222325ULL;  // FNV-1a offset basis

// Continues `seed` over `size` bytes.
std::uint64_t fingerprint_bytes(const void* data, std::size_t size, std::uint64_t seed = kFingerprintSeed);
std::uint64_t fingerprint(const std::string& text);
// dtype, shape and values; a CUDA tensor is copied to the host first.
std::uint64_t fingerprint(const at::Tensor& tensor);
std::uint64_t fingerprint(const NamedTensors& tensors);

// The next CollectiveStats::sequence after `sequence`, for a collective
// `operation` over `tensor` (undefined for a barrier) from `root` (-1: none).
std::uint64_t fingerprint_collective(std::uint64_t sequence, const char* operation, const at::Tensor& tensor,
                                     int root = -1);

// Throws FingerprintMismatch when the ranks' values differ.
void fingerprint_verify(Communicator& comm, const std::string& label, std::uint64_t value);
// The same for a text (a resolved config, a version list); on a mismatch the
// message also quotes the first line where a differing rank's text departs
// from rank 0's.
void fingerprint_verify_text(Communicator& comm, const std::string& label, const std::string& text);

// How the start-up checks' messages end.
inline constexpr const char* kStartupAdvice = "Every rank must start from the same recipe, files and library versions";

using NamedFingerprints = std::vector<std::pair<std::string, std::uint64_t>>;
// The same for named things, e.g. {"tensor 'x'", fingerprint(x)}: one
// all-gather when the ranks agree; on a mismatch a second one of every
// item's value, and the message names the first items that differ (up to
// three) with the ranks and values of the first. Every rank passes the same
// names in the same order (else the message says the lists differ).
// `advice` ends the message (default: the start-up advice of the others).
void fingerprint_verify_items(Communicator& comm, const std::string& label, const NamedFingerprints& items,
                              const std::string& advice = kStartupAdvice);
// The periodic check of `dsee run`: the order of the collectives issued so
// far (comm.stats().sequence, as "collective order") and one fingerprint
// per tensor ("tensor '<name>'"); its message says what drift during
// training means and what to do.
void fingerprint_verify_state(Communicator& comm, const std::string& label, const NamedTensors& tensors);

}  // namespace dsee
