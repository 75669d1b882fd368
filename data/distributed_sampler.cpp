#include "data/distributed_sampler.h"

#include <algorithm>

#include "base/error.h"

namespace dsee {
namespace {

// splitmix64 (Steele, Lea, Flood 2014): a small generator whose output
// depends only on the seed, on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), without modulo bias (rejects the short tail).
  std::uint64_t below(std::uint64_t bound) {
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    std::uint64_t x = next();
    while (x >= limit) x = next();
    return x % bound;
  }

 private:
  std::uint64_t state_;
};

}  // namespace

std::pair<std::int64_t, std::int64_t> shard_range(std::int64_t n, int rank, int world_size) {
  DSEE_ASSERT(world_size > 0 && rank >= 0 && rank < world_size, "rank {} of {}", rank, world_size);
  const std::int64_t base = n / world_size, extra = n % world_size;
  const std::int64_t begin = rank * base + std::min<std::int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

std::pair<std::int64_t, std::int64_t> batch_shard_range(std::int64_t n, std::int64_t batch_size, int rank,
                                                        int world_size) {
  DSEE_ASSERT(batch_size > 0 && n >= 0, "{} rows in batches of {}", n, batch_size);
  const auto [first, last] = shard_range((n + batch_size - 1) / batch_size, rank, world_size);
  return {std::min(first * batch_size, n), std::min(last * batch_size, n)};
}

DistributedSampler::DistributedSampler(const SamplerOptions& options, int rank, int world_size)
    : options_(options), rank_(rank), world_size_(world_size) {
  DSEE_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "sampler for rank {} of {} ranks", rank, world_size);
  DSEE_CHECK(options.dataset_size > 0, "the training set is empty");
  DSEE_CHECK(options.global_batch_size >= 1, "train.batch_size must be at least 1, got {}", options.global_batch_size);
  DSEE_CHECK(batches_per_epoch() > 0, "drop_last with {} samples and a global batch of {} leaves no batch",
             options.dataset_size, options.global_batch_size);
}

std::int64_t DistributedSampler::samples_per_epoch() const {
  return options_.drop_last ? options_.dataset_size / options_.global_batch_size * options_.global_batch_size
                            : options_.dataset_size;
}

std::int64_t DistributedSampler::batches_per_epoch() const {
  return (samples_per_epoch() + options_.global_batch_size - 1) / options_.global_batch_size;
}

std::vector<std::int64_t> DistributedSampler::epoch_order(std::int64_t epoch) const {
  std::vector<std::int64_t> order(static_cast<std::size_t>(options_.dataset_size));
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int64_t>(i);
  if (!options_.shuffle) return order;
  // One stream per (seed, epoch); mixing the epoch through splitmix keeps
  // nearby seeds and epochs unrelated.
  SplitMix64 rng(SplitMix64(options_.seed ^ SplitMix64(static_cast<std::uint64_t>(epoch)).next()).next());
  for (std::size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  return order;
}

const std::vector<std::int64_t>& DistributedSampler::order_of(std::int64_t epoch) {
  if (cached_epoch_ != epoch) {
    cached_order_ = epoch_order(epoch);
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

RankBatch DistributedSampler::next() {
  const std::vector<std::int64_t>& order = order_of(position_.epoch);
  RankBatch batch;
  batch.epoch = position_.epoch;
  batch.step = position_.sample / options_.global_batch_size;
  batch.global_size = std::min(options_.global_batch_size, samples_per_epoch() - position_.sample);
  const auto [begin, end] = shard_range(batch.global_size, rank_, world_size_);
  batch.indices.assign(order.begin() + position_.sample + begin, order.begin() + position_.sample + end);
  position_.sample += batch.global_size;
  if (position_.sample >= samples_per_epoch()) position_ = SamplerPosition{position_.epoch + 1, 0};
  return batch;
}

void DistributedSampler::set_position(const SamplerPosition& position) {
  DSEE_CHECK(position.epoch >= 0 && position.sample >= 0 && position.sample < samples_per_epoch() &&
                 position.sample % options_.global_batch_size == 0,
             "cannot resume at epoch {}, sample {}: not the start of a global batch of {} in an epoch of {} "
             "samples (was the checkpoint made with another train.batch_size or training set?)",
             position.epoch, position.sample, options_.global_batch_size, samples_per_epoch());
  position_ = position;
}

}  // namespace dsee
