"""BERT tickets: prune.kind = imp (recipes/stage_prune_imp.cpp; docs/tuning.md,
'BERT tickets (IMP)') checked outside dsee.

One `dsee run` of the demo with run.compare arms full and imp (tuning.method =
full, 2 rounds to prune.sparsity 0.6, one epoch per training, export.format =
hf), then:

  round one   the masks of round 1 (imp/masks-1.h5, read with h5py) are
              torch's global magnitude pruning of the weights the train stage
              saved (trainable-train.safetensors): the pool is every encoder
              projection's weight (query, key, value, attention.output.dense,
              intermediate.dense, output.dense of each layer) and
              pooler.dense's, concatenated layer by layer in that order, each
              [out, in] row-major; the round(N·(1 − 0.4^(1/2))) smallest |W|
              go, ties to the lower flat index (a stable ascending sort).
  exactness   masks.h5 removes exactly round(0.6·N) entries, all of round 1's
              among them, and nothing outside the pool; the run's summary and
              `dsee count` of the export count N − round(0.6·N) + the
              parameters outside the pool as non-zero.
  export      transformers' AutoModelForSequenceClassification on the export
              gives the logits of dsee's eval stage (predictions-dev.safetensors)
              within 1e-5, and its pool weights are zero exactly where masks.h5
              is 0; `dsee export` of the finished run (rebuilt from its files:
              the train tensors, masks.h5, the retune tensors) writes the same
              tensors.
"""
import math
import os
import subprocess

import h5py
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from harness import check, check_close, check_equal
from harness.runs import run_recipe_file

SPARSITY, ROUNDS = 0.6, 2
POOL = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")


def half_up(x):
    return int(math.floor(x + 0.5))


def pool_names(layers):
    return [f"encoder.layer.{i}.{p}" for i in range(layers) for p in POOL] + ["pooler.dense"]


def read_masks(path):
    """masks.h5 (core/sparsity/prune_plan.h's layout) as {module: bool [out, in]}."""
    masks = {}
    with h5py.File(path, "r") as f:
        for name, dataset in f["masks"].items():
            rows, cols = (int(v) for v in dataset.attrs["shape"])
            numel = int(dataset.attrs["numel"])
            encoding = dataset.attrs["encoding"]
            encoding = encoding.decode() if isinstance(encoding, bytes) else encoding
            data = dataset[()]
            if encoding == "bits":
                flat = np.unpackbits(data)[:numel]
            else:
                listed = 1 if encoding == "one_indices" else 0
                flat = np.full(numel, 1 - listed, np.uint8)
                flat[data] = listed
            masks[name] = torch.from_numpy(flat.reshape(rows, cols).astype(bool))
    return masks


@pytest.fixture(scope="module")
def run(dsee, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("imp"))
    recipe = os.path.join(work, "imp.toml")
    with open(recipe, "w") as f:
        f.write(f"""[run]
name = "tickets"
out_dir = "{work}"
compare = ["full: tuning.method=full prune.kind=none",
           "imp: tuning.method=full prune.kind=imp prune.imp_rounds={ROUNDS} prune.sparsity={SPARSITY}"]
[task]
train_size = 256
dev_size = 64
[train]
lr = 1e-3
epochs = 1
batch_size = 32
[retune]
epochs = 1
[export]
format = "hf"
""")
    run_recipe_file(dsee, recipe, "the arms full and imp")
    return os.path.join(work, "tickets")


def test_round_one_is_torch_global_magnitude(run):
    arm = os.path.join(run, "imp")
    trained = load_file(os.path.join(arm, "trainable-train.safetensors"))
    layers = 1 + max(int(n.split(".")[2]) for n in trained if n.startswith("encoder.layer."))
    names = pool_names(layers)
    weights = [trained[n + ".weight"] for n in names]
    scores = torch.cat([w.abs().float().flatten() for w in weights])
    n = scores.numel()
    k = half_up(n * (1 - (1 - SPARSITY) ** (1 / ROUNDS)))
    removed = torch.zeros(n, dtype=torch.bool)
    removed[torch.sort(scores, stable=True).indices[:k]] = True
    masks = read_masks(os.path.join(arm, "imp", "masks-1.h5"))
    check_equal("round 1: the masked projections", sorted(masks), sorted(names))
    got = torch.cat([masks[m].flatten() for m in names]).logical_not()
    check_equal("round 1: removed entries", int(got.sum()), k)
    check("round 1: the mask is torch's global magnitude pruning", torch.equal(got, removed),
          f"{int((got != removed).sum())} entries differ")


def test_final_masks_exact_and_counted(run, dsee):
    arm = os.path.join(run, "imp")
    final = read_masks(os.path.join(arm, "masks.h5"))
    first = read_masks(os.path.join(arm, "imp", "masks-1.h5"))
    names = sorted(final)
    n = sum(m.numel() for m in final.values())
    k = half_up(SPARSITY * n)
    removed = sum(int((~m).sum()) for m in final.values())
    check_equal("masks.h5: removed entries = round(s·N)", removed, k)
    check_equal("masks.h5: the same projections as round 1", names, sorted(first))
    for name in names:
        check(f"{name}: round 1's removals stay removed", not bool((final[name] & ~first[name]).any()))
    summary = __import__("json").load(open(os.path.join(arm, "summary.json")))
    total = summary["stages"]["eval"]["parameters"]
    check_equal("summary: non-zero parameters", summary["nonzero_parameters"], total - k)
    counted = subprocess.run([dsee, "count", "--model", os.path.join(arm, "export"), "--method", "full"],
                             capture_output=True, text=True)
    check("dsee count of the export exits 0", counted.returncode == 0, counted.stderr)
    check(f"dsee count: {total - k:,} non-zero", f"parameters non-zero  {total - k:,} (" in counted.stdout,
          counted.stdout)


def test_hf_export_gives_dsee_logits_and_zeros(run):
    arm = os.path.join(run, "imp")
    dev = load_file(os.path.join(run, "data", "dev.safetensors"))
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(
        os.path.join(arm, "export"), attn_implementation="eager").eval()
    with torch.no_grad():
        logits = exported(input_ids=dev["input_ids"]).logits
    own = load_file(os.path.join(arm, "predictions-dev.safetensors"))["dev.logits"]
    check_close("imp: hf export logits vs dsee's eval logits", logits, own, rel=1e-5, reference="dsee")
    tensors = load_file(os.path.join(arm, "export", "model.safetensors"))
    for name, mask in read_masks(os.path.join(arm, "masks.h5")).items():
        weight = tensors["bert." + name + ".weight"]
        check_equal(f"{name}: exported zeros are the mask's", (weight == 0), ~mask)


def test_dsee_export_rebuilds_the_same_model(run, dsee, tmp_path):
    arm = os.path.join(run, "imp")
    out = str(tmp_path / "again")
    result = subprocess.run([dsee, "export", arm, "--format", "hf", "--out", out], capture_output=True, text=True)
    check("dsee export of the finished IMP run exits 0", result.returncode == 0, result.stderr[-2000:])
    again = load_file(os.path.join(out, "model.safetensors"))
    first = load_file(os.path.join(arm, "export", "model.safetensors"))
    check_equal("dsee export: the tensors' names", sorted(again), sorted(first))
    for name in first:
        check(f"dsee export: {name} equals the run's export", torch.equal(again[name], first[name]))
