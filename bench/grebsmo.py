"""GreBsmo / Ω benchmark: BERT-base's and RoBERTa-large's adapted matrices, both variants.

Matrix sets (random, std 0.04 like real projection weights, model order):
  bert-base      24 x 768x768   (12 layers x query, value)
  roberta-large  48 x 1024x1024 (24 layers x query, value)

Times, in one run on one machine, one intra-op thread per worker everywhere:
  python tolerance  the tolerance variant transcribed here in plain Python torch
                    from core/sparsity/grebsmo.h's contract (rank cap 32, early stop at
                    tol 1e-3, new rows Q5^T E) -- dsee's own variant, so the
                    Python side exists for timing; Ω agreement is reported
  python reference  the reference loop of docs/method.md ('GreBsmo'), as
                    bench/grebsmo_reference.py writes it (the parity tests'
                    independent reference)
  dsee              both variants through bench_omega (1 worker unless said)
and reports: Ω agreement with the Python side, the reference variant with 1
and 2 workers (speedup and identical Ω), tolerance vs reference Ω overlap,
stability under one ulp of noise on W (omega_stability) for both variants,
and on planted matrices (rank 8 + 16 outliers) how many outliers each variant
puts in Ω.

The reference variant costs ~1.5 min per 768x768 matrix per implementation on
one core, so --reference-matrices picks how many of each set run it (default:
all; the full sets take hours). Output is Markdown, flushed as it goes.
"""
import argparse
import os
import platform
import sys
import tempfile
import time

import torch

import grebsmo_reference as ref
import omega_io as io

C = 16
SEED = 0
DEVICE = "cpu"  # --device
SETS = {"bert-base": (12, 768), "roberta-large": (24, 1024)}


def say(text=""):
    print(text, flush=True)


def model_matrices(set_name, count=None):
    """The first `count` adapted matrices of a set (all when None), model order, std 0.04."""
    layers, hidden = SETS[set_name]
    total = 2 * layers if count is None else min(count, 2 * layers)
    g = torch.Generator().manual_seed(1 if set_name == "bert-base" else 4)
    names = [f"encoder.layer.{i // 2}.attention.self.{'query' if i % 2 == 0 else 'value'}.weight"
             for i in range(total)]
    return [(name, torch.randn(hidden, hidden, generator=g) * 0.04) for name in names]


def python_tolerance(W, gen, max_rank=32, tol=1e-3, outer=ref.OUTER, inner=ref.INNER, tau=ref.TAU,
                     rank_step=ref.RANK_STEP):
    """S of the tolerance variant as core/sparsity/grebsmo.h states it (bench only, not a parity reference)."""
    m, n = W.shape
    cap = min(max_rank, m, n)
    V = torch.randn(1, n, generator=gen, dtype=W.dtype).to(W.device)
    previous = None
    for step in range(outer):
        S = torch.zeros_like(W)
        for _ in range(inner):
            X = W - S
            Q = torch.linalg.qr(X @ V.T, mode="reduced").Q
            V = Q.T @ X
            L = Q @ V
            S = W - L
            S[S.abs() < tau] = 0
        E = W - L - S
        room = cap - V.shape[0]
        norm = E.norm().item()
        if room <= 0 and (norm == 0 or (previous is not None and abs(norm - previous) <= tol * previous)):
            break
        previous = norm
        if room > 0 and step + 1 < outer:
            Q5 = torch.linalg.qr(E[:, : min(rank_step, room)], mode="reduced").Q
            V = torch.cat([V, Q5.T @ E], dim=0)
    return S


def python_omega(matrices, variant):
    """{name: Ω}, seconds: one generator seeded once, matrices in order."""
    gen = torch.Generator().manual_seed(SEED)
    out = {}
    start = time.perf_counter()
    for name, W in matrices:
        W = W.to(DEVICE)
        S = ref.grebsmo_reference(W, gen) if variant == "reference" else python_tolerance(W, gen)
        out[name] = ref.top_c(S.abs().cpu(), C)
    return out, time.perf_counter() - start


def dsee(driver, matrices, args):
    with tempfile.TemporaryDirectory() as folder:
        path, report = io.run_driver(driver, folder, matrices,
                                     ["--threads", "1", "--device", DEVICE, "--seed", str(SEED), "--c", str(C)] + args)
        return io.read_indices(path), report


def overlap(a, b):
    return [len(set(a[name]) & set(b[name])) for name in a]


def summary(values):
    return f"mean {sum(values) / len(values):.1f}, min {min(values)}, max {max(values)} (of {C})"


def load():
    return f"load average {os.getloadavg()[0]:.2f}"


def timing_rows(driver, set_name, matrices, variant, skip_python, workers_list):
    """Times both implementations on `matrices`; returns dsee's Ω per worker count."""
    rows, runs = [], {}
    python = None
    if not skip_python:
        python, seconds = python_omega(matrices, variant)
        rows.append(("python", 1, seconds, load()))
    for workers in workers_list:
        omega, report = dsee(driver, matrices, ["--variant", variant, "--workers", str(workers)])
        runs[workers] = omega
        rows.append(("dsee", workers, report["seconds"], load()))
    say(f"\n### {set_name}, {variant} variant: {len(matrices)} x {matrices[0][1].shape[0]}x{matrices[0][1].shape[1]}\n")
    say("| implementation | workers | seconds | s / matrix | python / this | load after |")
    say("|---|---|---|---|---|---|")
    base = rows[0][2] if python is not None else None
    for label, workers, seconds, after in rows:
        ratio = f"{base / seconds:.2f}x" if base else "-"
        say(f"| {label} | {workers} | {seconds:.1f} | {seconds / len(matrices):.2f} | {ratio} | {after} |")
    if python is not None:
        same = overlap(runs[workers_list[0]], python)
        say(f"\n- dsee vs python, {variant}: identical Ω for {sum(s == C for s in same)} of {len(same)} matrices "
            f"({summary(same)})")
    if len(workers_list) > 1:
        first = runs[workers_list[0]]
        say(f"- {' vs '.join(map(str, workers_list))} workers: identical Ω: "
            f"{all(runs[w] == first for w in workers_list)}; speedup "
            f"{rows[-len(workers_list)][2] / rows[-1][2]:.2f}x")
    return runs[workers_list[0]]


def planted_matrices(count, rank=8, spikes=16):
    g = torch.Generator().manual_seed(2)
    out = []
    for i in range(count):
        factor = (0.04 / rank ** 0.5) ** 0.5
        W = (torch.randn(768, rank, generator=g) * factor) @ (torch.randn(rank, 768, generator=g) * factor)
        W += torch.randn(768, 768, generator=g) * 1e-3
        positions = torch.randperm(768 * 768, generator=g)[:spikes]
        W.view(-1)[positions] = torch.where(torch.arange(spikes) % 2 == 0, -1.0, 1.0)
        out.append((f"planted.{i}.weight", W, set(positions.tolist())))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", required=True, help="path to bench_omega")
    parser.add_argument("--sets", default="bert-base,roberta-large", help="matrix sets (bert-base, roberta-large)")
    parser.add_argument("--tolerance-matrices", type=int, default=None,
                        help="matrices per set for the tolerance variant (default: all)")
    parser.add_argument("--reference-matrices", type=int, default=None,
                        help="matrices per set for the reference variant (default: all; 0 skips it)")
    parser.add_argument("--workers-sets", default="bert-base",
                        help="sets whose reference run is also timed with 2 workers (default bert-base)")
    parser.add_argument("--stability-matrices", type=int, default=2,
                        help="bert-base matrices for the --stability measurement of both variants (0 skips)")
    parser.add_argument("--planted", type=int, default=0, help="planted rank-8 + 16-outlier 768x768 matrices")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="run both implementations on this device (cuda: TF32 off on both sides)")
    parser.add_argument("--skip-python", action="store_true", help="do not time the Python side")
    args = parser.parse_args()
    torch.set_num_threads(1)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        say(f"device: {torch.cuda.get_device_name(0)}")

    say(f"# GreBsmo / Ω benchmark: c = {C}, seed {SEED}, 1 intra-op thread per worker, std 0.04 matrices")
    say(f"machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {load()} at start")
    say(f"arguments: {' '.join(sys.argv[1:])}")
    for set_name in args.sets.split(","):
        tolerance = timing_rows(args.driver, set_name, model_matrices(set_name, args.tolerance_matrices), "tolerance",
                                args.skip_python, [1])
        if args.reference_matrices != 0:
            matrices = model_matrices(set_name, args.reference_matrices)
            workers = [1, 2] if set_name in args.workers_sets.split(",") else [1]
            reference = timing_rows(args.driver, set_name, matrices, "reference", args.skip_python, workers)
            common = [n for n, _ in matrices if n in tolerance]
            if common:
                say(f"- tolerance vs reference Ω overlap ({len(common)} matrices): "
                    f"{summary(overlap({n: tolerance[n] for n in common}, reference))}")

    if args.stability_matrices:
        matrices = model_matrices("bert-base", args.stability_matrices)
        say(f"\n### Stability (--stability): {len(matrices)} bert-base matrices, one ulp of noise on W\n")
        say("| variant | matrices | kept per matrix (of 16) | total kept | seconds (Ω + perturbed Ω) |")
        say("|---|---|---|---|---|")
        for variant in ("tolerance", "reference"):
            start = time.perf_counter()
            _, report = dsee(args.driver, matrices, ["--variant", variant, "--workers", "2", "--stability"])
            kept = [m["kept"] for m in report["matrices"]]
            say(f"| {variant} | {len(kept)} | {', '.join(map(str, kept))} | {sum(kept)} of {C * len(kept)} | "
                f"{time.perf_counter() - start:.1f} |")

    if args.planted:
        planted = planted_matrices(args.planted)
        pairs = [(name, W) for name, W, _ in planted]
        reference, report = dsee(args.driver, pairs, ["--variant", "reference", "--workers", "2"])
        tolerance, _ = dsee(args.driver, pairs, ["--variant", "tolerance", "--max-rank", "8", "--workers", "2"])
        say(f"\nPlanted: {args.planted} x 768x768, rank 8 (entries ~0.04) + N(0, 1e-3²) noise + 16 outliers of ±1")
        for name, _, spikes in planted:
            nnz = next(m["sparse_nonzeros"] for m in report["matrices"] if m["name"] == name)
            say(f"- {name}: reference variant: nnz(S) = {nnz}, outliers in Ω {len(set(reference[name]) & spikes)}"
                f"/16; tolerance (max rank 8): outliers in Ω {len(set(tolerance[name]) & spikes)}/16; "
                f"overlap {len(set(reference[name]) & set(tolerance[name]))}/16")
    say(f"\nfinished, {load()}")


if __name__ == "__main__":
    main()
