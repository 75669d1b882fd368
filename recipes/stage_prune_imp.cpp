// The prune stage of prune.kind = imp: BERT tickets' iterative magnitude
// pruning (Chen et al. 2020; docs/tuning.md, 'BERT tickets (IMP)'). The train
// stage was round 1's training. Round r of R = prune.imp_rounds: the pool
// (pruning.h, pool_magnitude) pruned by global |W| of the trained weights to
// k_r removed entries (imp_removed_count; the last round exactly
// round(prune.sparsity · N)) → every trainable tensor rewound to its
// pretrained value, the task head to its initial one, the masks kept → unless
// r = R, trained again with the train stage's options and data order. After
// round R the rewound ticket's masks are masks.h5 (an unstructured plan, so
// loading, export and counting are the unstructured pruning's), and the retune
// stage trains the ticket.
//
// Note [IMP rounds]
// ~~~~~~~~~~~~~~~~~
// A round's state lives in <run>/imp/: masks-<r>.h5 (its masks, written as
// soon as they are computed), trainable-<r>.safetensors (the tensors its
// retraining ended with; only the newest round's is kept) and round-<r>.json
// (its record, written last: the round is finished). Its retraining
// checkpoints into ckpt/prune-<r>/, removed when the round finishes. The
// stage run again after a kill skips the finished rounds: it applies the last
// finished round's masks, loads its retrained tensors and goes on; a round
// whose masks exist without a record keeps those masks, rewinds, and trains
// from its newest checkpoint (or from the start). So a killed stage loses at
// most the steps since the round's last checkpoint.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <map>

#include "base/files.h"
#include "core/io/safetensors.h"
#include "core/sparsity/prune_plan.h"
#include "core/sparsity/pruning.h"
#include "core/train/checkpoint.h"
#include "recipes/stages.h"

namespace dsee {
namespace {

namespace fs = std::filesystem;

fs::path round_file(const Run& run, std::int64_t round, const char* what) {
  return run.dir.imp() / fmt::format(fmt::runtime(what), round);
}
fs::path round_masks(const Run& run, std::int64_t round) { return round_file(run, round, "masks-{}.h5"); }
fs::path round_record(const Run& run, std::int64_t round) { return round_file(run, round, "round-{}.json"); }

TrainPass round_pass(const Run& run, std::int64_t round) {
  return {Stage::train, fmt::format("prune-round-{}", round), run.dir.imp_checkpoints(round),
          round_file(run, round, "trainable-{}.safetensors"), round_file(run, round, "trainable-{}-best.safetensors")};
}

// Every trainable tensor back to the pretrained model's (the head to the
// initial one stage_data loaded); the masks stay on the projections.
void imp_rewind(Run& run) {
  const auto pretrained = pretrained_model_load(run);
  std::map<std::string, at::Tensor> initial;
  for (const auto& slot : pretrained->tensor_slots()) initial[slot.name] = *slot.tensor;
  at::NoGradGuard no_grad;
  for (auto& [name, tensor] : run.tuning->trainable_parameters()) {
    const auto it = initial.find(name);
    DSEE_ASSERT(it != initial.end(), "IMP rewind: the pretrained model has no tensor '{}'", name);
    tensor.copy_(it->second);
  }
}

void masks_load(Run& run, const fs::path& path) {
  read_on_every_rank(run.ranks, path, "reading " + path.filename().string(),
                     [&] { run.prune_plan = prune_plan_read(path); });
  prune_plan_apply(*run.model, run.prune_plan);
}

// The number of rounds whose record exists (rank 0 looks, every rank learns it).
std::int64_t rounds_finished(const Run& run) {
  const auto text = root_does(run.ranks, "reading the IMP rounds' records", [&] {
    std::int64_t done = 0;
    while (done < run.recipe.prune.imp_rounds && fs::exists(round_record(run, done + 1))) ++done;
    return std::to_string(done);
  });
  return std::stoll(text);
}

bool masks_exist(const Run& run, std::int64_t round) {
  return root_does(run.ranks, "looking for the round's masks",
                   [&] { return fs::exists(round_masks(run, round)) ? "1" : ""; }) == "1";
}

std::int64_t pool_size(PretrainedModel& model) {
  std::int64_t n = 0;
  for (const auto& block : pool_magnitude(model)) n += block.rows * block.linear->in_features();
  return n;
}

}  // namespace

void imp_recipe_check(const Recipe& recipe) {
  DSEE_CHECK(recipe.tuning.method == TuningMethod::full,
             "prune.kind = imp needs tuning.method = full (got {}): BERT tickets prune and rewind the model's own "
             "weights, which only full fine-tuning trains",
             tuning_method_name(recipe.tuning.method));
  DSEE_CHECK(recipe.retune.epochs > 0,
             "prune.kind = imp needs retune.epochs > 0: the retune stage trains the rewound ticket (the last "
             "round's training); without it the run would evaluate the pretrained weights with masks");
  DSEE_CHECK(recipe.tuning.init_from.empty(),
             "prune.kind = imp rewinds every round to the pretrained weights, so tuning.init_from ('{}') has no "
             "place in it; leave tuning.init_from empty",
             recipe.tuning.init_from);
  DSEE_CHECK(recipe.prune.sparsity < 1.0,
             "prune.sparsity = {} would remove every entry of the pool; give a fraction below 1 (BERT tickets: 0.4 to "
             "0.9)",
             recipe.prune.sparsity);
}

void stage_prune_imp(Run& run) {
  const auto& prune = run.recipe.prune;
  if (stage_finished(run, Stage::prune)) {
    prune_plan_load(run);
    return imp_rewind(run);
  }
  stage_required(run, Stage::prune);
  const auto start = StageClock::now();
  const std::int64_t rounds = prune.imp_rounds;
  const std::int64_t pool = pool_size(*run.model);
  root_writes(run.ranks, "creating imp/", [&] { folder_create(run.dir.imp()); });

  const std::int64_t done = rounds_finished(run);
  if (done > 0) {
    spdlog::info("{}: IMP rounds 1..{} of {} finished before, skipped", run.dir.name(), done, rounds);
    masks_load(run, round_masks(run, done));
    if (done < rounds) trainables_load_from(run, round_pass(run, done).trainables);
  }
  nlohmann::json removed_per_round = nlohmann::json::array();
  for (std::int64_t r = 1; r <= done; ++r)
    removed_per_round.push_back(imp_removed_count(pool, prune.sparsity, rounds, r));

  for (std::int64_t round = done + 1; round <= rounds; ++round) {
    const auto round_start = StageClock::now();
    const std::int64_t removed = imp_removed_count(pool, prune.sparsity, rounds, round);
    if (!masks_exist(run, round))
      root_writes(run.ranks, fmt::format("computing the masks of IMP round {}", round),
                  [&] { prune_plan_write(round_masks(run, round), magnitude_plan(*run.model, removed)); });
    masks_load(run, round_masks(run, round));
    imp_rewind(run);
    spdlog::info("{}: IMP round {} of {}: {} of {} pool entries removed ({:.4f}), rewound", run.dir.name(), round,
                 rounds, removed, pool, double(removed) / double(pool));
    nlohmann::json record = {{"round", round}, {"removed", removed}, {"pool", pool}};
    if (round < rounds) record["retrain"] = train_pass_run(run, round_pass(run, round));
    record["seconds"] = seconds_since(round_start);
    root_writes(run.ranks, fmt::format("writing imp/round-{}.json", round), [&] {
      file_write_json(round_record(run, round), record);
      // Only the newest round's tensors are needed again; a finished round's checkpoints never are.
      checkpoints_remove(run.dir.imp_checkpoints(round));
      if (round > 1) {  // POSIX unlink (Note [std::filesystem and libtorch] in omega_file.cpp)
        ::unlink(round_pass(run, round - 1).trainables.c_str());
        ::unlink(round_pass(run, round - 1).best_trainables.c_str());
      }
    });
    removed_per_round.push_back(removed);
  }

  if (done == rounds) imp_rewind(run);  // every round finished before: the tensors are the train stage's
  root_writes(run.ranks, "writing masks.h5", [&] { prune_plan_write(run.dir.masks(), run.prune_plan); });
  prune_plan_load(run);
  nlohmann::json record = counts_of(run);
  record["imp"] = {{"rounds", rounds},
                   {"pool", pool},
                   {"removed", removed_per_round.back()},
                   {"sparsity", double(removed_per_round.back().get<std::int64_t>()) / double(pool)},
                   {"removed_per_round", removed_per_round}};
  record["dev"] = task_evaluate(*run.model, run.tuning.get(), run.data, run.ranks.comm);  // the rewound ticket's
  record["seconds"] = seconds_since(start);
  stage_record(run, Stage::prune, record);
}

}  // namespace dsee
