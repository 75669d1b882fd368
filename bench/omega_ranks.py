"""Ω computed by one process against Ω split across ranks (omega.split_across_ranks).

Builds a random BERT model of the given shape (transformers, saved with
save_pretrained; default BERT-base: 12 layers, hidden 768, so 24 adapted
768×768 matrices), a WordPiece vocabulary trained by `tokenizers` and a few
SST-2 lines, then runs only the omega stage of `dsee run` (run.stages =
["omega"]) as one process and under `mpirun -n N` with
omega.split_across_ranks = true. Prints the omega stage's seconds
(stages/omega.json), the speed-up over one process, and whether omega.h5
holds exactly the one-process datasets. GreBsmo uses one intra-op thread per
matrix in every run (OmegaOptions::threads), so N ranks on N free cores should
approach N×; the development VM has 2 cores.

usage: omega_ranks.py --dsee build/bin/dsee [--mpiexec mpiexec] [--ranks 2]
                      [--variant reference] [--layers 12] [--hidden 768] [--c 64]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np


def h5_datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def make_model(folder, layers, hidden):
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification

    corpus = os.path.join(folder, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(f"a short sentence number {i} about the movie" for i in range(50)))
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train([corpus], vocab_size=200, min_frequency=1)
    model_dir = os.path.join(folder, "model")
    os.makedirs(model_dir)
    tokenizer.save_model(model_dir)
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True}, f)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden)
    BertForSequenceClassification(config).save_pretrained(model_dir, safe_serialization=True)
    data_dir = os.path.join(folder, "sst2")
    os.makedirs(data_dir)
    for name, n in (("train.tsv", 16), ("dev.tsv", 8)):
        with open(os.path.join(data_dir, name), "w") as f:
            f.write("sentence\tlabel\n")
            for i in range(n):
                f.write(f"a short sentence number {i} about the movie\t{i % 2}\n")
    return model_dir, data_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsee", required=True)
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--ranks", default="2", help="comma-separated rank counts to compare with one process")
    parser.add_argument("--variant", default="reference", choices=("reference", "tolerance"))
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--c", type=int, default=64)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="dsee-omega-ranks-")
    try:
        model_dir, data_dir = make_model(work, args.layers, args.hidden)
        recipe = os.path.join(work, "recipe.toml")
        with open(recipe, "w") as f:
            f.write(f'[run]\nstages = ["omega"]\n[model]\npath = "{model_dir}"\n'
                    f'[task]\nname = "sst2"\ndata_dir = "{data_dir}"\nmax_seq_length = 16\n'
                    f'[tuning]\nmethod = "dsee"\n[omega]\nc = {args.c}\nvariant = "{args.variant}"\n')
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1")
        print(f"# Ω split across ranks ({platform.node()}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f} at start)")
        print(f"model: random BERT, {args.layers} layers, hidden {args.hidden} ({2 * args.layers} adapted "
              f"{args.hidden}x{args.hidden} matrices), GreBsmo {args.variant} variant, c = {args.c}\n")
        print("| ranks | omega stage s | speed-up | omega.h5 equals 1 process |")
        print("|---|---|---|---|")
        base = None
        for n in [1] + [int(x) for x in args.ranks.split(",")]:
            out = os.path.join(work, f"runs-{n}")
            command = [args.dsee, "run", recipe, "--set", f"run.out_dir={out}"]
            if n > 1:
                command = [args.mpiexec, "-n", str(n), "--bind-to", "none"] + command + [
                    "--set", "omega.split_across_ranks=true"]
            start = time.monotonic()
            r = subprocess.run(command, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                sys.exit(f"{' '.join(command)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
            run_dir = os.path.join(out, "run")
            seconds = json.load(open(os.path.join(run_dir, "stages", "omega.json")))["seconds"]
            omega = h5_datasets(os.path.join(run_dir, "omega.h5"))
            if base is None:
                base = (seconds, omega)
                same = "-"
            else:
                same = "yes" if omega.keys() == base[1].keys() and all(
                    np.array_equal(omega[k], base[1][k]) for k in omega) else "NO"
            print(f"| {n} | {seconds:.1f} | {base[0] / seconds:.2f}x | {same} |  (wall {time.monotonic() - start:.1f} s)",
                  flush=True)
        print(f"\nfinished, load average {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
