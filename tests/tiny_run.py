"""Shared pieces of the scripts that check `dsee run` on a tiny DSEE recipe
(tests/mpi/test_run_ranks.py on many ranks, tests/gpu/test_run_cuda.py on
CUDA): the recipe, the failure exit, reading HDF5 datasets back, and a tiny
STS-B task (folder, vocabulary, random BERT) for float metrics."""
import os
import random
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
