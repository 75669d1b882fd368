"""Shared pieces of the scripts that check `dsee run` on a tiny DSEE recipe
(tests/mpi/test_run_ranks.py on many ranks, tests/gpu/test_run_cuda.py on
CUDA): the recipe, the failure exit, and reading HDF5 datasets back."""
import sys

import h5py


def tiny_recipe(prune, dist):
    """The demo task at test size, DSEE r = 4 with c = 8 (tolerance GreBsmo),
    2 epochs with accumulation, clipping and warm-up, then the [prune] table
    `prune` (its body), one epoch of re-tuning and the [dist] table `dist`."""
    return f"""
[run]
name = "tiny"
[task]
name = "demo"
train_size = 100
dev_size = 48
[tuning]
method = "dsee"
rank = 4
[omega]
c = 8
variant = "tolerance"
max_rank = 4
workers = 2
[train]
lr = 1e-2
epochs = 2
batch_size = 16
grad_accumulation = 2
max_grad_norm = 0.5
warmup_ratio = 0.1
[prune]
{prune}
[retune]
epochs = 1
[dist]
{dist}
"""


def fail(message):
    print("FAILED:", message)
    sys.exit(1)


def h5_datasets(path):
    """Every dataset of the HDF5 file, by path, as numpy values."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out
