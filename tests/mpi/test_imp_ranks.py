"""prune.kind = imp (recipes/stage_prune_imp.cpp) under mpirun: on 2 ranks the
rounds' masks are rank 0's, read back by every rank, and the run ends where
1 process ends — the same masks.h5 (h5py), the same pruning counts, the same
dev accuracy (the shrunken demo without dropout; 2 rounds to 60%)."""
import json
import os

from harness import check, check_equal
from harness.runs import demo_runs_on_one_and_two_ranks, h5_datasets

ARGS = ["--set", "run.compare=[]", "--set", "tuning.method=full", "--set", "train.lr=1e-3", "--set",
        "task.train_size=256", "--set", "task.dev_size=64", "--set", "train.epochs=1", "--set", "retune.epochs=1",
        "--set", "prune.kind=imp", "--set", "prune.imp_rounds=2", "--set", "prune.sparsity=0.6"]


def test_imp_two_ranks_equal_one_process(dsee, mpiexec, tmp_path):
    runs = demo_runs_on_one_and_two_ranks(dsee, mpiexec, tmp_path, ARGS)
    one, two = (h5_datasets(os.path.join(runs[n], "masks.h5")) for n in (1, 2))
    check_equal("masks.h5 datasets", sorted(two), sorted(one))
    for name in one:
        check(f"{name}: 2 ranks' mask is 1 process's", (one[name] == two[name]).all())
    summaries = [json.load(open(os.path.join(runs[n], "summary.json"))) for n in (1, 2)]
    check_equal("the IMP record", summaries[1]["stages"]["prune"]["imp"], summaries[0]["stages"]["prune"]["imp"])
    check_equal("dev metrics", summaries[1]["dev"], summaries[0]["dev"])
