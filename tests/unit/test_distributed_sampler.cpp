// The distributed sampler: one global order per epoch, split over ranks,
// resumable on any number of ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "base/error.h"
#include "data/distributed_sampler.h"

namespace {

using dsee::DistributedSampler;
using dsee::SamplerOptions;
using dsee::SamplerPosition;

SamplerOptions options(std::int64_t size = 23, std::int64_t batch = 6) {
  return SamplerOptions{.dataset_size = size, .global_batch_size = batch, .seed = 42};
}

// The global order that `world_size` ranks see over `steps` global batches:
// each step's pieces concatenated in rank order.
std::vector<std::int64_t> global_sequence(std::vector<DistributedSampler>& ranks, int steps) {
  std::vector<std::int64_t> seen;
  for (int s = 0; s < steps; ++s)
    for (auto& rank : ranks) {
      const auto batch = rank.next();
      seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
    }
  return seen;
}

std::vector<DistributedSampler> ranks_of(int world_size, const SamplerOptions& o = options()) {
  std::vector<DistributedSampler> ranks;
  for (int r = 0; r < world_size; ++r) ranks.emplace_back(o, r, world_size);
  return ranks;
}

TEST(DistributedSampler, EachEpochIsAPermutationAndEpochsDiffer) {
  DistributedSampler sampler(options(), 0, 1);
  auto e0 = sampler.epoch_order(0), e1 = sampler.epoch_order(1);
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::vector<std::int64_t> identity(23);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(e0, identity);
  EXPECT_NE(sampler.epoch_order(0), identity);  // shuffled
}

TEST(DistributedSampler, OrderDependsOnlyOnSeedAndEpoch) {
  EXPECT_EQ(DistributedSampler(options(), 0, 1).epoch_order(3), DistributedSampler(options(), 1, 4).epoch_order(3));
  auto other = options();
  other.seed = 43;
  EXPECT_NE(DistributedSampler(options(), 0, 1).epoch_order(0), DistributedSampler(other, 0, 1).epoch_order(0));
}

TEST(DistributedSampler, RanksShareEveryGlobalBatchExactly) {
  for (int world : {1, 2, 3, 4, 7}) {
    auto ranks = ranks_of(world);
    auto one = ranks_of(1);
    // 2 epochs of 4 global batches (6, 6, 6, 5 samples).
    EXPECT_EQ(global_sequence(ranks, 8), global_sequence(one, 8)) << world << " ranks";
  }
}

TEST(DistributedSampler, LastBatchIsShortOrDropped) {
  DistributedSampler sampler(options(), 1, 2);
  EXPECT_EQ(sampler.batches_per_epoch(), 4);
  for (int s = 0; s < 3; ++s) EXPECT_EQ(sampler.next().indices.size(), 3u);
  const auto last = sampler.next();
  EXPECT_EQ(last.global_size, 5);
  EXPECT_EQ(last.indices.size(), 2u);  // rank 0 takes 3, rank 1 takes 2
  EXPECT_EQ(sampler.position(), (SamplerPosition{1, 0}));
  auto o = options();
  o.drop_last = true;
  DistributedSampler dropping(o, 0, 2);
  EXPECT_EQ(dropping.batches_per_epoch(), 3);
}

TEST(DistributedSampler, TwoRankPositionResumedOnOneRankContinuesTheGlobalOrder) {
  // 2 ranks run 6 global batches (into epoch 1), checkpoint the position...
  auto two = ranks_of(2);
  const auto before = global_sequence(two, 6);
  const SamplerPosition saved = two[0].position();
  EXPECT_EQ(saved, two[1].position());
  EXPECT_EQ(saved, (SamplerPosition{1, 12}));
  // ...and 1 rank resumes there: the concatenation is the uninterrupted
  // 1-rank order.
  DistributedSampler resumed(options(), 0, 1);
  resumed.set_position(saved);
  std::vector<DistributedSampler> one_resumed{resumed};
  auto joined = before;
  const auto after = global_sequence(one_resumed, 5);
  joined.insert(joined.end(), after.begin(), after.end());
  auto reference = ranks_of(1);
  EXPECT_EQ(joined, global_sequence(reference, 11));
}

TEST(DistributedSampler, ThreeRankPositionResumedOnTwoRanks) {
  auto three = ranks_of(3);
  const auto before = global_sequence(three, 2);
  auto two = ranks_of(2);
  for (auto& r : two) r.set_position(three[0].position());
  auto joined = before;
  const auto after = global_sequence(two, 7);
  joined.insert(joined.end(), after.begin(), after.end());
  auto reference = ranks_of(1);
  EXPECT_EQ(joined, global_sequence(reference, 9));
}

TEST(DistributedSampler, ResumeRejectsAPositionOfAnotherBatchSize) {
  DistributedSampler sampler(options(), 0, 1);
  EXPECT_THROW(sampler.set_position({0, 5}), dsee::Error);
  EXPECT_THROW(sampler.set_position({0, 24}), dsee::Error);
  EXPECT_NO_THROW(sampler.set_position({2, 18}));
}

TEST(ShardRange, CoversEverythingInRankOrder) {
  EXPECT_EQ(dsee::shard_range(7, 0, 3), std::make_pair(std::int64_t{0}, std::int64_t{3}));
  EXPECT_EQ(dsee::shard_range(7, 1, 3), std::make_pair(std::int64_t{3}, std::int64_t{5}));
  EXPECT_EQ(dsee::shard_range(7, 2, 3), std::make_pair(std::int64_t{5}, std::int64_t{7}));
  EXPECT_EQ(dsee::shard_range(1, 2, 3), std::make_pair(std::int64_t{1}, std::int64_t{1}));
}

// Evaluation shards: whole batches of the 1-rank sequence, in rank order.
TEST(BatchShardRange, RanksGetWholeBatchesOfTheOneRankSequence) {
  using Range = std::pair<std::int64_t, std::int64_t>;
  // 23 rows in batches of 5: 5 5 5 5 3; 2 ranks: batches 0-2 and 3-4.
  EXPECT_EQ(dsee::batch_shard_range(23, 5, 0, 2), Range(0, 15));
  EXPECT_EQ(dsee::batch_shard_range(23, 5, 1, 2), Range(15, 23));
  // 3 ranks: 2, 2 and 1 batches.
  EXPECT_EQ(dsee::batch_shard_range(23, 5, 0, 3), Range(0, 10));
  EXPECT_EQ(dsee::batch_shard_range(23, 5, 1, 3), Range(10, 20));
  EXPECT_EQ(dsee::batch_shard_range(23, 5, 2, 3), Range(20, 23));
  // More ranks than batches: the last ranks evaluate nothing.
  EXPECT_EQ(dsee::batch_shard_range(7, 5, 1, 3), Range(5, 7));
  EXPECT_EQ(dsee::batch_shard_range(7, 5, 2, 3), Range(7, 7));
  EXPECT_EQ(dsee::batch_shard_range(0, 5, 0, 2), Range(0, 0));
  // Every shard starts on a batch boundary, and the shards tile [0, n).
  for (std::int64_t n : {1, 9, 48, 257, 1000})
    for (std::int64_t batch : {1, 4, 7, 256})
      for (int world = 1; world <= 5; ++world) {
        std::int64_t next = 0;
        for (int r = 0; r < world; ++r) {
          const auto [begin, end] = dsee::batch_shard_range(n, batch, r, world);
          EXPECT_EQ(begin, next) << n << " " << batch << " " << r << "/" << world;
          EXPECT_TRUE(begin == n || begin % batch == 0) << n << " " << batch << " " << r << "/" << world;
          EXPECT_LE(begin, end);
          next = end;
        }
        EXPECT_EQ(next, n);
      }
}

}  // namespace
