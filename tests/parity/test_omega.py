"""Parity: dsee's Ω selection (dsee_parity's omega) against
bench/grebsmo_reference.py, a plain Python-torch transcription of the loop
docs/method.md ('The index set Ω') describes, written independently of
dsee's C++.

Same matrices, same seed, one intra-op thread on both sides; requires identical
Ω sets (and the same number of non-zeros in GreBsmo's S), and reads dsee's Ω
file with h5py (names, int64 dtype, shape attribute, file attributes).
"""
import os

import h5py
import numpy as np
import torch

import grebsmo_reference as ref
from harness import check, check_equal

torch.set_num_threads(1)
SEED = 20240


def make_matrices(std):
    g = torch.Generator().manual_seed(7)
    shapes = [("bert.encoder.layer.0.attention.self.query.weight", 48, 32),
              ("bert.encoder.layer.0.attention.self.value.weight", 64, 64),
              ("h.0.attn.c_attn.weight:q", 96, 40),
              ("h.0.attn.c_attn.weight:v", 40, 96)]
    return [(name, torch.randn(m, n, generator=g) * std) for name, m, n in shapes]


def dsee_omega(parity, folder, matrices, c, method, seed=SEED, **options):
    """Runs dsee_parity's omega on one thread; returns (Ω read with h5py, its report)."""
    path = os.path.join(folder, f"omega-{parity.calls + 1}.h5")
    report = parity("omega", {"names": [name for name, _ in matrices], "omega_file": path, "method": method,
                              "c": c, "seed": seed, "threads": 1, **options}, dict(matrices)).json
    return read_omega_file(path, matrices, c, method, seed), report


def read_omega_file(path, matrices, c, method, seed):
    omega = {}
    with h5py.File(path, "r") as h:
        check_equal("h5py: dataset names", sorted(h.keys()), sorted(name for name, _ in matrices))
        check("h5py: file attributes",
              h.attrs["method"] == method and int(h.attrs["c"]) == c and int(h.attrs["seed"]) == seed,
              f"{dict(h.attrs)}")
        for name, W in matrices:
            d = h[name]
            check(f"h5py: {name} is int64 [{c}]", d.dtype == np.int64 and d.shape == (c,), f"{d.dtype} {d.shape}")
            check_equal(f"h5py: {name} shape attribute", list(d.attrs["shape"]), list(W.shape))
            omega[name] = d[:].tolist()
    return omega


def compare(parity, folder, label, matrices, c, method, outer=ref.OUTER, **options):
    """dsee's Ω (and S's non-zeros for GreBsmo) identical to the reference's; returns the reference's non-zeros."""
    dsee, report = dsee_omega(parity, folder, matrices, c, method, outer=outer if outer != ref.OUTER else 0,
                              **options)
    expected = ref.omega_for_matrices(matrices, c, SEED, method, outer)
    nonzeros = {}
    if method == "grebsmo":
        g = torch.Generator().manual_seed(SEED)
        nonzeros = {name: int((ref.grebsmo_reference(W, g, outer) != 0).sum()) for name, W in matrices}
    for item in report["matrices"]:
        name = item["name"]
        shape = tuple(dict(matrices)[name].shape)
        check_equal(f"{label}: {name} {shape} identical Ω ({c} of {c})", dsee[name], expected[name])
        if method == "grebsmo":
            check_equal(f"{label}: {name} nnz(S), dsee vs python", item["sparse_nonzeros"], nonzeros[name])
    return nonzeros


def test_grebsmo_reference_full_rank(parity, tmp_path):
    # The documented loop as written: at 100 outer steps these small matrices
    # reach full rank, S = 0 and Ω is the tie-break (first c flat indices) on both sides.
    nz = compare(parity, tmp_path, "grebsmo reference, 100 outer", make_matrices(0.04), 16, "grebsmo")
    check("at full rank S is empty (Ω from the tie-break)", all(v == 0 for v in nz.values()), f"{nz}")


def test_grebsmo_reference_six_outer_steps(parity, tmp_path):
    # Six outer steps (rank 26 < min shape): S keeps hundreds of entries and Ω
    # depends on every rounding of the loop. Two workers must not change it.
    weights = make_matrices(0.04)
    nz = compare(parity, tmp_path, "grebsmo reference, 6 outer", weights, 16, "grebsmo", outer=6)
    check("with 6 outer steps S has more than c non-zeros", all(v > 16 for v in nz.values()), f"{nz}")
    compare(parity, tmp_path, "grebsmo reference, 6 outer, 2 workers", weights, 16, "grebsmo", outer=6, workers=2)
    compare(parity, tmp_path, "grebsmo reference, 6 outer, std 1", make_matrices(1.0), 16, "grebsmo", outer=6)


def test_grebsmo_reference_512x512(parity, tmp_path):
    # The documented loop in its real regime: 100 outer steps, final rank 496 <
    # 512, so S keeps ~26k entries and Ω depends on every rounding of all 100 steps.
    nz = compare(parity, tmp_path, "grebsmo reference, 100 outer, 512x512",
                 [("bert.encoder.layer.3.attention.self.value.weight",
                   torch.randn(512, 512, generator=torch.Generator().manual_seed(3)))], 16, "grebsmo")
    check("512x512 after 100 outer steps S keeps many entries", all(v > 10000 for v in nz.values()), f"{nz}")


def test_another_seed_gives_another_omega(parity, tmp_path):
    # The comparison can fail: another seed gives another Ω.
    weights = make_matrices(0.04)
    other, _ = dsee_omega(parity, tmp_path, weights, 16, "grebsmo", seed=SEED + 1, outer=6)
    same_seed = ref.omega_for_matrices(weights, 16, SEED, outer=6)
    check("control: seed + 1 changes Ω", any(other[name] != same_seed[name] for name, _ in weights))


def test_magnitude_random_and_empty_omega(parity, tmp_path):
    weights = make_matrices(0.04)
    compare(parity, tmp_path, "magnitude", weights, 16, "magnitude")
    compare(parity, tmp_path, "random", weights, 16, "random")
    compare(parity, tmp_path, "c = 0", weights, 0, "grebsmo", outer=3)
