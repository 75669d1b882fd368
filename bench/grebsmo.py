"""GreBsmo / Ω benchmark: BERT-base-sized (768x768) matrices, both variants.

Times, in one run on one machine, one intra-op thread per worker everywhere:
  python     the spec's reference loop in plain Python torch (the parity
             test's reference), matrices one after another
  dsee       reference and tolerance variants through omega_driver, with 1
             and 2 workers (matrices concurrently)
and reports Ω agreement (dsee reference vs Python: identical sets expected),
the tolerance variant's overlap with the reference variant, the stability of
each variant under one ulp of noise on W, and on planted matrices (rank 8 +
16 outliers) how many outliers each variant puts in Ω.
"""
import argparse
import os
import platform
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
import grebsmo_reference as ref  # noqa: E402
import omega_driver_io as io  # noqa: E402

C = 16
SEED = 0


def bert_base_matrices(count):
    """`count` of BERT-base's 24 adapted matrices (768x768, std 0.04), model order."""
    g = torch.Generator().manual_seed(1)
    names = [f"bert.encoder.layer.{i // 2}.attention.self.{'query' if i % 2 == 0 else 'value'}.weight"
             for i in range(count)]
    return [(name, torch.randn(768, 768, generator=g) * 0.04) for name in names]


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


def dsee(driver, matrices, args):
    with tempfile.TemporaryDirectory() as folder:
        path, report = io.run_driver(driver, folder, matrices,
                                     ["--threads", "1", "--seed", str(SEED), "--c", str(C)] + args)
        return io.read_indices(path), report


def overlap(a, b):
    return [len(set(a[name]) & set(b[name])) for name in a]


def summary(values):
    return f"mean {sum(values) / len(values):.1f}, min {min(values)}, max {max(values)} (of {C})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", required=True, help="path to omega_driver")
    parser.add_argument("--matrices", type=int, default=24, help="how many of BERT-base's 24 matrices (default 24)")
    parser.add_argument("--planted", type=int, default=2, help="planted rank-8 + 16-outlier matrices (default 2)")
    parser.add_argument("--skip-python", action="store_true", help="do not time the Python reference")
    args = parser.parse_args()
    torch.set_num_threads(1)

    matrices = bert_base_matrices(args.matrices)
    print(f"# GreBsmo / Ω benchmark: {args.matrices} x 768x768 (std 0.04), c = {C}, seed {SEED}, "
          f"1 intra-op thread per worker")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    rows = []
    if not args.skip_python:
        start = time.perf_counter()
        python_omega = ref.omega_for_matrices(matrices, C, SEED)
        python_seconds = time.perf_counter() - start
        rows.append(("python reference (spec loop)", 1, python_seconds))
    runs = {}
    for variant in ("reference", "tolerance"):
        for workers in (1, 2):
            omega, report = dsee(args.driver, matrices, ["--variant", variant, "--workers", str(workers)])
            runs[(variant, workers)] = omega
            rows.append((f"dsee {variant}", workers, report["seconds"]))
    base = rows[0][2]
    print("| implementation | workers | seconds | s / matrix | vs first row |")
    print("|---|---|---|---|---|")
    for label, workers, seconds in rows:
        print(f"| {label} | {workers} | {seconds:.2f} | {seconds / len(matrices):.2f} | {base / seconds:.1f}x |")
    print()
    same_workers = all(runs[(v, 1)] == runs[(v, 2)] for v in ("reference", "tolerance"))
    print(f"- 1 vs 2 workers give identical Ω (both variants): {same_workers}")
    if not args.skip_python:
        same = overlap(runs[("reference", 1)], python_omega)
        print(f"- dsee reference vs Python reference: identical Ω for {sum(s == C for s in same)} of "
              f"{len(same)} matrices ({summary(same)})")
    print(f"- tolerance vs reference Ω overlap: {summary(overlap(runs[('tolerance', 1)], runs[('reference', 1)]))}")
    for variant in ("reference", "tolerance"):
        _, report = dsee(args.driver, matrices, ["--variant", variant, "--workers", "2", "--stability"])
        kept = [m["kept"] for m in report["matrices"]]
        print(f"- stability, {variant}: Ω entries kept under one ulp of noise on W: {summary(kept)}")

    if args.planted:
        planted = planted_matrices(args.planted)
        pairs = [(name, W) for name, W, _ in planted]
        reference, report = dsee(args.driver, pairs, ["--variant", "reference", "--workers", "2"])
        tolerance, _ = dsee(args.driver, pairs, ["--variant", "tolerance", "--max-rank", "8", "--workers", "2"])
        print(f"\nPlanted: {args.planted} x 768x768, rank 8 (entries ~0.04) + N(0, 1e-3²) noise + 16 outliers of ±1")
        for name, _, spikes in planted:
            nnz = next(m["sparse_nonzeros"] for m in report["matrices"] if m["name"] == name)
            print(f"- {name}: reference variant: nnz(S) = {nnz}, outliers in Ω {len(set(reference[name]) & spikes)}"
                  f"/16; tolerance (max rank 8): outliers in Ω {len(set(tolerance[name]) & spikes)}/16; "
                  f"overlap {len(set(reference[name]) & set(tolerance[name]))}/16")


if __name__ == "__main__":
    main()
