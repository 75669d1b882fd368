"""prune.kind = imp (recipes/stage_prune_imp.cpp) under mpirun: on 2 ranks the
rounds' masks are rank 0's, read back by every rank, and the run ends where
1 process ends — the same masks.h5 (h5py), the same pruning counts, the same
dev accuracy (the shrunken demo without dropout; 2 rounds to 60%)."""
import json
import os

from harness import check, check_equal
from harness.runs import h5_datasets, run_command as run

ARGS = ["--set", "run.compare=[]", "--set", "tuning.method=full", "--set", "train.lr=1e-3", "--set",
        "task.train_size=256", "--set", "task.dev_size=64", "--set", "train.epochs=1", "--set", "retune.epochs=1",
        "--set", "prune.kind=imp", "--set", "prune.imp_rounds=2", "--set", "prune.sparsity=0.6"]


def test_imp_two_ranks_equal_one_process(dsee, mpiexec, tmp_path):
    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "demo.toml")
    runs = {}
    for n in (1, 2):
        out = str(tmp_path / f"out{n}")
        command = [dsee, "run", recipe, "--set", f"run.out_dir={out}", *ARGS]
        if n > 1:
            command = [mpiexec, "-n", str(n), "--oversubscribe", "--bind-to", "none", *command]
        rc, text, seconds = run(command, 120)
        print(f"--- {n} rank(s): exit {rc} after {seconds:.1f} s")
        check(f"{n} rank(s): dsee run exits 0", rc == 0, text if rc else "")
        runs[n] = os.path.join(out, "demo")
    one, two = (h5_datasets(os.path.join(runs[n], "masks.h5")) for n in (1, 2))
    check_equal("masks.h5 datasets", sorted(two), sorted(one))
    for name in one:
        check(f"{name}: 2 ranks' mask is 1 process's", (one[name] == two[name]).all())
    summaries = [json.load(open(os.path.join(runs[n], "summary.json"))) for n in (1, 2)]
    check_equal("the IMP record", summaries[1]["stages"]["prune"]["imp"], summaries[0]["stages"]["prune"]["imp"])
    check_equal("dev metrics", summaries[1]["dev"], summaries[0]["dev"])
