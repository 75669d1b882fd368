"""`dsee run` on a tiny recipe, for the tests that run the whole pipeline
(tests/mpi/test_run_ranks.py on many ranks, tests/gpu/test_run_cuda.py on
CUDA): the recipe, running a command with its time, reading HDF5 datasets
back, run directories' files, and a tiny STS-B task (folder, vocabulary,
random BERT) for float metrics."""
import os
import random
import subprocess
import time

import json

import h5py

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


def run_command(command, timeout, env=None):
    """(exit status, stdout and stderr together, seconds) of a finished command."""
    start = time.monotonic()
    p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout, time.monotonic() - start


def h5_datasets(path):
    """Every dataset of the HDF5 file, by path, as numpy values."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


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
