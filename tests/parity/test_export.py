"""Parity of `dsee export` (recipes/export.h) with transformers and peft.

A tiny demo recipe (128 training / 64 dev sequences, one epoch) runs four arms
side by side: lora (whose recipe also sets export.format = hf, so the
pipeline's export stage writes one too), dsee + unstructured pruning, dsee +
head pruning, and lora + unstructured pruning. For each arm the final model is
rebuilt here in Python, independently of dsee's export code, from the base
weights (transformers, the demo's generated model) and the run's own files:
trainable-<stage>.safetensors (A, B, S values, head), omega.h5 (Ω, h5py) and
masks.h5 (masks unpacked with numpy, removed heads cut out of Q/K/V and
the attention output as transformers 4's prune_heads did):
    W' = (W + s·(B·A + P_Ω(S))) ⊙ M   (adapted, masked; retune.mask_update)
    W' = W ⊙ M                         (masked only)
    W' = W + s·(B·A + P_Ω(S))          (adapted only)
That reference's dev accuracy must equal the one dsee recorded in
stages/eval.json for its unmerged model, and:
  hf    transformers' AutoModelForSequenceClassification on `dsee export
        --format hf` gives the reference's logits and dsee's own (the eval
        stage's predictions-dev.safetensors) within 1e-5 relative
        (max |diff| / max |ref|); masked entries are exactly zero; a head
        arm's config.json lists pruned_heads; the pipeline's export stage
        wrote the same bytes as `dsee export`.
  peft  lora: peft.PeftModel.from_pretrained(base, export) gives the same
        logits within 1e-5, keys in PEFT's naming; dsee and pruned lora:
        refused with the reason.
  Also refused: a run directory that is not finished, one that does not exist.
"""
import json
import os
import shutil
import subprocess
import tomllib

import h5py
import numpy as np
import pytest
import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file

from harness import check, check_close

TOLERANCE = 1e-5


def run_dsee(binary, *args):
    return subprocess.run([binary, *args], capture_output=True, text=True)


def load_base(path):
    return transformers.AutoModelForSequenceClassification.from_pretrained(
        path, attn_implementation="eager").eval()


def remove_heads(model, pruned):
    """Removes BERT heads in place, as transformers 4's prune_heads did
    (transformers 5 dropped it): Q/K/V rows and attention-output columns."""
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    hidden = model.config.hidden_size
    for layer, heads in pruned.items():
        keep = torch.tensor([h * head_dim + i for h in range(model.config.num_attention_heads) if h not in heads
                             for i in range(head_dim)])
        attention = model.bert.encoder.layer[layer].attention
        with torch.no_grad():
            for name in ("query", "key", "value"):
                old = getattr(attention.self, name)
                new = torch.nn.Linear(hidden, len(keep))
                new.weight.copy_(old.weight[keep])
                new.bias.copy_(old.bias[keep])
                setattr(attention.self, name, new)
            new = torch.nn.Linear(len(keep), hidden)
            new.weight.copy_(attention.output.dense.weight[:, keep])
            new.bias.copy_(attention.output.dense.bias)
            attention.output.dense = new
            attention.self.num_attention_heads = len(keep) // head_dim
            attention.self.all_head_size = len(keep)
    return model


def load_export(folder):
    """transformers' model of an hf export; a folder with pruned_heads is
    shrunk first, then every tensor is loaded strictly."""
    pruned = {int(k): v for k, v in json.load(open(os.path.join(folder, "config.json"))).get("pruned_heads", {}).items()}
    if not pruned:
        return load_base(folder)
    config = transformers.AutoConfig.from_pretrained(folder)
    config._attn_implementation = "eager"
    model = remove_heads(transformers.BertForSequenceClassification(config), pruned).eval()
    missing, unexpected = model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=False)
    check(f"{folder}: loads strictly", not missing and not unexpected, f"missing {missing}, unexpected {unexpected}")
    return model


def masks_of(path):
    masks, heads = {}, {}
    with h5py.File(path, "r") as f:
        for name, data in f.get("masks", {}).items():
            shape = tuple(int(x) for x in data.attrs["shape"])
            encoding = data.attrs["encoding"]
            encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
            if encoding == "bits":
                flat = np.unpackbits(data[()])[: shape[0] * shape[1]]
            else:
                listed = 1 if encoding == "one_indices" else 0
                flat = np.full(shape[0] * shape[1], 1 - listed, dtype=np.uint8)
                flat[data[()]] = listed
            masks[name] = torch.from_numpy(flat.reshape(shape).astype(np.float32))
        for layer, ids in f.get("heads", {}).items():
            heads[int(layer)] = [int(h) for h in ids[()]]
    return masks, heads


def reference_model(arm_dir, pretrained):
    """The arm's final model rebuilt from base weights and the run's files."""
    config = tomllib.load(open(os.path.join(arm_dir, "config.toml"), "rb"))
    scale = config["tuning"]["alpha"] / config["tuning"]["rank"]
    mask_update = config["retune"]["mask_update"]
    stage = "retune" if os.path.exists(os.path.join(arm_dir, "trainable-retune.safetensors")) else "train"
    trained = load_file(os.path.join(arm_dir, f"trainable-{stage}.safetensors"))
    model = load_base(pretrained)
    masks, heads = {}, {}
    if os.path.exists(os.path.join(arm_dir, "masks.h5")):
        masks, heads = masks_of(os.path.join(arm_dir, "masks.h5"))
    original_rows = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            original_rows[name] = module.weight.shape[0]
    if heads:
        remove_heads(model, heads)
    omega = {}
    if os.path.exists(os.path.join(arm_dir, "omega.h5")):
        with h5py.File(os.path.join(arm_dir, "omega.h5"), "r") as f:
            omega = {name: torch.from_numpy(data[()]) for name, data in f.items()}
    prefix = model.base_model_prefix + "."
    with torch.no_grad():
        deltas = {}
        for key in trained:
            if not key.endswith(".lora_A"):
                continue
            module_name = key[: -len(".lora_A")]
            a, b = trained[key], trained[module_name + ".lora_B"]
            delta = b @ a
            values = trained.get(module_name + ".sparse_values")
            if values is not None and values.numel() > 0:
                n = a.shape[1]
                full = omega[module_name + ".weight"]
                rows, cols = full // n, full % n
                # Head pruning removed rows; Ω keeps its surviving entries in order.
                head_dim = model.config.hidden_size // model.config.num_attention_heads
                layer = int(module_name.split(".")[2])
                removed = torch.tensor(
                    [r for h in heads.get(layer, []) for r in range(h * head_dim, (h + 1) * head_dim)]
                    if ("query" in module_name or "key" in module_name or "value" in module_name) else [],
                    dtype=torch.long)
                kept = torch.tensor([r for r in range(original_rows[prefix + module_name])
                                     if r not in set(removed.tolist())], dtype=torch.long)
                new_row = torch.full((original_rows[prefix + module_name],), -1, dtype=torch.long)
                new_row[kept] = torch.arange(kept.numel())
                survive = new_row[rows] >= 0
                assert int(survive.sum()) == values.numel(), (module_name, int(survive.sum()), values.numel())
                delta.view(-1).index_add_(0, new_row[rows[survive]] * n + cols[survive], values)
            deltas[module_name] = scale * delta
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or not name.startswith(prefix):
                continue
            short = name[len(prefix):]
            w = module.weight
            m = masks.get(short)
            d = deltas.get(short)
            if m is not None and d is not None:
                w.copy_((w + d) * m if mask_update else w * m + d)
            elif m is not None:
                w.mul_(m)
            elif d is not None:
                w.add_(d)
        state = model.state_dict()
        for key, value in trained.items():
            if ".lora_" not in key and not key.endswith(".sparse_values"):
                state[key].copy_(value)
    return model, masks


def accuracy(logits, labels):
    return (logits.argmax(1) == labels).double().mean().item()


ARMS = ["lora", "dsee-unstructured", "dsee-heads", "lora-unstructured"]


@pytest.fixture(scope="module")
def run(dsee, tmp_path_factory):
    """The run of the four arms: (its folder, the work folder)."""
    work = str(tmp_path_factory.mktemp("export"))
    torch.manual_seed(0)
    recipe = os.path.join(work, "export.toml")
    with open(recipe, "w") as f:
        f.write(f"""[run]
name = "exp"
out_dir = "{work}"
compare = [
  "lora: tuning.method=lora tuning.rank=4 export.format=hf",
  "dsee-unstructured: tuning.method=dsee tuning.rank=4 prune.kind=unstructured",
  "dsee-heads: tuning.method=dsee tuning.rank=4 prune.kind=heads prune.heads_per_layer=2",
  "lora-unstructured: tuning.method=lora tuning.rank=4 prune.kind=unstructured retune.epochs=0",
]
[task]
train_size = 128
dev_size = 64
[omega]
c = 16
variant = "tolerance"
max_rank = 4
[train]
lr = 1e-2
epochs = 1
batch_size = 32
[retune]
epochs = 1
""")
    result = run_dsee(dsee, "run", recipe)
    check("dsee run of the four arms exits 0", result.returncode == 0,
          f"{result.returncode}: {result.stdout}\n{result.stderr}")
    return os.path.join(work, "exp"), work


@pytest.mark.parametrize("arm", ARMS)
def test_export_matches_reference(arm, run, dsee):
    root, work = run
    pretrained = os.path.join(root, "data", "pretrained")
    dev = load_file(os.path.join(root, "data", "dev.safetensors"))
    ids, labels = dev["input_ids"], dev["labels"]
    arm_dir = os.path.join(root, arm)
    reference, masks = reference_model(arm_dir, pretrained)
    with torch.no_grad():
        ref_logits = reference(input_ids=ids).logits
    recorded = json.load(open(os.path.join(arm_dir, "stages", "eval.json")))["dev"]["accuracy"]
    check_close(f"{arm}: reference dev accuracy {accuracy(ref_logits, labels):.4f} = dsee's eval.json "
                f"{recorded:.4f}", accuracy(ref_logits, labels), recorded, abs=1e-12, reference="eval.json")

    out = os.path.join(work, arm + "-hf")
    r = run_dsee(dsee, "export", arm_dir, "--format", "hf", "--out", out)
    check(f"{arm}: dsee export --format hf exits 0", r.returncode == 0, r.stderr.strip()[-300:])
    exported = load_export(out)
    with torch.no_grad():
        exported_logits = exported(input_ids=ids).logits
    check_close(f"{arm}: hf export logits vs reference", exported_logits, ref_logits, rel=TOLERANCE, reference="ref")
    # dsee's own logits: the eval stage's, from the unmerged model (Ω, A, B,
    # S and the masks applied on the fly), in predictions-dev.safetensors.
    own = load_file(os.path.join(arm_dir, "predictions-dev.safetensors"))["dev.logits"]
    check_close(f"{arm}: hf export logits vs dsee's own eval logits", exported_logits, own, rel=TOLERANCE,
                reference="ref")
    modules = dict(exported.named_modules())
    prefix = exported.base_model_prefix + "."
    if masks:
        nonzero = [short for short, mask in masks.items() if not bool((modules[prefix + short].weight[mask == 0] == 0)
                                                                      .all())]
        zeros = sum(int((m == 0).sum()) for m in masks.values())
        check(f"{arm}: all {zeros} masked entries of {len(masks)} projections are exactly zero", not nonzero,
              f"non-zero weights where the mask is 0: {nonzero}")
    if arm == "dsee-heads":
        heads = json.load(open(os.path.join(out, "config.json"))).get("pruned_heads", {})
        check(f"{arm}: config.json pruned_heads = {heads}", len(heads) == 2 and all(len(h) == 2 for h in heads.values()))
    if arm == "lora":
        a = open(os.path.join(out, "model.safetensors"), "rb").read()
        b = open(os.path.join(arm_dir, "export", "model.safetensors"), "rb").read()
        check(f"{arm}: the pipeline's export stage and dsee export wrote identical model.safetensors", a == b)

    peft_out = os.path.join(work, arm + "-peft")
    r = run_dsee(dsee, "export", arm_dir, "--format", "peft", "--out", peft_out)
    if arm == "lora":
        check(f"{arm}: dsee export --format peft exits 0", r.returncode == 0, r.stderr.strip()[-300:])
        keys = sorted(load_file(os.path.join(peft_out, "adapter_model.safetensors")))
        check(f"{arm}: PEFT key names ({len(keys)} tensors)",
              "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in keys
              and "base_model.model.classifier.weight" in keys)
        peft_model = PeftModel.from_pretrained(load_base(pretrained), peft_out).eval()
        with torch.no_grad():
            check_close(f"{arm}: PeftModel.from_pretrained logits vs reference", peft_model(input_ids=ids).logits,
                        ref_logits, rel=TOLERANCE, reference="ref")
    else:
        reason = "no PEFT equivalent" if arm.startswith("dsee") else "pruned weights"
        check(f"{arm}: --format peft refused", r.returncode == 1 and reason in r.stderr and "--format hf" in r.stderr,
              r.stderr.strip())


def test_export_refusals(run, dsee):
    # Not finished / not a run directory / the parent of run.compare's arms.
    root, work = run
    unfinished = os.path.join(work, "unfinished")
    os.makedirs(os.path.join(unfinished, "stages"))
    shutil.copy(os.path.join(root, "lora", "config.toml"), unfinished)
    r = run_dsee(dsee, "export", unfinished, "--format", "hf")
    check("unfinished run refused", r.returncode == 1 and "eval.json" in r.stderr and "dsee run" in r.stderr,
          r.stderr.strip())
    r = run_dsee(dsee, "export", os.path.join(work, "nowhere"), "--format", "hf")
    check("missing run directory refused", r.returncode == 1 and "does not exist" in r.stderr, r.stderr.strip())
    r = run_dsee(dsee, "export", root, "--format", "hf")
    check("a run.compare parent refused", r.returncode == 1 and "<arm>" in r.stderr, r.stderr.strip())
