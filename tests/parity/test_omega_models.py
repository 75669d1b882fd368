"""Parity: `dsee omega` on Hugging Face model folders against
bench/grebsmo_reference.py.

For a small random BERT, RoBERTa or GPT-2 made with transformers
(save_pretrained), this module enumerates the adapted matrices from the HF
state dict itself, in the order docs/method.md ('Random draws') gives (layers
in order, query before value; GPT-2: c_attn's Conv1D weight [in, 3·out]
transposed to out×in and split into its q and v thirds), runs the
independent Python reference on them with the same seed and one intra-op
thread, and requires `dsee omega --threads 1` to write identical Ω (and, for
GreBsmo, report the same number of non-zeros of S). The Ω file is read with
h5py: dataset names, int64 [c], the "shape" attribute, the file attributes.

Cases per family:
  grebsmo reference, 100 outer steps  the documented loop as written; on
      these 64×64 matrices the rank reaches 64, S = 0 and Ω is the tie-break
  grebsmo reference, 6 outer steps    rank 26 < 64: S keeps many entries and Ω
      depends on every rounding of the loop (BERT: also with 2 workers)
  magnitude, random                   orientation (out×in) and the RNG order
  control                             another seed gives another Ω

The tolerance variant has no Python implementation (it is dsee's own
early-stopping variant, not the documented loop), so it is not compared here.
"""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest
import torch
import transformers

import grebsmo_reference as ref
from harness import check, check_equal

torch.set_num_threads(1)
SEED = 31
C = 16


def make_model(family, folder):
    """A random HF model (hidden 64, 2 layers, 4 heads) saved with save_pretrained."""
    torch.manual_seed({"bert": 1, "roberta": 2, "gpt2": 3}[family])
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, n_positions=16,
                                         bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2LMHeadModel(config)
    else:
        cls = {"bert": (transformers.BertConfig, transformers.BertForSequenceClassification),
               "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification)}[family]
        config = cls[0](vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=24)
        model = cls[1](config)
    model.save_pretrained(folder)
    return model.state_dict()


def adapted_from_state_dict(state):
    """[(name, W out×in)] in the documented order, from HF parameter names alone."""
    found = []
    for key, tensor in state.items():
        m = re.search(r"(?:^|\.)(encoder\.layer\.(\d+)\.attention\.self\.(query|value)\.weight)$", key)
        if m:
            found.append(((int(m.group(2)), 0 if m.group(3) == "query" else 1), m.group(1), tensor.float().clone()))
            continue
        m = re.search(r"(?:^|\.)(h\.(\d+)\.attn\.c_attn\.weight)$", key)
        if m:
            W = tensor.float().t().contiguous()  # Conv1D [in, 3·out] → out×in [3·out, in]
            hidden = W.shape[1]
            found.append(((int(m.group(2)), 0), m.group(1) + ":q", W[:hidden].contiguous()))
            found.append(((int(m.group(2)), 1), m.group(1) + ":v", W[2 * hidden:].contiguous()))
    found.sort(key=lambda item: item[0])
    return [(name, W) for _, name, W in found]


def run_dsee(dsee, model_dir, out, args, seed=SEED):
    cmd = [dsee, "omega", "--model", model_dir, "--out", out, "--threads", "1", "--seed", str(seed),
           "--c", str(C)] + args
    done = subprocess.run(cmd, capture_output=True, text=True)
    check(f"dsee omega {' '.join(args)} exits 0", done.returncode == 0, f"{done.returncode}: {done.stderr[-2000:]}")
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"\] (\S+) \(\d+×\d+\): [\d.]+ s, S non-zeros (\d+)", done.stderr)}


def read_file(path, matrices, method, variant, seed=SEED):
    omega = {}
    with h5py.File(path, "r") as h:
        check_equal("h5py: dataset names", sorted(h.keys()), sorted(name for name, _ in matrices))
        check("h5py: file attributes", h.attrs["method"] == method and h.attrs["variant"] == variant
              and int(h.attrs["c"]) == C and int(h.attrs["seed"]) == seed, f"{dict(h.attrs)}")
        for name, W in matrices:
            d = h[name]
            check(f"h5py: {name} int64 [{C}] with shape attribute {list(W.shape)}",
                  d.dtype == np.int64 and d.shape == (C,) and list(d.attrs["shape"]) == list(W.shape),
                  f"{d.dtype} {d.shape} {list(d.attrs['shape'])}")
            omega[name] = d[:].tolist()
    return omega


def python_omega(matrices, method, outer, seed=SEED):
    if method != "grebsmo":
        return ref.omega_for_matrices(matrices, C, seed, method), {}
    # omega_for_matrices' loop, keeping S to count its non-zeros as well.
    gen = torch.Generator().manual_seed(seed)
    omega, nonzeros = {}, {}
    for name, W in matrices:
        S = ref.grebsmo_reference(W, gen, outer)
        omega[name] = ref.top_c(S.abs(), C)
        nonzeros[name] = int((S != 0).sum())
    return omega, nonzeros


def compare(dsee, label, model_dir, folder, matrices, method, outer=100, extra=()):
    out = os.path.join(folder, "omega.h5")
    args = ["--method", method, "--variant", "reference"] + (["--outer", str(outer)] if outer != 100 else [])
    dsee_nonzeros = run_dsee(dsee, model_dir, out, args + list(extra))
    got = read_file(out, matrices, method, "reference")
    want, want_nonzeros = python_omega(matrices, method, outer)
    for name, W in matrices:
        check_equal(f"{label}: {name} {tuple(W.shape)} identical Ω", got.get(name), want[name])
        if method == "grebsmo":
            check_equal(f"{label}: {name} nnz(S), dsee vs python", dsee_nonzeros.get(name), want_nonzeros[name])
    return want, want_nonzeros


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_dsee_omega_matches_reference(family, dsee, tmp_path):
    folder = str(tmp_path)
    model_dir = os.path.join(folder, "model")
    matrices = adapted_from_state_dict(make_model(family, model_dir))
    check(f"{family}: 4 adapted matrices in the state dict", len(matrices) == 4, f"{[n for n, _ in matrices]}")
    _, nz = compare(dsee, f"{family} grebsmo reference, 100 outer", model_dir, folder, matrices, "grebsmo")
    check(f"{family}: at full rank S is empty (Ω is the tie-break)", all(v == 0 for v in nz.values()), f"{nz}")
    six, nz = compare(dsee, f"{family} grebsmo reference, 6 outer", model_dir, folder, matrices, "grebsmo", outer=6)
    check(f"{family}: after 6 outer steps S has more than c non-zeros", all(v > C for v in nz.values()), f"{nz}")
    if family == "bert":  # worker invariance (also in the unit tests and test_omega.py), once
        compare(dsee, f"{family} grebsmo reference, 6 outer, 2 workers", model_dir, folder, matrices, "grebsmo",
                outer=6, extra=["--workers", "2"])
    compare(dsee, f"{family} magnitude", model_dir, folder, matrices, "magnitude")
    compare(dsee, f"{family} random", model_dir, folder, matrices, "random")
    # The comparison can fail: another seed changes Ω.
    out = os.path.join(folder, "other.h5")
    run_dsee(dsee, model_dir, out, ["--outer", "6"], seed=SEED + 1)
    other = read_file(out, matrices, "grebsmo", "reference", seed=SEED + 1)
    check(f"{family} control: seed + 1 changes Ω", any(other[name] != six[name] for name, _ in matrices))
