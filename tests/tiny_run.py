"""Shared pieces of the scripts that check `dsee run` on a tiny DSEE recipe
(tests/mpi/test_run_ranks.py on many ranks, tests/gpu/test_run_cuda.py on
CUDA, tests/slurm/test_slurm.py under Slurm): the recipe, the failure exit,
reading HDF5 datasets back, the comparison of a stopped-and-resumed run with
a straight one, and a tiny STS-B task (folder, vocabulary, random BERT) for
float metrics."""
import json
import os
import random
import sys

import h5py
import numpy as np
from safetensors.numpy import load_file


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


def compare_runs(base, other, label, stages=("train", "prune", "retune", "eval")):
    """Run directory `other` (stopped and resumed) ends where the straight run `base` ends: trainable
    tensors within 1e-6 (re-tuned 1e-5), the same dev metrics and step counts per stage, and the same
    metrics.jsonl records (losses within 1e-5)."""
    for stage_file in [s for s in ("train", "retune") if s in stages]:
        a = load_file(os.path.join(base, f"trainable-{stage_file}.safetensors"))
        b = load_file(os.path.join(other, f"trainable-{stage_file}.safetensors"))
        worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        print(f"    {label}: trainable-{stage_file}.safetensors max |difference| {worst:.2e}")
        if worst > (1e-6 if stage_file == "train" else 1e-5):
            fail(f"{label}: trainable-{stage_file} differs by {worst}")
    for stage in stages:
        a = json.load(open(os.path.join(base, "stages", f"{stage}.json")))
        b = json.load(open(os.path.join(other, "stages", f"{stage}.json")))
        if a["dev"] != b["dev"]:
            fail(f"{label}: stages/{stage}.json dev metrics {b['dev']} != {a['dev']}")
        if stage in ("train", "retune") and a["steps"] != b["steps"]:
            fail(f"{label}: {stage} took {b['steps']} steps, the straight run {a['steps']}")
    la = [json.loads(l) for l in open(os.path.join(base, "metrics.jsonl"))]
    lb = [json.loads(l) for l in open(os.path.join(other, "metrics.jsonl"))]
    if [x["kind"] for x in la] != [y["kind"] for y in lb]:
        fail(f"{label}: metrics.jsonl records differ in kind or number ({len(lb)} vs {len(la)})")
    for x, y in zip(la, lb):
        if x["kind"] == "train" and abs(x["loss"] - y["loss"]) > 1e-5 * max(1.0, abs(x["loss"])):
            fail(f"{label}: step {x['step']} loss {y['loss']} != straight run's {x['loss']}")
    print(f"    {label}: dev metrics, steps and {len(la)} metrics.jsonl records agree with the straight run")


STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"]
STSB_WORDS = "the a quick brown fox dog cat jumps runs over under lazy happy sad movie film plot great bad".split()


def tiny_stsb(folder, n_train=16, n_dev=23, seed=5):
    """A tiny STS-B task in `folder`: data/ (train.tsv and dev.tsv in the
    distribution's columns, random sentences and scores in [0, 5]) and model/
    (a random 2-layer BERT, hidden size 32, saved by transformers with a
    WordPiece vocabulary trained on the sentences). Returns (model, data)."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel
    rng = random.Random(seed)
    data, model = os.path.join(folder, "data"), os.path.join(folder, "model")
    os.makedirs(data, exist_ok=True)
    os.makedirs(model, exist_ok=True)
    sentences = []
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        with open(os.path.join(data, name), "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(STSB_HEADER) + "\n")
            for i in range(n):
                a, b = (" ".join(rng.choice(STSB_WORDS) for _ in range(rng.randint(2, 9))) for _ in range(2))
                sentences += [a, b]
                f.write("\t".join([str(i), "main", "x", "2012", str(i), "s", "s", a, b, f"{rng.uniform(0, 5):.3f}"])
                        + "\n")
    with open(os.path.join(folder, "corpus.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(sentences))
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train([os.path.join(folder, "corpus.txt")], vocab_size=100, min_frequency=1)
    tokenizer.save_model(model)
    with open(os.path.join(model, "tokenizer_config.json"), "w") as f:
        f.write('{"do_lower_case": true}')
    vocab_size = sum(1 for _ in open(os.path.join(model, "vocab.txt"), encoding="utf-8"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=64)
    BertModel(config).save_pretrained(model, safe_serialization=True)
    return model, data
