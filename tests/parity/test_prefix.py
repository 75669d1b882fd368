"""Parity of prefix tuning / P-tuning v2 (core/tuning/tuning.h (3),
tuning.method = prefix) with PEFT's PrefixTuningConfig.

  step    A tiny random transformers model (torch seed 0; BERT with a
          classification head and padding, RoBERTa, GPT-2 with its tied LM
          head and right padding) wrapped by PEFT's PrefixTuningConfig (L = 3;
          with and without prefix_projection, encoder_hidden_size 5). Every
          prefix tensor is drawn here and copied into PEFT's prompt encoder
          and dsee_parity's lora-step (tuning.method = prefix). The tensors
          dsee trains must be PEFT's trainable set (prompt encoder and
          modules_to_save head), with PEFT's get_nb_trainable_parameters
          count, which `dsee count --method prefix` must print too; one
          forward, loss = (logits * fixed weights).sum(): logits and every
          gradient within 1e-5 (max |diff| / max |ref|) of PEFT's autograd.
  zero    tuning.prefix_length = 0: dsee's logits are transformers' base
          model's (no prefix at all).
  generate  GPT-2 with a prefix, three left-padded prompts in one batch:
          dsee_parity's lora-generate (greedy, beam 4) gives the tokens of
          PEFT's generate (the prefix at the start of the key/value cache).
  export  `dsee run` of a tiny demo recipe with the prefix (projection on,
          export.format = hf): PeftModel.from_pretrained on the exported
          base model and its prefix/ adapter, and on the run's pretrained
          model with `dsee export --format peft`'s folder, gives the logits
          dsee's eval stage recorded within 1e-5.
"""
import os
import re
import subprocess

import pytest
import torch
import transformers
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model
from safetensors.torch import load_file

from harness import check, check_close, check_equal
from harness.lora import lora_case
from harness.runs import recipe_text, run_recipe_file

TOLERANCE = 1e-5
L = 3


def case_inputs(case):
    """input_ids and an attention mask with padding (GPT-2: right padding on row 1)."""
    kwargs = {"input_ids": case.ids}
    if case.attention_mask is not None:
        kwargs["attention_mask"] = case.attention_mask
    elif case.name == "gpt2":
        mask = torch.ones(case.ids.shape, dtype=torch.long)
        mask[1, 4:] = 0
        kwargs["attention_mask"] = mask
    return kwargs


def dsee_name(peft_name):
    """dsee's name of a trainable PEFT tensor: prompt_encoder.default.embedding.weight ->
    prefix.embedding.weight; base_model.classifier.modules_to_save.default.weight -> classifier.weight."""
    if peft_name.startswith("prompt_encoder.default."):
        return "prefix." + peft_name[len("prompt_encoder.default."):]
    return peft_name[len("base_model."):].replace("modules_to_save.default.", "")


def count_trainable(output):
    line = next(l for l in output.splitlines() if l.startswith("trainable"))
    return int(re.search(r"([\d,]+)", line[len("trainable"):]).group(1).replace(",", ""))


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_logits_gradients_and_count(family, projection, parity, dsee, tmp_path):
    case = lora_case(family, "eager")
    torch.manual_seed(0)
    model = case.make_model()
    folder = os.path.join(tmp_path, family)
    model.save_pretrained(folder)
    task = TaskType.CAUSAL_LM if family == "gpt2" else TaskType.SEQ_CLS
    peft_model = get_peft_model(model, PrefixTuningConfig(task_type=task, num_virtual_tokens=L,
                                                          prefix_projection=projection, encoder_hidden_size=5))
    peft_model.eval()
    generator = torch.Generator().manual_seed(4)
    trainable = {dsee_name(n): p for n, p in peft_model.named_parameters() if p.requires_grad}
    drawn = {}
    with torch.no_grad():
        for name, p in trainable.items():
            if name.startswith("prefix."):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
                drawn[name] = p.detach().clone()
    kwargs = case_inputs(case)
    logits = peft_model(**kwargs).logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
    (logits * weights).sum().backward()

    tuning = {"method": "prefix", "prefix_length": L, "prefix_projection": projection, "prefix_hidden": 5}
    result = parity("lora-step", {"model": folder, "recipe": recipe_text({"tuning": tuning})},
                    {**kwargs, "loss_weights": weights, **drawn}, out=True)
    out = result.tensors
    label = f"{family} prefix (projection {projection})"
    check_equal(f"{label}: trainable tensors, dsee vs PEFT", sorted(result.json["trainable_dtype"]),
                sorted(trainable))
    count = peft_model.get_nb_trainable_parameters()[0]
    check_equal(f"{label}: trainable count, dsee_parity vs PEFT",
                sum(out[n + ".grad"].numel() for n in trainable), count)
    args = [dsee, "count", "--model", folder, "--method", "prefix", "--prefix-length", str(L)]
    if projection:
        args += ["--prefix-projection", "--prefix-hidden", "5"]
    counted = subprocess.run(args, capture_output=True, text=True)
    check("dsee count --method prefix exits 0", counted.returncode == 0, counted.stderr)
    check_equal(f"{label}: dsee count's trainable vs PEFT", count_trainable(counted.stdout), count)
    check_close(f"{label} logits", out["logits"], logits.detach(), rel=TOLERANCE, reference="PEFT")
    for name, p in trainable.items():
        check_close(f"{label} {name} grad", out[name + ".grad"], p.grad, rel=TOLERANCE, reference="PEFT")


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_length_zero_is_the_base_model(family, parity, tmp_path):
    case = lora_case(family, "eager")
    torch.manual_seed(0)
    model = case.make_model()
    folder = os.path.join(tmp_path, family)
    model.save_pretrained(folder)
    kwargs = case_inputs(case)
    logits = model(**kwargs).logits
    weights = torch.ones(logits.shape)
    width = 2 * model.config.num_hidden_layers * model.config.hidden_size
    result = parity("lora-step", {"model": folder, "recipe": recipe_text({"tuning": {"method": "prefix",
                                                                                     "prefix_length": 0}})},
                    {**kwargs, "loss_weights": weights, "prefix.embedding.weight": torch.zeros(0, width)}, out=True)
    check_equal(f"{family} prefix_length 0: the empty prefix has no gradient", "prefix.embedding.weight.grad" in
                result.tensors, False)
    check_close(f"{family} prefix_length 0 logits vs the base model", result.tensors["logits"], logits.detach(),
                rel=TOLERANCE, reference="transformers")


@pytest.mark.parametrize("beam", [1, 4])
def test_gpt2_generation_matches_peft(beam, parity, tmp_path):
    """Greedy and beam search with the prefix (left-padded prompts in one
    batch, the prefix at the start of the cache) give PEFT's generate tokens."""
    case = lora_case("gpt2", "eager")
    torch.manual_seed(0)
    model = case.make_model()
    folder = os.path.join(tmp_path, "gpt2")
    model.save_pretrained(folder)
    peft_model = get_peft_model(model, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=L)).eval()
    embedding = peft_model.prompt_encoder.default.embedding.weight
    with torch.no_grad():
        embedding.copy_(torch.randn(embedding.shape, generator=torch.Generator().manual_seed(6)) * 2)
    prompts, eos, new = [[5, 9, 2, 7, 11], [3, 8], [20, 21, 22]], [0], 8
    longest = max(len(p) for p in prompts)
    ids = torch.tensor([[eos[0]] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        rows = peft_model.generate(input_ids=ids, attention_mask=mask, num_beams=beam, max_new_tokens=new,
                                   eos_token_id=eos, pad_token_id=eos[0], do_sample=False)
    expected = []
    for row in rows[:, longest:].tolist():
        expected.append(row[: row.index(eos[0]) + 1] if eos[0] in row else row)
    request = {"model": folder, "recipe": recipe_text({"tuning": {"method": "prefix", "prefix_length": L}}),
               "prompts": prompts, "beam": beam, "length_penalty": 1.0, "no_repeat_ngram": 0,
               "max_new_tokens": new, "eos": eos}
    got = parity("lora-generate", request, {"prefix.embedding.weight": embedding.detach().clone()}).json["tokens"]
    check_equal(f"prefix generation, beam {beam}: new tokens, dsee vs PEFT", got, expected)
    check(f"prefix generation, beam {beam}: a row decodes several tokens", max(len(r) for r in expected) > 2)
    with torch.no_grad():
        base = model.generate(input_ids=ids, attention_mask=mask, num_beams=beam, max_new_tokens=new,
                              eos_token_id=eos, pad_token_id=eos[0], do_sample=False)[:, longest:].tolist()
    check(f"prefix generation, beam {beam}: the prefix changes the output", base != rows[:, longest:].tolist())


@pytest.fixture(scope="module")
def run(dsee, tmp_path_factory):
    """The prefix run's folder (projection on, exported as hf)."""
    work = str(tmp_path_factory.mktemp("prefix"))
    recipe = os.path.join(work, "prefix.toml")
    with open(recipe, "w") as f:
        f.write(f"""[run]
name = "prefix"
out_dir = "{work}"
[task]
train_size = 64
dev_size = 32
[tuning]
method = "prefix"
prefix_length = 4
prefix_projection = true
prefix_hidden = 16
[train]
lr = 1e-2
epochs = 1
batch_size = 32
[export]
format = "hf"
""")
    run_recipe_file(dsee, recipe, "the prefix recipe")
    return os.path.join(work, "prefix")


def test_hf_and_peft_exports_load_with_peft(run, dsee, tmp_path):
    export = os.path.join(run, "export")
    dev = load_file(os.path.join(run, "data", "dev.safetensors"))
    base = transformers.AutoModelForSequenceClassification.from_pretrained(export, attn_implementation="eager")
    exported = PeftModel.from_pretrained(base, os.path.join(export, "prefix")).eval()
    with torch.no_grad():
        logits = exported(input_ids=dev["input_ids"]).logits
    own = load_file(os.path.join(run, "predictions-dev.safetensors"))["dev.logits"]
    check_close("prefix: hf export under PeftModel.from_pretrained vs dsee's eval logits", logits, own,
                rel=TOLERANCE, reference="dsee")
    saved = load_file(os.path.join(export, "prefix", "adapter_model.safetensors"))
    trained = load_file(os.path.join(run, "trainable-train.safetensors"))
    check_equal("prefix: the adapter holds P and the head", sorted(saved),
                sorted(["prompt_embeddings"] + ["base_model." + n for n in trained if not n.startswith("prefix.")]))

    # --format peft: the adapter alone, onto the run's pretrained model.
    out = os.path.join(tmp_path, "peft")
    result = subprocess.run([dsee, "export", run, "--format", "peft", "--out", out], capture_output=True, text=True)
    check("dsee export --format peft of the prefix run exits 0", result.returncode == 0, result.stderr[-2000:])
    base = transformers.AutoModelForSequenceClassification.from_pretrained(
        os.path.join(run, "data", "pretrained"), attn_implementation="eager")
    with torch.no_grad():
        logits = PeftModel.from_pretrained(base, out).eval()(input_ids=dev["input_ids"]).logits
    check_close("prefix: peft export onto the pretrained model vs dsee's eval logits", logits, own, rel=TOLERANCE,
                reference="dsee")
