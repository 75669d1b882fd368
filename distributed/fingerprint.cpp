#include "distributed/fingerprint.h"

#include <ATen/ATen.h>

#include <cstring>
#include <map>
#include <sstream>

namespace dsee {
namespace {

constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

template <typename T>
std::uint64_t fingerprint_value(const T& value, std::uint64_t seed) {
  return fingerprint_bytes(&value, sizeof value, seed);
}

std::string hex(std::uint64_t value) { return fmt::format("{:#018x}", value); }

std::string rank_list(const std::vector<int>& ranks) {
  std::string text = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) text += (i ? ", " : "") + std::to_string(ranks[i]);
  return text;
}

// The ranks' values, rank after rank, the same on every rank (each rank
// gives values.size() of them).
std::vector<std::uint64_t> gather_values(Communicator& comm, const std::vector<std::uint64_t>& values) {
  at::Tensor mine = at::empty({static_cast<std::int64_t>(values.size())}, at::kLong);
  std::memcpy(mine.data_ptr(), values.data(), values.size() * sizeof(std::uint64_t));
  const at::Tensor all = comm.all_gather(mine.to(comm.device())).cpu().contiguous();
  std::vector<std::uint64_t> out(values.size() * static_cast<std::size_t>(comm.world_size()));
  std::memcpy(out.data(), all.data_ptr(), out.size() * sizeof(std::uint64_t));
  return out;
}

std::vector<std::uint64_t> gather_values(Communicator& comm, std::uint64_t value) {
  return gather_values(comm, std::vector<std::uint64_t>{value});
}

// "" when all agree, else which ranks hold which value (rank 0's group first).
std::string describe_mismatch(const std::vector<std::uint64_t>& values) {
  std::map<std::uint64_t, std::vector<int>> groups;
  for (std::size_t r = 0; r < values.size(); ++r) groups[values[r]].push_back(static_cast<int>(r));
  if (groups.size() == 1) return "";
  std::string text = fmt::format("{} {}", rank_list(groups[values[0]]), hex(values[0]));
  for (const auto& [value, ranks] : groups)
    if (value != values[0]) text += fmt::format(", but {} {}", rank_list(ranks), hex(value));
  return text;
}

std::string first_differing_line(const std::string& a, const std::string& b, int rank_b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool more_a = static_cast<bool>(std::getline(sa, la));
    const bool more_b = static_cast<bool>(std::getline(sb, lb));
    if (!more_a && !more_b) return "";
    if (!more_a) la = "<end>";
    if (!more_b) lb = "<end>";
    if (la != lb || !more_a || !more_b)
      return fmt::format("; first difference at line {}: rank 0 has \"{}\", rank {} has \"{}\"", line, la, rank_b, lb);
  }
}

}  // namespace

std::uint64_t fingerprint_bytes(const void* data, std::size_t size, std::uint64_t seed) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::uint64_t hash = seed;
  for (std::size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= kFnvPrime;
  }
  return hash;
}

std::uint64_t fingerprint(const std::string& text) { return fingerprint_bytes(text.data(), text.size()); }

std::uint64_t fingerprint(const at::Tensor& tensor) {
  std::uint64_t hash = fingerprint_value(static_cast<std::int32_t>(tensor.scalar_type()), kFingerprintSeed);
  hash = fingerprint_value(static_cast<std::int64_t>(tensor.dim()), hash);
  for (const std::int64_t size : tensor.sizes()) hash = fingerprint_value(size, hash);
  const at::Tensor host = tensor.cpu().contiguous();
  return fingerprint_bytes(host.data_ptr(), host.numel() * host.element_size(), hash);
}

std::uint64_t fingerprint(const NamedTensors& tensors) {
  std::uint64_t hash = kFingerprintSeed;
  for (const auto& [name, tensor] : tensors) {
    hash = fingerprint_bytes(name.data(), name.size() + 1, hash);  // with the terminating 0: "a"+"bc" != "ab"+"c"
    hash = fingerprint_value(fingerprint(tensor), hash);
  }
  return hash;
}

std::uint64_t fingerprint_collective(std::uint64_t sequence, const char* operation, const at::Tensor& tensor,
                                     int root) {
  std::uint64_t hash = fingerprint_bytes(operation, std::strlen(operation) + 1, sequence);
  const std::int64_t shape[3] = {tensor.defined() ? static_cast<std::int64_t>(tensor.scalar_type()) : -1,
                                 tensor.defined() ? tensor.numel() : 0, root};
  return fingerprint_bytes(shape, sizeof shape, hash);
}

void fingerprint_verify(Communicator& comm, const std::string& label, std::uint64_t value) {
  const std::string mismatch = describe_mismatch(gather_values(comm, value));
  if (!mismatch.empty())
    throw FingerprintMismatch(fmt::format("ranks disagree on the {}: {}. {}", label, mismatch, kStartupAdvice));
}

void fingerprint_verify_items(Communicator& comm, const std::string& label, const NamedFingerprints& items,
                              const std::string& advice) {
  // Note [Naming what differed]: the common case costs one all-gather of
  // two values (the items' combined fingerprint, with their names, and
  // their count); only a mismatch gathers every item's value, so a check
  // over hundreds of tensors stays cheap and its message still points at
  // the tensor (or the collective order) that went astray.
  std::uint64_t combined = kFingerprintSeed;
  std::vector<std::uint64_t> mine;
  for (const auto& [name, value] : items) {
    combined = fingerprint_bytes(name.data(), name.size() + 1, combined);
    combined = fingerprint_value(value, combined);
    mine.push_back(value);
  }
  const std::size_t world = static_cast<std::size_t>(comm.world_size());
  const auto heads = gather_values(comm, {combined, static_cast<std::uint64_t>(items.size())});
  std::vector<std::uint64_t> combined_of(world);
  bool same_count = true;
  for (std::size_t r = 0; r < world; ++r) {
    combined_of[r] = heads[2 * r];
    same_count = same_count && heads[2 * r + 1] == heads[1];
  }
  const std::string mismatch = describe_mismatch(combined_of);
  if (mismatch.empty()) return;
  const auto fail = [&](const std::string& what) {
    throw FingerprintMismatch(fmt::format("ranks disagree on the {}: {}. {}", label, what, advice));
  };
  if (!same_count) {
    std::string counts;
    for (std::size_t r = 0; r < world; ++r) counts += fmt::format("{}rank {} {}", r ? ", " : "", r, heads[2 * r + 1]);
    fail(fmt::format("{}; they hold different numbers of items ({})", mismatch, counts));
  }
  const auto all = gather_values(comm, mine);  // rank r's item i at r * size + i
  std::vector<std::string> differing;
  std::string first;
  for (std::size_t i = 0; i < items.size(); ++i) {
    std::vector<std::uint64_t> values(world);
    for (std::size_t r = 0; r < world; ++r) values[r] = all[r * items.size() + i];
    const std::string text = describe_mismatch(values);
    if (text.empty()) continue;
    if (differing.empty()) first = text;
    differing.push_back(items[i].first);
  }
  if (differing.empty())  // equal values under other names: the lists differ
    fail(fmt::format("{}; the ranks' lists of items differ in their names or order", mismatch));
  std::string more;
  for (std::size_t i = 1; i < differing.size() && i < 3; ++i) more += (i > 1 ? ", " : "") + differing[i];
  if (differing.size() > 3) more += fmt::format(" and {} more", differing.size() - 3);
  fail(fmt::format("{} differs ({}){}", differing.front(), first,
                   more.empty() ? "" : fmt::format("; also differ: {}", more)));
}

void fingerprint_verify_state(Communicator& comm, const std::string& label, const NamedTensors& tensors) {
  NamedFingerprints items = {{"collective order", comm.stats().sequence}};
  for (const auto& [name, tensor] : tensors) items.emplace_back(fmt::format("tensor '{}'", name), fingerprint(tensor));
  fingerprint_verify_items(comm, label, items,
                           "The ranks started alike and drifted apart while training: one computed differently "
                           "(a non-deterministic kernel, a hardware fault) or issued other collectives. Resume from "
                           "the last checkpoint (run the same command); if it recurs at the same step, report it");
}

void fingerprint_verify_text(Communicator& comm, const std::string& label, const std::string& text) {
  const std::vector<std::uint64_t> values = gather_values(comm, fingerprint(text));
  const std::string mismatch = describe_mismatch(values);
  if (mismatch.empty()) return;
  // Collective on every rank (all see the mismatch): gather the texts, padded
  // to the longest, and quote the first differing rank's departure.
  at::Tensor length = at::full({1}, static_cast<std::int64_t>(text.size()), at::kLong).to(comm.device());
  const at::Tensor lengths = comm.all_gather(length).cpu();
  const std::int64_t longest = lengths.max().item<std::int64_t>();
  at::Tensor mine = at::zeros({longest}, at::kByte);
  std::memcpy(mine.data_ptr(), text.data(), text.size());
  const at::Tensor texts = comm.all_gather(mine.to(comm.device())).cpu().contiguous();
  auto text_of = [&](int r) {
    return std::string(static_cast<const char*>(texts[r].data_ptr()),
                       static_cast<std::size_t>(lengths[r].item<std::int64_t>()));
  };
  int differing = 0;
  for (std::size_t r = 1; r < values.size() && differing == 0; ++r)
    if (values[r] != values[0]) differing = static_cast<int>(r);
  throw FingerprintMismatch(fmt::format("ranks disagree on the {}: {}{}. {}", label, mismatch,
                                        first_differing_line(text_of(0), text_of(differing), differing),
                                        kStartupAdvice));
}

}  // namespace dsee
