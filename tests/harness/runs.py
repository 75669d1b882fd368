"""`dsee run` on a tiny recipe, for the tests that run the whole pipeline
(tests/mpi/test_run_ranks.py on many ranks, tests/gpu/test_run_cuda.py on
CUDA): the recipe, running a command with its time, reading HDF5 datasets
back, run directories' files, and a tiny STS-B task (folder, vocabulary,
random BERT) for float metrics."""
import json
import os
import random
import subprocess
import time

import h5py
import numpy as np
from safetensors.numpy import load_file

from harness.checks import check, check_close
from harness.models import tiny_bert_for_vocabulary, wordpiece_vocabulary


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


def recipe_text(tables):
    """A recipe as TOML text from {table: {key: value}} (strings, numbers,
    booleans, lists of strings)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(v) if isinstance(v, float) else json.dumps(v)
    return "".join(f"[{table}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items())
                   for table, keys in tables.items())


def write_recipe(folder, text, name="tiny.toml"):
    """Writes a recipe into `folder`; returns its path."""
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def run_recipe_file(dsee, recipe, label):
    """`dsee run recipe`; fails the test with the output's tail unless it exits 0."""
    result = subprocess.run([dsee, "run", recipe], capture_output=True, text=True)
    check(f"dsee run of {label} exits 0", result.returncode == 0,
          f"{result.returncode}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def run_command(command, timeout, env=None):
    """(exit status, stdout and stderr together, seconds) of a finished command."""
    start = time.monotonic()
    p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout, time.monotonic() - start


def demo_runs_on_one_and_two_ranks(dsee, mpiexec, out_dir, args, timeout=120):
    """`dsee run recipes/demo.toml` with `args` (--set pairs) in one process
    and under mpirun -n 2, each in its own out folder: {1: run dir, 2: run dir};
    fails the test when either exits non-zero."""
    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "demo.toml")
    runs = {}
    for n in (1, 2):
        out = os.path.join(str(out_dir), f"out{n}")
        command = [dsee, "run", recipe, "--set", f"run.out_dir={out}", *args]
        if n > 1:
            command = [mpiexec, "-n", str(n), "--oversubscribe", "--bind-to", "none", *command]
        rc, text, seconds = run_command(command, timeout)
        print(f"--- {n} rank(s): exit {rc} after {seconds:.1f} s")
        check(f"{n} rank(s): dsee run exits 0", rc == 0, text if rc else "")
        runs[n] = os.path.join(out, "demo")
    return runs


def h5_datasets(path):
    """Every dataset of the HDF5 file, by path, as numpy values."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def check_trainables(label, base, other):
    """The trained and re-tuned tensors of two run directories within 1e-6 / 1e-5: re-tuning starts from the
    trained tensors, so rounding carried over grows a little."""
    for stage_file in ("train", "retune"):
        a = load_file(os.path.join(base, f"trainable-{stage_file}.safetensors"))
        b = load_file(os.path.join(other, f"trainable-{stage_file}.safetensors"))
        check(f"{label}: trainable-{stage_file} names", a.keys() == b.keys(), f"{sorted(set(a) ^ set(b))}")
        names = sorted(a)
        check_close(f"{label}: trainable-{stage_file}.safetensors over {sum(v.size for v in a.values())} values",
                    np.concatenate([b[k].reshape(-1) for k in names]), np.concatenate([a[k].reshape(-1) for k in names]),
                    abs=1e-6 if stage_file == "train" else 1e-5, reference="the first run")
        check("the trainable tensors are not all zero (something was trained)",
              not all(np.array_equal(a[k], np.zeros_like(a[k])) for k in a))


def check_logged_losses(label, base, other):
    """metrics.jsonl: the same records; the logged train losses (the global mean) within 1e-5."""
    la = [json.loads(line) for line in open(os.path.join(base, "metrics.jsonl"))]
    lb = [json.loads(line) for line in open(os.path.join(other, "metrics.jsonl"))]
    check(f"{label}: metrics.jsonl records agree in kind and number", [x["kind"] for x in la] == [y["kind"] for y in lb],
          f"{len(lb)} vs {len(la)}")
    train = [(x["loss"], y["loss"]) for x, y in zip(la, lb) if x["kind"] == "train"]
    check_close(f"{label}: logged losses of {len(train)} steps", [y for _, y in train], [x for x, _ in train],
                rel_each=1e-5, floor=1.0, reference="the first run")


def compare_runs(base, other, label, stages=("train", "prune", "retune", "eval")):
    """A resumed run against the straight one: trainable tensors, dev metrics, steps, logged losses."""
    if "retune" in stages:
        check_trainables(label, base, other)
    else:
        a = load_file(os.path.join(base, "trainable-train.safetensors"))
        b = load_file(os.path.join(other, "trainable-train.safetensors"))
        names = sorted(a)
        check_close(f"{label}: trainable-train.safetensors", np.concatenate([b[k].reshape(-1) for k in names]),
                    np.concatenate([a[k].reshape(-1) for k in names]), abs=1e-6, reference="the straight run")
    for stage in stages:
        a = json.load(open(os.path.join(base, "stages", f"{stage}.json")))
        b = json.load(open(os.path.join(other, "stages", f"{stage}.json")))
        check(f"{label}: stages/{stage}.json dev metrics equal the straight run's", a["dev"] == b["dev"],
              f"{b['dev']} vs {a['dev']}")
        if stage in ("train", "retune"):
            check(f"{label}: {stage} took the straight run's steps", a["steps"] == b["steps"],
                  f"{b['steps']} vs {a['steps']}")
    check_logged_losses(label, base, other)


def files_under(root):
    """Every file below `root`, as paths relative to it."""
    out = set()
    for d, _, names in os.walk(root):
        for name in names:
            out.add(os.path.relpath(os.path.join(d, name), root))
    return out


STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"]
STSB_WORDS = "the a quick brown fox dog cat jumps runs over under lazy happy sad movie film plot great bad".split()


def tiny_stsb(folder, n_train=16, n_dev=23, seed=5):
    """A tiny STS-B task in `folder`: data/ (train.tsv and dev.tsv in the
    distribution's columns, random sentences and scores in [0, 5]) and model/
    (a random 2-layer BERT, hidden size 32, saved by transformers with a
    WordPiece vocabulary trained on the sentences). Returns (model, data)."""
    rng = random.Random(seed)
    data, model = os.path.join(folder, "data"), os.path.join(folder, "model")
    os.makedirs(data, exist_ok=True)
    sentences = []
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        with open(os.path.join(data, name), "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(STSB_HEADER) + "\n")
            for i in range(n):
                a, b = (" ".join(rng.choice(STSB_WORDS) for _ in range(rng.randint(2, 9))) for _ in range(2))
                sentences += [a, b]
                f.write("\t".join([str(i), "main", "x", "2012", str(i), "s", "s", a, b, f"{rng.uniform(0, 5):.3f}"])
                        + "\n")
    corpus = os.path.join(folder, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(sentences))
    wordpiece_vocabulary(corpus, model, vocab_size=100, min_frequency=1)
    with open(os.path.join(model, "tokenizer_config.json"), "w") as f:
        f.write('{"do_lower_case": true}')
    tiny_bert_for_vocabulary(model)
    return model, data
