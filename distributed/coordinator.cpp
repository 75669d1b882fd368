#include "distributed/coordinator.h"

#include <ATen/ATen.h>

#include <cstring>
#include <set>

namespace dsee {
namespace {

// The header rank 0 sends, as int64 words: count, then per tensor the name's
// length, its bytes (one word each: names are short), dtype, rank, sizes.
std::vector<std::int64_t> encode_header(const NamedTensors& tensors) {
  std::vector<std::int64_t> words{static_cast<std::int64_t>(tensors.size())};
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    DSEE_CHECK(seen.insert(name).second, "broadcast_from_root: the name \"{}\" appears twice", name);
    DSEE_CHECK(tensor.defined(), "broadcast_from_root: tensor \"{}\" is undefined", name);
    words.push_back(static_cast<std::int64_t>(name.size()));
    for (const char c : name) words.push_back(static_cast<unsigned char>(c));
    words.push_back(static_cast<std::int64_t>(tensor.scalar_type()));
    words.push_back(tensor.dim());
    for (const std::int64_t size : tensor.sizes()) words.push_back(size);
  }
  return words;
}

at::Tensor broadcast_words(Communicator& comm, std::vector<std::int64_t> words) {
  at::Tensor count = at::full({1}, static_cast<std::int64_t>(words.size()), at::kLong).to(comm.device());
  comm.broadcast(count, 0);
  const std::int64_t n = count.cpu().item<std::int64_t>();
  at::Tensor header =
      comm.rank() == 0 ? at::from_blob(words.data(), {n}, at::kLong).clone() : at::empty({n}, at::kLong);
  header = header.to(comm.device());
  comm.broadcast(header, 0);
  return header.cpu();
}

}  // namespace

NamedTensors broadcast_from_root(Communicator& comm, const NamedTensors& on_root, const std::string& label) {
  const at::Tensor header =
      broadcast_words(comm, comm.rank() == 0 ? encode_header(on_root) : std::vector<std::int64_t>{});
  const auto* word = header.data_ptr<std::int64_t>();
  const std::int64_t count = *word++;
  NamedTensors result;
  for (std::int64_t i = 0; i < count; ++i) {
    std::string name(static_cast<std::size_t>(*word++), '\0');
    for (char& c : name) c = static_cast<char>(*word++);
    const auto dtype = static_cast<at::ScalarType>(*word++);
    std::vector<std::int64_t> sizes(static_cast<std::size_t>(*word++));
    for (std::int64_t& size : sizes) size = *word++;
    at::Tensor tensor = comm.rank() == 0 ? on_root[i].tensor.to(comm.device()).contiguous().clone()
                                         : at::empty(sizes, at::TensorOptions().dtype(dtype).device(comm.device()));
    comm.broadcast(tensor, 0);
    result.push_back({std::move(name), std::move(tensor)});
  }
  fingerprint_verify(comm, label + " (broadcast from rank 0)", fingerprint(result));
  return result;
}

at::Tensor all_gather_rows(Communicator& comm, const at::Tensor& rows) {
  DSEE_CHECK(rows.dim() >= 1, "all_gather_rows needs [rows, ...], got a scalar");
  // Each rank's row count and a fingerprint of its row shape and dtype,
  // which must agree before the padded all-gather can.
  std::vector<std::int64_t> row_shape = rows.sizes().vec();
  row_shape[0] = static_cast<std::int64_t>(rows.scalar_type());
  const std::uint64_t layout = fingerprint_bytes(row_shape.data(), row_shape.size() * sizeof(std::int64_t));
  at::Tensor mine = at::empty({2}, at::kLong);
  mine[0] = rows.size(0);
  std::memcpy(mine.data_ptr<std::int64_t>() + 1, &layout, sizeof layout);
  const at::Tensor gathered = comm.all_gather(mine.to(comm.device())).cpu();  // [world, 2]
  const at::Tensor counts = gathered.select(1, 0).contiguous();
  for (int r = 1; r < comm.world_size(); ++r)
    DSEE_CHECK(gathered[r][1].item<std::int64_t>() == gathered[0][1].item<std::int64_t>(),
               "all_gather_rows: rank {}'s rows differ from rank 0's in shape or dtype (rank {} has {} {})", r,
               comm.rank(), c10::toString(rows.scalar_type()), c10::str(rows.sizes()));
  const std::int64_t longest = counts.max().item<std::int64_t>();
  std::vector<std::int64_t> padded_shape = rows.sizes().vec();
  padded_shape[0] = longest;
  at::Tensor padded = at::zeros(padded_shape, rows.options().device(comm.device()));
  padded.narrow(0, 0, rows.size(0)).copy_(rows);
  const at::Tensor all = comm.all_gather(padded);  // [world, longest, ...]
  std::vector<at::Tensor> parts;
  parts.reserve(comm.world_size());
  for (int r = 0; r < comm.world_size(); ++r) parts.push_back(all[r].narrow(0, 0, counts[r].item<std::int64_t>()));
  return at::cat(parts, 0);
}

}  // namespace dsee
