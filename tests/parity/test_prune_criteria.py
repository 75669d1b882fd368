"""prune.criterion (docs/method.md, 'Pruning criteria'): the masks a run
writes equal an independent computation from the run's own files.

One tiny demo run (DSEE r = 4, c = 16, one epoch on the CPU, no re-tuning)
with six arms: unstructured pruning and head pruning under each criterion
(delta, random, merged). For each arm the plan is recomputed here from W
(data/pretrained/model.safetensors), the trained A, B, S values
(trainable-train.safetensors) and Ω (omega.h5, h5py), with torch alone:
    ΔW = s·(B·A + P_Ω(S)),  s = tuning.alpha / tuning.rank
    delta |ΔW|;  merged |W + ΔW|;  random torch.rand(N) from
    torch.Generator().manual_seed(run.seed), cut over the blocks in model order
Unstructured: P_adapt (query, value) loses round(p·N) entries (half away from
zero) by one stable sort, ties to the lower flat index; P_rest (key, the
attention output, intermediate, output, pooler) by |W| alike, the same for
every criterion. Heads: per layer, Σ over each head's rows of the entry
scores (delta: the unscaled B·A + P_Ω(S)), rows in fp32 and heads in fp64,
the k lowest per layer, ties to the lower id. The masks and head ids in the
arm's masks.h5 (read with h5py) must equal these exactly, and the three
criteria must give three different plans.
"""
import json
import math
import os
import tomllib

import h5py
import pytest
import torch
from safetensors.torch import load_file

from harness import check, check_equal
from harness.masks import masks_h5
from harness.runs import run_recipe_file

CRITERIA = ["delta", "random", "merged"]
P_ADAPT, P_REST, HEADS = 0.3, 0.4, 2
REST = ["attention.self.key", "attention.output.dense", "intermediate.dense", "output.dense"]


@pytest.fixture(scope="module")
def run(dsee, tmp_path_factory):
    """The run directory holding one arm per (kind, criterion)."""
    work = str(tmp_path_factory.mktemp("criteria"))
    arms = [f"{c}: prune.kind=unstructured prune.criterion={c}" for c in CRITERIA]
    arms += [f"heads-{c}: prune.kind=heads prune.heads_per_layer={HEADS} prune.criterion={c}" for c in CRITERIA]
    recipe = os.path.join(work, "criteria.toml")
    with open(recipe, "w") as f:
        f.write(f"""[run]
name = "crit"
out_dir = "{work}"
seed = 17
device = "cpu"
compare = [{", ".join(f'"{a}"' for a in arms)}]
[task]
train_size = 64
dev_size = 32
[tuning]
rank = 4
alpha = 12.0
[omega]
c = 16
variant = "tolerance"
max_rank = 4
[train]
lr = 1e-2
epochs = 1
batch_size = 16
[prune]
p_adapt = {P_ADAPT}
p_rest = {P_REST}
[retune]
epochs = 0
""")
    run_recipe_file(dsee, recipe, "the six arms")
    return os.path.join(work, "crit")


def layer_of(module):
    return int(module.split(".")[2])


class Arm:
    """W, ΔW and the unscaled update of one arm's adapted matrices, in model order."""

    def __init__(self, root, arm):
        self.dir = os.path.join(root, arm)
        config = tomllib.load(open(os.path.join(self.dir, "config.toml"), "rb"))
        self.seed = config["run"]["seed"]
        scale = config["tuning"]["alpha"] / config["tuning"]["rank"]
        pretrained = load_file(os.path.join(root, "data", "pretrained", "model.safetensors"))
        prefix = "bert." if any(k.startswith("bert.") for k in pretrained) else ""
        self.weight = lambda module: pretrained[prefix + module + ".weight"]
        self.layers = 1 + max(layer_of(k[len(prefix):]) for k in pretrained if k.startswith(prefix + "encoder.layer."))
        self.has_pooler = prefix + "pooler.dense.weight" in pretrained
        trained = load_file(os.path.join(self.dir, "trainable-train.safetensors"))
        with h5py.File(os.path.join(self.dir, "omega.h5"), "r") as f:
            omega = {name: torch.from_numpy(data[()]) for name, data in f.items()}
        order = {"query": 0, "key": 1, "value": 2}
        self.adapted = sorted((k[: -len(".lora_A")] for k in trained if k.endswith(".lora_A")),
                              key=lambda m: (layer_of(m), order[m.rsplit(".", 1)[1]]))
        self.unscaled, self.delta = {}, {}
        for module in self.adapted:
            a, b = trained[module + ".lora_A"], trained[module + ".lora_B"]
            values, indices = trained[module + ".sparse_values"], omega[module + ".weight"]
            m, n = b.shape[0], a.shape[1]
            dense = torch.mm(b, a)
            if indices.numel() > 0:  # as SparseUpdate::unscaled: B·A, then S added at Ω
                dense = dense.reshape(m * n).index_add(0, indices, values).view(m, n)
            self.unscaled[module] = dense
            self.delta[module] = dense * scale

    def entry_scores(self, criterion, heads):
        """{module: [out, in] scores} of the adapted matrices under `criterion`."""
        if criterion == "random":
            total = sum(self.delta[m].numel() for m in self.adapted)
            draw = torch.rand(total, generator=torch.Generator().manual_seed(self.seed))
            out, at = {}, 0
            for m in self.adapted:
                out[m] = draw[at:at + self.delta[m].numel()].view(self.delta[m].shape)
                at += self.delta[m].numel()
            return out
        if criterion == "merged":
            return {m: (self.weight(m) + self.delta[m]).abs() for m in self.adapted}
        return {m: (self.unscaled[m] if heads else self.delta[m]).abs() for m in self.adapted}

    def rest_modules(self):
        rest = [f"encoder.layer.{l}.{name}" for l in range(self.layers) for name in REST]
        return rest + (["pooler.dense"] if self.has_pooler else [])


def pool_masks(scores, fraction):
    """{module: keep-mask}: round(p·N) lowest removed, one stable sort over the pool in the given order."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    n = int(math.floor(fraction * flat.numel() + 0.5))
    removed = torch.zeros(flat.numel(), dtype=torch.bool)
    removed[torch.sort(flat, stable=True).indices[:n]] = True
    out, at = {}, 0
    for module, s in scores.items():
        out[module] = ~removed[at:at + s.numel()].view(s.shape)
        at += s.numel()
    return out


def head_plan(arm, criterion, heads_per_layer, num_heads):
    scores = [torch.zeros(num_heads, dtype=torch.float64) for _ in range(arm.layers)]
    for module, entries in arm.entry_scores(criterion, heads=True).items():
        per_row = entries.sum(1).double()
        scores[layer_of(module)] += per_row.reshape(-1, num_heads, per_row.numel() // num_heads).sum((0, 2))
    plan = {}
    for layer, s in enumerate(scores):
        order = sorted(range(num_heads), key=lambda h: (s[h].item(), h))
        plan[layer] = sorted(order[:heads_per_layer])
    return plan


@pytest.mark.parametrize("criterion", CRITERIA)
def test_unstructured_masks_match_reference(criterion, run):
    arm = Arm(run, criterion)
    written, heads = masks_h5(os.path.join(arm.dir, "masks.h5"))
    check_equal(f"{criterion}: no heads removed", heads, {})
    adapt = pool_masks(arm.entry_scores(criterion, heads=False), P_ADAPT)
    rest = pool_masks({m: arm.weight(m).abs() for m in arm.rest_modules()}, P_REST)
    expected = {**adapt, **rest}
    check_equal(f"{criterion}: masked projections", sorted(written), sorted(expected))
    for module, mask in expected.items():
        got = written[module]
        check(f"{criterion}: {module} mask ({int((~mask).sum())} of {mask.numel()} removed) = reference",
              torch.equal(got, mask), f"{int((got != mask).sum())} entries differ")
    removed = sum(int((~written[m]).sum()) for m in adapt)
    total = sum(written[m].numel() for m in adapt)
    check_equal(f"{criterion}: P_adapt loses round(p·N)", removed, int(math.floor(P_ADAPT * total + 0.5)))


def test_criteria_give_different_masks(run):
    adapt = {c: masks_h5(os.path.join(run, c, "masks.h5"))[0] for c in CRITERIA}
    module = "encoder.layer.0.attention.self.query"
    for a, b in (("delta", "random"), ("delta", "merged"), ("random", "merged")):
        check(f"{a} and {b} masks of {module} differ", not torch.equal(adapt[a][module], adapt[b][module]))


@pytest.mark.parametrize("criterion", CRITERIA)
def test_head_plan_matches_reference(criterion, run):
    arm = Arm(run, "heads-" + criterion)
    with open(os.path.join(run, "data", "pretrained", "config.json")) as f:
        num_heads = json.load(f)["num_attention_heads"]
    written, heads = masks_h5(os.path.join(arm.dir, "masks.h5"))
    check_equal(f"heads-{criterion}: no masks", written, {})
    check_equal(f"heads-{criterion}: removed heads = reference", heads,
                head_plan(arm, criterion, HEADS, num_heads))


