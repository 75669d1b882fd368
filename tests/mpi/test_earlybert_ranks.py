"""prune.kind = earlybert (recipes/prune_earlybert.cpp) under mpirun: rank 0
runs the coefficient search alone while the other ranks wait for masks.h5,
then every rank prunes the same heads and neurons and re-tunes with its
piece of each batch. On 2 ranks the run ends where 1 process ends: the same
masks.h5 (h5py), the coefficients (earlybert.safetensors) and the search
record within 1e-6, the same dev metrics (the shrunken demo without dropout)."""
import json
import os

from safetensors.numpy import load_file

from harness import check, check_close, check_equal
from harness.runs import demo_runs_on_one_and_two_ranks, h5_datasets

ARGS = ["--set", "run.compare=[]", "--set", "tuning.method=full", "--set", "train.lr=1e-3", "--set",
        "task.train_size=256", "--set", "task.dev_size=64", "--set", "train.epochs=1", "--set", "retune.epochs=1",
        "--set", "prune.kind=earlybert", "--set", "prune.heads_per_layer=2", "--set", "prune.neurons_per_layer=32",
        "--set", "prune.search_steps=8", "--set", "prune.l1=1e-3"]


def test_earlybert_two_ranks_equal_one_process(dsee, mpiexec, tmp_path):
    runs = demo_runs_on_one_and_two_ranks(dsee, mpiexec, tmp_path, ARGS)
    one, two = (h5_datasets(os.path.join(runs[n], "masks.h5")) for n in (1, 2))
    check_equal("masks.h5 datasets", sorted(two), sorted(one))
    check("masks.h5 lists removed heads and neurons",
          any(k.startswith("heads/") for k in one) and any(k.startswith("neurons/") for k in one), f"{sorted(one)}")
    for name in one:
        check(f"{name}: 2 ranks' removed ids are 1 process's", (one[name] == two[name]).all())
    for name in one:
        if name.startswith("neurons/"):
            check_equal(f"{name}: neurons removed", len(one[name]), 32)
        if name.startswith("heads/"):
            check_equal(f"{name}: heads removed", len(one[name]), 2)
    # Each process sizes its thread pool by the ranks on the machine, so the
    # CPU kernels may sum in another order: values within 1e-6, not bit for bit.
    a, b = (load_file(os.path.join(runs[n], "earlybert.safetensors")) for n in (1, 2))
    check_equal("earlybert.safetensors names", sorted(b), sorted(a))
    for name in a:
        check_close(f"{name}: 2 ranks' coefficients", b[name], a[name], rel=1e-6, reference="1 process")
    summaries = [json.load(open(os.path.join(runs[n], "summary.json"))) for n in (1, 2)]
    search = [s["stages"]["prune"]["search"] for s in summaries]
    check_equal("the search's steps and λ", (search[1]["steps"], search[1]["l1"]), (search[0]["steps"], search[0]["l1"]))
    for key in ("coefficients_l1_norm", "last_task_loss"):
        check_close(f"the search's {key}", search[1][key], search[0][key], rel=1e-6, reference="1 process")
    check_equal("dev metrics", summaries[1]["dev"], summaries[0]["dev"])
