// Rank-0 coordination of tensors: rank 0's named tensors reach every rank,
// and the ranks check they hold the same; and the reverse, rows each rank
// computed (evaluation predictions) gathered in rank order. (`dsee run`'s
// state, Ω, pruning plans and checkpoints, crosses the ranks as the files
// rank 0 wrote instead: distributed/ranks.h.)
#pragma once

#include <string>

#include "distributed/communicator.h"
#include "distributed/fingerprint.h"

namespace dsee {

// A collective. On rank 0 `on_root` is the input (any shapes and supported
// dtypes, names unique); other ranks pass anything (ignored). Rank 0 first
// broadcasts the names, dtypes and shapes, then each tensor; every rank
// returns the set on comm.device() in rank 0's order, after verifying by
// fingerprint that all hold the same (FingerprintMismatch names `label`).
NamedTensors broadcast_from_root(Communicator& comm, const NamedTensors& on_root, const std::string& label);

// A collective. Each rank gives [n_r, *row_shape] (n_r may differ, even be
// 0; row shape and dtype the same everywhere); every rank returns
// [sum n_r, *row_shape]: rank 0's rows, then rank 1's, and so on. With
// contiguous evaluation shards (data/distributed_sampler.h, shard_range)
// this restores the 1-rank order.
at::Tensor all_gather_rows(Communicator& comm, const at::Tensor& rows);

}  // namespace dsee
