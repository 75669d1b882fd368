"""EarlyBERT (prune.kind = earlybert; docs/tuning.md, 'EarlyBERT') against an
independent computation in torch / transformers.

  step       A tiny random transformers BERT / RoBERTa (torch seed 0, no
             dropout) with coefficients c on every head and every
             feed-forward neuron, applied by forward pre-hooks that scale the
             input of attention.output.dense (head h: columns h·d_head …
             (h+1)·d_head − 1) and of output.dense (neuron j: column j). Values
             drawn around 1, some negative, one exactly 0 (the ℓ1 subgradient
             there is 0 on both sides), and ties. One forward and
             loss = (logits · w).sum() + λ·Σ|c|: logits and the gradient of
             every coefficient from dsee_parity's earlybert-step within 1e-5
             (max |diff| / max |ref|); the plan it draws (k heads, n neurons
             per layer) equals a stable torch.argsort of |c| per layer (ties
             to the lower id).
  run        `dsee run` of the demo task with tuning.method = full,
             prune.kind = earlybert (1 head, 48 neurons per layer), a short
             search, retune and export.format = hf. The saved coefficients
             (earlybert.safetensors) select exactly the heads and neurons
             masks.h5 lists (the same torch argsort); transformers' BERT
             built from the export's config (the smaller intermediate_size),
             with the heads its pruned_heads names shrunk away, loads the
             tensors strictly and gives the logits dsee's eval stage recorded
             (predictions-dev.safetensors) within 1e-5.
"""
import os

import h5py
import pytest
import torch
import transformers
from safetensors.torch import load_file

from harness import check, check_close, check_equal
from harness.models import bert_config, roberta_config
from harness.runs import run_recipe_file

TOLERANCE = 1e-5
L1 = 0.05


def lowest(coefficients, count):
    """The `count` ids of the smallest |c|, ties to the lower id, ascending."""
    order = torch.argsort(coefficients.abs(), stable=True)
    return sorted(order[:count].tolist())


def draw_coefficients(layers, heads, neurons, generator):
    out = {}
    for layer in range(layers):
        out[f"earlybert.heads.{layer}"] = 1 + 0.5 * torch.randn(heads, generator=generator)
        out[f"earlybert.neurons.{layer}"] = 1 + 0.8 * torch.randn(neurons, generator=generator)
    out["earlybert.heads.0"][:3] = torch.tensor([0.25, -0.25, 0.25])   # a three-way tie in |c|
    out["earlybert.neurons.1"][[4, 9]] = torch.tensor([-0.125, 0.125])  # a tie, one negative
    out["earlybert.neurons.0"][7] = 0.0
    return out


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_coefficient_gradients_and_plan(family, parity, tmp_path):
    torch.manual_seed(0)
    if family == "bert":
        model = transformers.BertForSequenceClassification(bert_config(attn_implementation="eager")).eval()
        encoder = model.bert.encoder
    else:
        model = transformers.RobertaForSequenceClassification(roberta_config(attn_implementation="eager")).eval()
        encoder = model.roberta.encoder
    folder = os.path.join(tmp_path, family)
    model.save_pretrained(folder)
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    generator = torch.Generator().manual_seed(4)
    values = draw_coefficients(config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
                               generator)
    ids = torch.randint(3, 60, (3, 7), generator=generator)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    coefficients = {name: v.clone().requires_grad_() for name, v in values.items()}
    for layer, block in enumerate(encoder.layer):
        heads, neurons = coefficients[f"earlybert.heads.{layer}"], coefficients[f"earlybert.neurons.{layer}"]
        block.attention.output.dense.register_forward_pre_hook(
            lambda module, args, c=heads: (args[0] * c.repeat_interleave(head_dim),))
        block.output.dense.register_forward_pre_hook(lambda module, args, c=neurons: (args[0] * c,))
    logits = model(input_ids=ids, attention_mask=mask).logits
    weights = torch.randn(logits.shape, generator=generator)
    loss = (logits * weights).sum() + L1 * sum(c.abs().sum() for c in coefficients.values())
    loss.backward()

    k, n = 2, 9
    result = parity("earlybert-step", {"model": folder, "l1": L1, "heads_per_layer": k, "neurons_per_layer": n},
                    {**values, "input_ids": ids, "attention_mask": mask, "loss_weights": weights}, out=True)
    out = result.tensors
    check_close(f"{family}: logits with coefficients", out["logits"], logits.detach(), rel=TOLERANCE,
                reference="transformers")
    for name, c in coefficients.items():
        check_close(f"{family}: {name} gradient (with λ·sign(c))", out[name + ".grad"], c.grad, rel=TOLERANCE,
                    reference="transformers")
    for layer in range(config.num_hidden_layers):
        check_equal(f"{family}: heads removed from layer {layer}", result.json["heads"][str(layer)],
                    lowest(values[f"earlybert.heads.{layer}"], k))
        check_equal(f"{family}: neurons removed from layer {layer}", result.json["neurons"][str(layer)],
                    lowest(values[f"earlybert.neurons.{layer}"], n))
    check_equal("the tie in layer 0 goes to the lower head ids", result.json["heads"]["0"], [0, 1])


HEADS, NEURONS = 1, 48


@pytest.fixture(scope="module")
def run(dsee, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("earlybert"))
    recipe = os.path.join(work, "earlybert.toml")
    with open(recipe, "w") as f:
        f.write(f"""[run]
name = "eb"
out_dir = "{work}"
[task]
train_size = 256
dev_size = 64
[tuning]
method = "full"
[train]
lr = 1e-3
epochs = 1
batch_size = 32
[prune]
kind = "earlybert"
heads_per_layer = {HEADS}
neurons_per_layer = {NEURONS}
search_steps = 8
l1 = 1e-3
[retune]
epochs = 1
[export]
format = "hf"
""")
    run_recipe_file(dsee, recipe, "the EarlyBERT recipe")
    return os.path.join(work, "eb")


def test_plan_follows_saved_coefficients(run):
    coefficients = load_file(os.path.join(run, "earlybert.safetensors"))
    with h5py.File(os.path.join(run, "masks.h5"), "r") as masks:
        check_equal("masks.h5 kind", masks.attrs["kind"], "heads+neurons")
        layers = sorted(masks["neurons"].keys(), key=int)
        check("masks.h5 has every layer's neurons", len(layers) >= 1, f"{layers}")
        for layer in layers:
            check_equal(f"heads removed from layer {layer}", masks["heads"][layer][()].tolist(),
                        lowest(coefficients[f"earlybert.heads.{layer}"], HEADS))
            check_equal(f"neurons removed from layer {layer}", masks["neurons"][layer][()].tolist(),
                        lowest(coefficients[f"earlybert.neurons.{layer}"], NEURONS))


def load_export(folder):
    """transformers' BERT of the export: its config (the smaller
    intermediate_size), the heads config.json's pruned_heads names shrunk away
    (transformers 5 has no prune_heads; as tests/parity/test_prune.py), then
    the tensors loaded strictly."""
    config = transformers.AutoConfig.from_pretrained(folder)
    config._attn_implementation = "eager"
    pruned = {int(k): v for k, v in (config.pruned_heads or {}).items()}
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    hidden, head_dim = config.hidden_size, config.hidden_size // config.num_attention_heads
    for layer, heads in pruned.items():
        keep = [h * head_dim + i for h in range(config.num_attention_heads) if h not in heads for i in range(head_dim)]
        attention = model.base_model.encoder.layer[layer].attention
        for name in ("query", "key", "value"):
            setattr(attention.self, name, torch.nn.Linear(hidden, len(keep)))
        attention.output.dense = torch.nn.Linear(len(keep), hidden)
    missing, unexpected = model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=False)
    check("the export loads into transformers' pruned BERT", not missing and not unexpected,
          f"missing {missing}, unexpected {unexpected}")
    return model.eval(), pruned


def test_hf_export_gives_dsee_logits(run):
    pretrained = transformers.AutoConfig.from_pretrained(os.path.join(run, "data", "pretrained"))
    exported, pruned = load_export(os.path.join(run, "export"))
    check_equal("exported intermediate_size", exported.config.intermediate_size,
                pretrained.intermediate_size - NEURONS)
    for layer, block in enumerate(exported.base_model.encoder.layer):
        check_equal(f"layer {layer}: pruned heads", len(pruned[layer]), HEADS)
        check_equal(f"layer {layer}: intermediate.dense rows", block.intermediate.dense.weight.shape[0],
                    pretrained.intermediate_size - NEURONS)
    dev = load_file(os.path.join(run, "data", "dev.safetensors"))
    with torch.no_grad():
        logits = exported(input_ids=dev["input_ids"]).logits
    own = load_file(os.path.join(run, "predictions-dev.safetensors"))["dev.logits"]
    check_close("earlybert: hf export logits vs dsee's eval logits", logits, own, rel=TOLERANCE, reference="dsee")
