"""Parity of the Houlsby adapters (core/tuning/tuning.h, tuning.method =
adapter) with transformers plus forward hooks. PEFT has no Houlsby adapter,
so the reference is docs/export.md's snippet (add_adapters /
apply_adapters), executed here as the documentation writes it.

  step    A tiny random transformers model (torch seed 0; BERT with a
          classification head and padding, RoBERTa, GPT-2 with its tied LM
          head) is saved and loaded by dsee_parity's lora-step with
          tuning.method = adapter, tuning.adapter_size = 3. Every adapter
          tensor is drawn non-zero here (N(0, 0.3²) weights, N(0, 0.1²)
          biases) and given to both stacks; transformers gets them through
          add_adapters' hooks on attention.output.dense / output.dense
          (GPT-2 attn.c_proj / mlp.c_proj). The tensors dsee trains must be
          exactly the adapters, every LayerNorm and the task head; one forward
          on the same ids, loss = (logits * fixed weights).sum(): logits and
          the gradient of every trainable tensor within 1e-5 (max |diff| /
          max |ref|) of transformers' autograd.
  bf16    The same step with run.precision = bf16 against the same
          transformers model cast to bf16 with its LayerNorms and head in
          fp32 (the head's input cast to fp32 by a pre-hook) and fp32
          adapters through the same hooks, which compute in fp32 and round
          the sum to bf16 (docs/precision.md): logits within 2e-2 and
          gradients within 5e-2 (max |diff| / max |ref|; the distance of the
          bf16 reference from fp32 is printed for scale); every trainable
          tensor of dsee is fp32. Measured (torch 2.11 CPU): RoBERTa
          bit-exact, BERT logits 6e-4, GPT-2 5.5e-3; gradients at most
          1.3e-2 — the bf16 reference's own distance from fp32 is 6e-3 to
          1.6e-2.
  export  `dsee run` of a tiny demo recipe with tuning.method = adapter
          (one epoch, export.format = hf): the exported base model under
          AutoModelForSequenceClassification plus apply_adapters gives the
          logits dsee's eval stage recorded within 1e-5; adapters.safetensors
          holds exactly the trained adapter tensors (under transformers'
          module names) and model.safetensors the trained LayerNorms and head.
"""
import os
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file

from harness import check, check_close, check_equal
from harness.lora import lora_case, model_inputs
from harness.runs import recipe_text, run_recipe_file

TOLERANCE = 1e-5
BF16_LOGITS, BF16_GRADS = 2e-2, 5e-2  # as parity_precision_peft (docs/precision.md)
HERE = os.path.dirname(os.path.abspath(__file__))


def export_snippet():
    """The namespace of docs/export.md's adapter snippet (its one python block)."""
    with open(os.path.join(HERE, "..", "..", "docs", "export.md")) as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    check("docs/export.md has one python block", len(blocks) == 1, f"{len(blocks)} blocks")
    code = "\n".join(line[2:] if line.startswith("  ") else line for line in blocks[0].splitlines())
    namespace = {}
    exec(compile(code, "docs/export.md", "exec"), namespace)
    return namespace


def adapter_modules(family, layers):
    """dsee's names of the projections an adapter follows, in order."""
    if family == "gpt2":
        return [f"h.{i}.{m}" for i in range(layers) for m in ("attn.c_proj", "mlp.c_proj")]
    return [f"encoder.layer.{i}.{m}" for i in range(layers) for m in ("attention.output.dense", "output.dense")]


def trains(name):
    """Whether tuning.method = adapter trains the model tensor `name` (dsee's name)."""
    return name.startswith("classifier.") or "LayerNorm." in name or re.search(r"(^|\.)ln_(1|2|f)\.", name)


def transformers_step(case, family, m, bf16):
    """transformers plus the documented hooks: (logits, {name: grad}, adapters, loss weights, inputs). bf16: the
    model in bf16 with its trainable LayerNorms and head in fp32 (the head's input cast to fp32)."""
    snippet = export_snippet()
    torch.manual_seed(0)
    model = case.make_model()
    d, layers = model.config.hidden_size, model.config.num_hidden_layers
    generator = torch.Generator().manual_seed(4)
    adapters = {}
    for module in adapter_modules(family, layers):
        for part, shape, scale in (("down.weight", (m, d), 0.3), ("down.bias", (m,), 0.1),
                                   ("up.weight", (d, m), 0.3), ("up.bias", (d,), 0.1)):
            adapters[f"{module}.adapter.{part}"] = (torch.randn(shape, generator=generator) * scale).requires_grad_()
    if bf16:
        model = model.to(torch.bfloat16)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.float()
            elif name.split(".")[0] == "classifier" and isinstance(module, (torch.nn.Linear,)):
                module.float()
                module.register_forward_pre_hook(lambda _m, args: tuple(x.float() for x in args))
    params = {name[len(case.prefix):] if name.startswith(case.prefix) else name: p
              for name, p in model.named_parameters()}
    for name, p in params.items():
        p.requires_grad_(bool(trains(name)))
    snippet["add_adapters"](model, {case.prefix + k: v for k, v in adapters.items()}, "gelu")
    kwargs = model_inputs(case)
    logits = model(**kwargs).logits.float()
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
    (logits * weights).sum().backward()
    grads = {**{name: a.grad for name, a in adapters.items()},
             **{name: p.grad.float() for name, p in params.items() if trains(name)}}
    return logits.detach(), grads, adapters, weights, kwargs


def adapter_step(case, family, parity, tmp_path, m, precision):
    """dsee_parity's lora-step of the adapter method on the saved model: (result, the transformers step in fp32,
    the transformers step in `precision`)."""
    torch.manual_seed(0)
    folder = os.path.join(tmp_path, family)
    case.make_model().save_pretrained(folder)
    reference32 = transformers_step(case, family, m, bf16=False)
    reference = reference32 if precision == "fp32" else transformers_step(case, family, m, bf16=True)
    _, _, adapters, weights, kwargs = reference
    recipe = recipe_text({"run": {"precision": precision}, "tuning": {"method": "adapter", "adapter_size": m}})
    result = parity("lora-step", {"model": folder, "recipe": recipe},
                    {**kwargs, "loss_weights": weights, **{k: v.detach() for k, v in adapters.items()}}, out=True)
    check_equal(f"{family} adapter: trainable tensors, dsee vs transformers", sorted(result.json["trainable_dtype"]),
                sorted(reference[1]))
    return result, reference32, reference


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_logits_and_gradients(family, parity, tmp_path):
    case = lora_case(family, "eager")
    result, _, (logits, grads, _, _, _) = adapter_step(case, family, parity, tmp_path, 3, "fp32")
    out = result.tensors
    check_close(f"{family} adapter logits", out["logits"], logits, rel=TOLERANCE, reference="transformers")
    for name, grad in sorted(grads.items()):
        check_close(f"{family} adapter {name} grad", out[name + ".grad"], grad, rel=TOLERANCE,
                    reference="transformers")


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_bf16_logits_and_gradients(family, parity, tmp_path):
    case = lora_case(family, "eager")
    result, (logits32, grads32, *_), (logits, grads, *_) = adapter_step(case, family, parity, tmp_path, 3, "bf16")
    out = result.tensors
    not_fp32 = sorted(k for k, dtype in result.json["trainable_dtype"].items() if dtype != "F32")
    check(f"{family}: every dsee trainable tensor is fp32", not not_fp32, f"not fp32: {not_fp32}")
    check_close(f"{family} bf16 reference logits vs fp32 (for scale)", logits, logits32, rel=float("inf"),
                reference="fp32")
    check_close(f"{family} bf16 adapter logits", out["logits"].float(), logits, rel=BF16_LOGITS,
                reference="transformers-bf16")
    for name, grad in sorted(grads.items()):
        check_close(f"{family} bf16 reference {name} grad vs fp32 (for scale)", grad, grads32[name],
                    rel=float("inf"), reference="fp32")
        check_close(f"{family} bf16 adapter {name} grad", out[name + ".grad"], grad, rel=BF16_GRADS,
                    reference="transformers-bf16")


@pytest.fixture(scope="module")
def run(dsee, tmp_path_factory):
    """The adapter run's folder."""
    work = str(tmp_path_factory.mktemp("adapters"))
    recipe = os.path.join(work, "adapters.toml")
    with open(recipe, "w") as f:
        f.write(f"""[run]
name = "adapter"
out_dir = "{work}"
[task]
train_size = 128
dev_size = 64
[tuning]
method = "adapter"
adapter_size = 8
adapter_activation = "relu"
[train]
lr = 1e-2
epochs = 1
batch_size = 32
[export]
format = "hf"
""")
    run_recipe_file(dsee, recipe, "the adapter recipe")
    return os.path.join(work, "adapter")


def test_hf_export_with_the_documented_hooks(run):
    snippet = export_snippet()
    export = os.path.join(run, "export")
    dev = load_file(os.path.join(run, "data", "dev.safetensors"))
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(
        export, attn_implementation="eager").eval()
    snippet["apply_adapters"](exported, os.path.join(export, "adapters.safetensors"))
    with torch.no_grad():
        logits = exported(input_ids=dev["input_ids"]).logits
    own = load_file(os.path.join(run, "predictions-dev.safetensors"))["dev.logits"]
    check_close("adapter: hf export + hooks logits vs dsee's eval logits", logits, own, rel=TOLERANCE,
                reference="dsee")

    prefix = exported.base_model_prefix + "."
    trained = load_file(os.path.join(run, "trainable-train.safetensors"))
    saved = load_file(os.path.join(export, "adapters.safetensors"))
    check_equal("adapter: adapters.safetensors holds the trained adapter tensors", sorted(saved),
                sorted(prefix + n for n in trained if ".adapter." in n))
    for name, tensor in saved.items():
        check_equal(f"adapter: exported {name}", tensor, trained[name[len(prefix):]])
    check("adapter: training moved the up-projections off zero",
          any(t.abs().max() > 0 for n, t in saved.items() if n.endswith("up.weight")), "all zero")
    base = load_file(os.path.join(export, "model.safetensors"))
    for name, tensor in trained.items():
        if ".adapter." not in name:
            key = name if name.startswith("classifier.") else prefix + name
            check_equal(f"adapter: exported {key} is the trained tensor", base[key], tensor)
