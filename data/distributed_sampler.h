// The order in which training samples are seen, split over ranks.
//
// One global order per epoch: a permutation of [0, dataset_size) drawn from
// (seed, epoch) with our own generator (splitmix64 + Fisher–Yates, so the
// order does not change with the torch version), or the identity without
// shuffling. The epoch is cut into global batches of global_batch_size
// samples (the last one shorter, or dropped with drop_last); each global
// batch is cut into world_size contiguous pieces, rank r taking piece r
// (sizes differ by at most one; a rank may get none).
//
// The position (epoch, samples of the epoch already consumed) counts global
// samples, so it does not depend on the number of ranks: a checkpoint's
// position resumed on any number of ranks continues the same global order.
// With equal pieces the mean of the ranks' mean losses is the global mean;
// with unequal ones scale the local loss sum by world_size / global_size
// (RankBatch::global_size) so the averaged gradient is the 1-rank gradient.
//
// No MPI here: rank and world size are plain ints.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace dsee {

struct SamplerPosition {
  std::int64_t epoch = 0;
  std::int64_t sample = 0;  // global samples of `epoch` already consumed
  bool operator==(const SamplerPosition&) const = default;
};

struct RankBatch {
  std::int64_t epoch = 0;
  std::int64_t step = 0;              // global batch number within the epoch
  std::vector<std::int64_t> indices;  // this rank's dataset indices, in order
  std::int64_t global_size = 0;       // samples in the global batch, all ranks
};

struct SamplerOptions {
  std::int64_t dataset_size = 0;
  std::int64_t global_batch_size = 1;
  std::uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = false;
};

class DistributedSampler {
 public:
  DistributedSampler(const SamplerOptions& options, int rank, int world_size);

  std::int64_t batches_per_epoch() const;
  // This rank's share of the next global batch; moves the position on (to
  // the next epoch after the last batch of one).
  RankBatch next();

  SamplerPosition position() const { return position_; }
  // Throws dsee::Error when `position` is not at a global-batch boundary of
  // this sampler (a different global batch size or dataset size).
  void set_position(const SamplerPosition& position);

  // The global order of `epoch` (every rank computes the same).
  std::vector<std::int64_t> epoch_order(std::int64_t epoch) const;

 private:
  std::int64_t samples_per_epoch() const;
  const std::vector<std::int64_t>& order_of(std::int64_t epoch);

  SamplerOptions options_;
  int rank_;
  int world_size_;
  SamplerPosition position_;
  std::int64_t cached_epoch_ = -1;
  std::vector<std::int64_t> cached_order_;
};

// Rank r's contiguous part [begin, end) of n items split over world_size
// ranks (sizes differ by at most one; the first n % world_size ranks get
// the extra item). Evaluation shards: gathering them in rank order restores
// the 1-rank order.
std::pair<std::int64_t, std::int64_t> shard_range(std::int64_t n, int rank, int world_size);

// Rank r's contiguous rows [begin, end) of n rows cut into batches of
// batch_size (the last one short), split by whole batches: shard_range over
// the batches. So each rank's batches are exactly batches of the 1-rank
// sequence (evaluation: the same forward passes, so the same logits bit for
// bit), and gathering the shards in rank order restores the 1-rank order.
std::pair<std::int64_t, std::int64_t> batch_shard_range(std::int64_t n, std::int64_t batch_size, int rank,
                                                        int world_size);

}  // namespace dsee
