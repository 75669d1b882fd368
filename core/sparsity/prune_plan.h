// A pruning plan (docs/method.md, 'Unstructured pruning' and 'Head pruning')
// and its file, masks.h5: the unstructured masks of the pretrained weights
// and/or the attention heads and feed-forward neurons removed per layer. The pipeline writes it after
// the first training stage; `dsee prune` applies one to a model folder;
// checkpoints embed the same groups.
//
// File layout (HDF5; see Note [masks.h5 layout] in prune_plan.cpp):
//   /masks/<module>   one dataset per masked projection, named by its HF
//                     module name without the family prefix
//                     ("encoder.layer.0.attention.self.query"), holding the
//                     [out, in] 0/1 mask either bit-packed (uint8, row-major,
//                     most significant bit first) or, when fewer than 1/32 of
//                     the entries are zero (one), as the ascending int64 flat
//                     indices of the zeros (ones); attributes "shape" [out, in],
//                     "encoding" ("bits" | "zero_indices" | "one_indices"), "numel".
//   /heads/<layer>    int64 [k] original head ids removed from that layer
//                     (HF `pruned_heads`), ascending.
//   /neurons/<layer>  int64 [n] original feed-forward neuron ids removed from
//                     that layer (rows of intermediate.dense / mlp.c_fc),
//                     ascending; every layer loses the same number
//                     (PretrainedModel::prune_neurons). Files without the
//                     group (older ones) remove none.
//   attributes        "format_version", "kind": the parts present joined by
//                     '+' in the order unstructured, heads, neurons
//                     ("unstructured", "heads", "heads+neurons", …) or "empty".
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace dsee {

struct PrunePlan {
  struct Mask {
    std::string module;  // HF module name, as PretrainedModel::linears() names it
    at::Tensor mask;     // [out, in] bool or 0/1 float, CPU
  };
  std::vector<Mask> masks;                                    // in linears() order
  std::map<std::int64_t, std::vector<std::int64_t>> heads;    // layer → removed original head ids
  std::map<std::int64_t, std::vector<std::int64_t>> neurons;  // layer → removed original feed-forward neuron ids
  bool empty() const { return masks.empty() && heads.empty() && neurons.empty(); }
};

// Writes atomically (temporary file, fsync, rename), then the checksum
// sidecar "<path>.sum" (base/hashing.h). Throws dsee::Error on
// I/O failure or an invalid plan (a mask that is not 2-D / not 0/1).
void prune_plan_write(const std::filesystem::path& path, const PrunePlan& plan);

// Verifies the sidecar where there is one, then reads and validates
// (shapes, encodings, indices in range, head ids);
// dsee::Error names the file and the dataset. Masks come back as bool [out, in].
PrunePlan prune_plan_read(const std::filesystem::path& path);

// The same content inside an open HDF5 file or group `location` (an hid_t),
// for checkpoints: groups "masks", "heads" and "neurons" under it.
void prune_plan_write_group(std::int64_t location, const PrunePlan& plan);
PrunePlan prune_plan_read_group(std::int64_t location, const std::string& where);

}  // namespace dsee
