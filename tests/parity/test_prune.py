"""`dsee count` and `dsee prune` end to end, against transformers and peft.

For a tiny random BERT, RoBERTa and GPT-2 written by transformers'
save_pretrained:

count  parameters total = transformers' parameter count; LoRA's trainable
       count = peft's (target query/value, classifier in modules_to_save;
       BERT/RoBERTa); dsee's = LoRA's + c per adapted matrix; dense FLOPs =
       the formula of docs/method.md ('Counting parameters and FLOPs')
       evaluated here on the transformers modules' shapes.
prune  `dsee prune --heads 1 --p-rest 0.3` is recomputed here from
       docs/method.md ('Head pruning', 'Unstructured pruning') alone (heads by
       Σ|W| of their query and value rows, lowest per layer, ties to the lower
       id; then P_rest by |W| after the heads are gone, one stable sort,
       round(p·N) half away from zero). The pruned folder must hold exactly
       those zeros, load in transformers (which has no head pruning since v5:
       the attention modules are shrunk here, as v4's prune_heads did) and
       give the reference logits (1e-6), and `dsee forward` on it must match
       them too (1e-5). A heads-only run must equal the unpruned model with
       those heads' contexts zeroed. Applying the written masks.h5 with --plan
       gives the same tensors.
"""
import json
import math
import os
import re
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file

import transformers
from transformers.pytorch_utils import Conv1D

from harness import check, check_close, check_equal

L = 7  # sequence length of the counts and the forward
P_REST = 0.3


@pytest.fixture(autouse=True, scope="module")
def threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


CASES = {
    "bert": (transformers.BertConfig(vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=16), "BertForSequenceClassification"),
    "roberta": (transformers.RobertaConfig(vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=37, max_position_embeddings=20, pad_token_id=1),
                "RobertaForSequenceClassification"),
    "gpt2": (transformers.GPT2Config(vocab_size=60, n_embd=24, n_layer=2, n_head=4, n_positions=20),
             "GPT2LMHeadModel"),
}


def build(family, seed):
    config, class_name = CASES[family]
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def base(model):
    return getattr(model, model.base_model_prefix)


# ---------------------------------------------------------------- weights as out×in
def attention(model, layer):
    return base(model).h[layer].attn if isinstance(model, transformers.GPT2LMHeadModel) \
        else base(model).encoder.layer[layer].attention


def is_gpt2(model):
    return isinstance(model, transformers.GPT2LMHeadModel)


def qv_rows(model, layer):
    """The query and value weights [width, hidden] of a layer."""
    a = attention(model, layer)
    if is_gpt2(model):
        w = a.c_attn.weight.T  # Conv1D stores [in, out]
        width = w.shape[0] // 3
        return [w[:width], w[2 * width:]]
    return [a.self.query.weight, a.self.value.weight]


def rest_pool(model):
    """(name, out×in weight view) of P_rest in model order (docs/method.md, 'Unstructured pruning')."""
    pool = []
    for layer in range(model.config.num_hidden_layers if not is_gpt2(model) else model.config.n_layer):
        if is_gpt2(model):
            block = base(model).h[layer]
            width = block.attn.c_attn.weight.shape[1] // 3
            pool += [(f"h.{layer}.attn.c_attn:k", block.attn.c_attn.weight.T[width:2 * width]),
                     (f"h.{layer}.attn.c_proj", block.attn.c_proj.weight.T),
                     (f"h.{layer}.mlp.c_fc", block.mlp.c_fc.weight.T),
                     (f"h.{layer}.mlp.c_proj", block.mlp.c_proj.weight.T)]
        else:
            l = base(model).encoder.layer[layer]
            pool += [(f"encoder.layer.{layer}.attention.self.key", l.attention.self.key.weight),
                     (f"encoder.layer.{layer}.attention.output.dense", l.attention.output.dense.weight),
                     (f"encoder.layer.{layer}.intermediate.dense", l.intermediate.dense.weight),
                     (f"encoder.layer.{layer}.output.dense", l.output.dense.weight)]
    if isinstance(model, transformers.BertForSequenceClassification):
        pool.append(("pooler.dense", base(model).pooler.dense.weight))
    if isinstance(model, transformers.RobertaForSequenceClassification):
        pool.append(("classifier.dense", model.classifier.dense.weight))
    return pool


# ---------------------------------------------------------------- the reference plan
def head_plan(model, k):
    plan = {}
    n_heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // n_heads
    for layer in range(len(base(model).h) if is_gpt2(model) else len(base(model).encoder.layer)):
        scores = sum(w.detach().abs().double().reshape(n_heads, head_dim, -1).sum((1, 2)) for w in qv_rows(model, layer))
        order = sorted(range(n_heads), key=lambda h: (scores[h].item(), h))
        plan[layer] = sorted(order[:k])
    return plan


def shrink(model, pruned):
    """Removes heads in place (what transformers 4's prune_heads did)."""
    n_heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // n_heads
    hidden = model.config.hidden_size
    for layer, heads in pruned.items():
        keep = torch.tensor([h * head_dim + i for h in range(n_heads) if h not in heads for i in range(head_dim)])
        width = len(keep)
        a = attention(model, layer)
        with torch.no_grad():
            if is_gpt2(model):
                thirds = torch.cat([keep + i * hidden for i in range(3)])
                c_attn, c_proj = Conv1D(3 * width, hidden), Conv1D(hidden, width)
                c_attn.weight.copy_(a.c_attn.weight[:, thirds])
                c_attn.bias.copy_(a.c_attn.bias[thirds])
                c_proj.weight.copy_(a.c_proj.weight[keep, :])
                c_proj.bias.copy_(a.c_proj.bias)
                a.c_attn, a.c_proj, a.split_size = c_attn, c_proj, width
            else:
                for name in ("query", "key", "value"):
                    old = getattr(a.self, name)
                    new = torch.nn.Linear(hidden, width)
                    new.weight.copy_(old.weight[keep])
                    new.bias.copy_(old.bias[keep])
                    setattr(a.self, name, new)
                new = torch.nn.Linear(width, hidden)
                new.weight.copy_(a.output.dense.weight[:, keep])
                new.bias.copy_(a.output.dense.bias)
                a.output.dense = new
    return model


def rest_masks(model, p):
    """name → keep mask (out×in) removing round(p·N) of P_rest, stable order."""
    pool = rest_pool(model)
    flat = torch.cat([w.detach().abs().reshape(-1) for _, w in pool])
    n = int(math.floor(p * flat.numel() + 0.5))
    order = torch.sort(flat, stable=True).indices
    removed = torch.zeros(flat.numel(), dtype=torch.bool)
    removed[order[:n]] = True
    masks, at = {}, 0
    for name, w in pool:
        masks[name] = ~removed[at:at + w.numel()].reshape(w.shape)
        at += w.numel()
    return masks


def apply_masks(model, masks):
    with torch.no_grad():
        for name, w in rest_pool(model):
            w.mul_(masks[name].to(w.dtype))


def load_pruned(folder, family):
    """transformers model of a dsee-pruned folder: shrink, then load strictly."""
    with open(os.path.join(folder, "config.json")) as f:
        pruned = {int(k): v for k, v in json.load(f).get("pruned_heads", {}).items()}
    config = type(CASES[family][0]).from_pretrained(folder)
    config._attn_implementation = "eager"
    model = shrink(getattr(transformers, CASES[family][1])(config), pruned).eval()
    state = load_file(os.path.join(folder, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to wte
    check(f"{family} pruned folder loads", not missing and not unexpected, f"missing {missing}, unexpected {unexpected}")
    return model


# ---------------------------------------------------------------- running
def run_dsee(binary, *args):
    result = subprocess.run([binary, *args], capture_output=True, text=True)
    check(f"dsee {' '.join(args[:1])} exits 0", result.returncode == 0,
          f"dsee {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def count_field(output, label):
    line = next(l for l in output.splitlines() if l.startswith(label))
    return int(re.search(r"([\d,]+)", line[len(label):]).group(1).replace(",", ""))


def ids_for(model):
    generator = torch.Generator().manual_seed(3)
    low = 2 if isinstance(model, transformers.RobertaForSequenceClassification) else 0
    return torch.randint(low, model.config.vocab_size, (2, L), generator=generator)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def dense_flops(model):
    """docs/method.md ('Counting parameters and FLOPs') on the transformers modules:
    2·out·in per token per projection."""
    flops = 0
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)) and name != "lm_head":
            out, inp = (module.weight.shape[1], module.weight.shape[0]) if isinstance(module, Conv1D) \
                else module.weight.shape
            once = "pooler" in name or "classifier" in name
            flops += 2 * out * inp * (1 if once else L)
    if is_gpt2(model):
        flops += 2 * L * model.config.vocab_size * model.config.hidden_size
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    for layer in range(model.config.num_hidden_layers):
        a = attention(model, layer)
        width = a.split_size if is_gpt2(model) else a.self.query.weight.shape[0]
        flops += (width // head_dim) * 2 * 2 * L * L * head_dim
    return flops


@pytest.mark.parametrize("family", list(CASES))
def test_count_and_prune(family, dsee, tmp_path):
    binary, work = dsee, str(tmp_path)
    folder = os.path.join(work, family)
    shutil.rmtree(folder, ignore_errors=True)
    model = build(family, seed=11)
    model.save_pretrained(folder)
    ids = ids_for(model)

    # count
    out = run_dsee(binary, "count", "--model", folder, "--seq-len", str(L), "--method", "lora", "--rank", "4")
    params = sum(p.numel() for p in model.parameters())
    check_equal(f"{family} count: parameters, dsee vs transformers", count_field(out, "parameters total"), params)
    check_equal(f"{family} count: dense FLOPs, dsee vs formula", count_field(out, "FLOPs dense"), dense_flops(model))
    lora = count_field(out, "trainable")
    if family != "gpt2":
        import peft
        peft_model = peft.get_peft_model(build(family, seed=11),
                                         peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                         modules_to_save=["classifier"]))
        trainable = peft_model.get_nb_trainable_parameters()[0]
        check_equal(f"{family} count: lora trainable, dsee vs peft", lora, trainable)
    out = run_dsee(binary, "count", "--model", folder, "--method", "dsee", "--rank", "4", "--c", "5")
    layers = model.config.num_hidden_layers
    check_equal(f"{family} count: dsee trainable = lora ({lora}) + c per matrix", count_field(out, "trainable"),
                lora + 2 * layers * 5)

    # prune: heads and P_rest
    pruned_dir, plan_file = folder + "_pruned", os.path.join(work, family + "_masks.h5")
    run_dsee(binary, "prune", "--model", folder, "--out", pruned_dir, "--heads", "1", "--p-rest", str(P_REST),
         "--write-plan", plan_file)
    reference = build(family, seed=11)
    heads = head_plan(reference, 1)
    with open(os.path.join(pruned_dir, "config.json")) as f:
        written = {int(k): v for k, v in json.load(f).get("pruned_heads", {}).items()}
    check_equal(f"{family} prune: heads, dsee vs reference", written, heads)
    shrink(reference, heads)
    masks = rest_masks(reference, P_REST)
    apply_masks(reference, masks)
    loaded = load_pruned(pruned_dir, family)
    zeros_ok = all(torch.equal(w.detach() == 0, ~masks[name]) for name, w in rest_pool(loaded))
    expected_zeros = sum(int((~m).sum()) for m in masks.values())
    check(f"{family} prune: P_rest zeros", zeros_ok, f"{expected_zeros} expected zeros")
    # Embedding padding rows are zero from the start; every other zero is a mask's.
    zeros = lambda m: sum(int((p == 0).sum()) for p in m.parameters())
    check_equal(f"{family} prune: no zeros outside P_rest ({zeros(build(family, seed=11))} + {expected_zeros})",
                zeros(loaded), zeros(build(family, seed=11)) + expected_zeros)
    want = logits(reference, ids)
    check_close(f"{family} prune: transformers logits of the pruned folder", logits(loaded, ids), want, rel=1e-6)
    with open(os.path.join(work, family + "_ids.json"), "w") as f:
        json.dump(ids.tolist(), f)
    forward_out = os.path.join(work, family + "_forward.safetensors")
    run_dsee(binary, "forward", "--model", pruned_dir, "--input-ids", os.path.join(work, family + "_ids.json"),
         "--out", forward_out)
    check_close(f"{family} prune: dsee forward of the pruned folder", load_file(forward_out)["logits"], want, rel=1e-5)

    # counts of the pruned folder: non-zeros and non-zero FLOPs from the tensors
    out = run_dsee(binary, "count", "--model", pruned_dir, "--seq-len", str(L))
    nonzero = sum(int((p != 0).sum()) for p in loaded.parameters())
    check_equal(f"{family} count pruned: non-zero parameters, dsee vs tensors", count_field(out, "parameters non-zero"),
                nonzero)
    check_equal(f"{family} count pruned: dense FLOPs, dsee vs formula", count_field(out, "FLOPs dense"),
                dense_flops(loaded))
    removed_flops = 2 * L * expected_zeros - sum(2 * (L - 1) * int((~m).sum()) for n, m in masks.items()
                                                  if n in ("pooler.dense", "classifier.dense"))
    check_equal(f"{family} count pruned: non-zero FLOPs", count_field(out, "FLOPs non-zero"),
                dense_flops(loaded) - removed_flops)

    # the written plan applied with --plan gives the same folder
    replay_dir = folder + "_replay"
    run_dsee(binary, "prune", "--model", folder, "--out", replay_dir, "--plan", plan_file)
    a, b = load_file(os.path.join(pruned_dir, "model.safetensors")), load_file(os.path.join(replay_dir, "model.safetensors"))
    check(f"{family} prune --plan masks.h5 replays", a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a))

    # heads only: equals the unpruned model with those heads' contexts zeroed
    heads_dir = folder + "_heads"
    run_dsee(binary, "prune", "--model", folder, "--out", heads_dir, "--heads", "2")
    zeroed = build(family, seed=11)
    two = head_plan(zeroed, 2)
    head_dim = zeroed.config.hidden_size // zeroed.config.num_attention_heads
    with torch.no_grad():
        for layer, hs in two.items():
            a = attention(zeroed, layer)
            for h in hs:
                if is_gpt2(zeroed):
                    a.c_proj.weight[h * head_dim:(h + 1) * head_dim, :] = 0
                else:
                    a.output.dense.weight[:, h * head_dim:(h + 1) * head_dim] = 0
    check_close(f"{family} prune --heads 2: logits = zeroed head contexts", logits(load_pruned(heads_dir, family), ids),
                logits(zeroed, ids), rel=1e-6)
