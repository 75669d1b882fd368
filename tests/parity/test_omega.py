"""Parity: dsee's Ω selection (through omega_driver) against bench/grebsmo_reference.py,
an implementation of the spec written independently in plain Python torch.

Same matrices, same seed, one intra-op thread on both sides; requires identical
Ω sets (and the same number of non-zeros in GreBsmo's S), and reads dsee's Ω
file with h5py (names, int64 dtype, shape attribute, file attributes).

usage: test_omega.py path/to/omega_driver
"""
import os
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import grebsmo_reference as ref  # noqa: E402
import omega_io as io  # noqa: E402

torch.set_num_threads(1)
DRIVER = sys.argv[1]
SEED = 20240
failures = []


def check(ok, message, quiet=False):
    if not ok or not quiet:
        print(("ok   " if ok else "FAIL ") + message)
    if not ok:
        failures.append(message)


def make_matrices(std):
    g = torch.Generator().manual_seed(7)
    shapes = [("bert.encoder.layer.0.attention.self.query.weight", 48, 32),
              ("bert.encoder.layer.0.attention.self.value.weight", 64, 64),
              ("h.0.attn.c_attn.weight:q", 96, 40),
              ("h.0.attn.c_attn.weight:v", 40, 96)]
    return [(name, torch.randn(m, n, generator=g) * std) for name, m, n in shapes]


def run_driver(folder, matrices, args, seed=SEED):
    return io.run_driver(DRIVER, folder, matrices, ["--threads", "1", "--seed", str(seed)] + args)


def read_omega_file(path, matrices, c, method, seed=SEED):
    omega = {}
    with h5py.File(path, "r") as h:
        check(set(h.keys()) == {name for name, _ in matrices}, f"h5py: dataset names {sorted(h.keys())}", quiet=True)
        check(h.attrs["method"] == method and int(h.attrs["c"]) == c and int(h.attrs["seed"]) == seed,
              f"h5py: file attributes {dict(h.attrs)}", quiet=True)
        for name, W in matrices:
            d = h[name]
            check(d.dtype == np.int64 and d.shape == (c,), f"h5py: {name} is int64 [{c}] ({d.dtype} {d.shape})", quiet=True)
            check(list(d.attrs["shape"]) == list(W.shape), f"h5py: {name} shape attribute {list(d.attrs['shape'])}", quiet=True)
            omega[name] = d[:].tolist()
    return omega


def compare(label, matrices, c, method, args, outer=ref.OUTER):
    with tempfile.TemporaryDirectory() as folder:
        path, report = run_driver(folder, matrices, ["--method", method, "--c", str(c)] + args)
        dsee_omega = read_omega_file(path, matrices, c, method)
    saved = ref.OUTER
    ref.OUTER = outer
    try:
        expected = ref.omega_for_matrices(matrices, c, SEED, method)
        nonzeros = {}
        if method == "grebsmo":
            g = torch.Generator().manual_seed(SEED)
            nonzeros = {name: int((ref.grebsmo_reference(W, g) != 0).sum()) for name, W in matrices}
    finally:
        ref.OUTER = saved
    for item in report["matrices"]:
        name = item["name"]
        same = dsee_omega[name] == expected[name]
        detail = "" if same else f" dsee {dsee_omega[name]} python {expected[name]}"
        if method == "grebsmo":
            same = same and item["sparse_nonzeros"] == nonzeros[name]
            detail += f" nnz(S) dsee {item['sparse_nonzeros']} python {nonzeros[name]}"
        check(same, f"{label}: {name} {tuple(dict(matrices)[name].shape)} identical Ω ({c} of {c}){detail}")
    return nonzeros


weights = make_matrices(0.04)
# The spec's loop as written: at 100 outer steps these small matrices reach full
# rank, S = 0 and Ω is the tie-break (first c flat indices) on both sides.
nz = compare("grebsmo reference, 100 outer", weights, 16, "grebsmo", [])
check(all(v == 0 for v in nz.values()), "at full rank S is empty (Ω from the tie-break)")
# Six outer steps (rank 26 < min shape): S keeps hundreds of entries and Ω
# depends on every rounding of the loop. Two workers must not change it.
nz = compare("grebsmo reference, 6 outer", weights, 16, "grebsmo", ["--outer", "6"], outer=6)
check(all(v > 16 for v in nz.values()), f"with 6 outer steps S has more than c non-zeros: {nz}")
compare("grebsmo reference, 6 outer, 2 workers", weights, 16, "grebsmo", ["--outer", "6", "--workers", "2"], outer=6)
compare("grebsmo reference, 6 outer, std 1", make_matrices(1.0), 16, "grebsmo", ["--outer", "6"], outer=6)
# The spec's loop in its real regime: 100 outer steps, final rank 496 < 512, so S
# keeps ~26k entries and Ω depends on every rounding of all 100 steps.
nz = compare("grebsmo reference, 100 outer, 512x512", [("bert.encoder.layer.3.attention.self.value.weight",
             torch.randn(512, 512, generator=torch.Generator().manual_seed(3)))], 16, "grebsmo", [])
check(all(v > 10000 for v in nz.values()), f"512x512 after 100 outer steps S keeps many entries: {nz}")
# The comparison can fail: another seed gives another Ω.
with tempfile.TemporaryDirectory() as folder:
    _, _ = run_driver(folder, weights, ["--outer", "6"], seed=SEED + 1)
    other = read_omega_file(os.path.join(folder, "omega.h5"), weights, 16, "grebsmo", seed=SEED + 1)
saved, ref.OUTER = ref.OUTER, 6
same_seed = ref.omega_for_matrices(weights, 16, SEED)
ref.OUTER = saved
check(any(other[name] != same_seed[name] for name, _ in weights), "control: seed + 1 changes Ω")
compare("magnitude", weights, 16, "magnitude", [])
compare("random", weights, 16, "random", [])
compare("c = 0", weights, 0, "grebsmo", ["--outer", "3"], outer=3)

if failures:
    print(f"{len(failures)} failed")
    sys.exit(1)
print("all identical")
