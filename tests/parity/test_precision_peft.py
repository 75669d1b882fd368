"""Parity of dsee's mixed precision (run.precision = bf16) with PEFT's LoRA on
a bf16 base model with fp32 adapters.

The reference is what a PEFT user gets from `model.to(torch.bfloat16)` then
`get_peft_model(...)` (autocast_adapter_dtype=True keeps lora_A/lora_B in
fp32): PEFT's LoRA layer casts the bf16 input to fp32 for the adapter, adds
the fp32 update to the bf16 base output and casts the sum back to bf16 —
the arithmetic of dsee's Note [Mixed precision] (core/tuning.cpp). dsee
trains the task head in fp32 on the bf16 features; here PEFT's trainable
head copy (modules_to_save) is cast to fp32 with a pre-hook that casts its
input to fp32, which is the same computation.

For each case (as tests/parity/test_tuning_peft.py: BERT and RoBERTa with a
classification head, GPT-2 with its tied LM head) a tiny random fp32 model is
saved; dsee's precision_driver loads it in bf16. A, B are drawn here (B non-
zero) and copied to both; one forward on the same ids, loss = (logits ·
fixed weights).sum() in fp32, backward. Compared: logits and the gradients of
every A, B and the head, as max |dsee − peft| / max |peft|; every trainable
tensor of dsee must be fp32.

Bounds (torch 2.11 CPU, printed on every run): dsee-bf16 vs PEFT-bf16
logits ≤ 2e-2 and gradients ≤ 5e-2. Measured: BERT and RoBERTa bit-exact
(0.0: the same bf16 ops in the same order); GPT-2 logits 6.0e-3, gradients
≤ 1.4e-2 (PEFT adapts GPT-2's Conv1D with fan_in_fan_out, a transposed
weight, so single bf16 roundings differ and propagate). For scale, PEFT-bf16
against the fp32 PEFT model: logits 4.4e-3 (BERT, RoBERTa), 3.4e-2 (GPT-2);
gradients up to 2.2e-2 (encoders), 8.6e-2 (GPT-2).

Usage: test_precision_peft.py PRECISION_DRIVER WORK_DIR
"""
import os
import shutil
import subprocess
import sys

import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file

import transformers

LOGITS_BOUND = 2e-2
GRAD_BOUND = 5e-2
failures = []
passes = 0


def relative(actual, expected):
    actual, expected = actual.double(), expected.double()
    return (actual - expected).abs().max().item() / max(expected.abs().max().item(), 1e-30)


def check(name, actual, expected, bound, reference32=None):
    global passes
    if actual.shape != expected.shape:
        failures.append(f"{name}: shape {tuple(actual.shape)} != peft {tuple(expected.shape)}")
        print(f"FAIL {name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
        return
    err = relative(actual, expected)
    ok = err <= bound and expected.abs().max().item() > 0
    scale = f", peft-bf16 vs fp32 {relative(expected, reference32):.2e}" if reference32 is not None else ""
    print(f"{'ok  ' if ok else 'FAIL'} {name}: dsee-bf16 vs peft-bf16 {err:.2e} (bound {bound:.0e}){scale}")
    if ok:
        passes += 1
    else:
        failures.append(f"{name}: relative error {err:.2e} > {bound:.0e}")


def peft_step(model, peft_config, ab, kwargs, weights, bf16):
    """PEFT's LoRA step; returns logits (fp32 copy), {prefix: (A grad, B grad)}, {head name: grad}."""
    if bf16:
        model = model.to(torch.bfloat16)
    peft_model = get_peft_model(model, peft_config)
    peft_model.eval()
    lora = {}
    with torch.no_grad():
        for module_name, module in peft_model.named_modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                prefix = next(p for p in ab if module_name.endswith(p))
                a, b = module.lora_A["default"], module.lora_B["default"]
                assert a.weight.dtype == torch.float32, "PEFT should keep adapters in fp32"
                a.weight.copy_(ab[prefix][0])
                b.weight.copy_(ab[prefix][1])
                lora[prefix] = (a, b)
            if bf16 and module_name.endswith("modules_to_save"):
                head = module["default"].float()
                head.register_forward_pre_hook(
                    lambda _m, args: tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x
                                           for x in args))
    logits = peft_model(**kwargs).logits
    (logits.float() * weights).sum().backward()
    heads = {}
    for name, param in peft_model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            heads[name.split("model.", 2)[-1].replace("modules_to_save.default.", "")] = param.grad
    grads = {p: (a.weight.grad, b.weight.grad) for p, (a, b) in lora.items()}
    return logits.detach().float(), grads, heads


def run_case(name, make_model, peft_config, dsee_targets, prefix, ids, attention_mask, driver, work):
    folder = os.path.join(work, name)
    make_model().save_pretrained(folder)
    rank, alpha = peft_config.r, peft_config.lora_alpha

    # A, B for every adapted module, by dsee prefix, from a probe PEFT model.
    probe = get_peft_model(make_model(), peft_config)
    generator = torch.Generator().manual_seed(11)
    ab = {}
    for module_name, module in probe.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            ab[module_name.split(prefix, 1)[1]] = (torch.randn(a.shape, generator=generator) * 0.3,
                                                   torch.randn(b.shape, generator=generator) * 0.3)
    kwargs = {"input_ids": ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    logits_shape = probe(**kwargs).logits.shape
    weights = torch.randn(logits_shape, generator=generator)

    logits16, lora16, heads16 = peft_step(make_model(), peft_config, ab, kwargs, weights, bf16=True)
    logits32, lora32, heads32 = peft_step(make_model(), peft_config, ab, kwargs, weights, bf16=False)

    tensors = {"input_ids": ids, "loss_weights": weights}
    if attention_mask is not None:
        tensors["attention_mask"] = attention_mask
    for p, (a, b) in ab.items():
        tensors[p + ".lora_A"], tensors[p + ".lora_B"] = a.contiguous(), b.contiguous()
    input_path, output_path = os.path.join(work, name + "_in.safetensors"), os.path.join(work, name + "_out.safetensors")
    save_file(tensors, input_path)
    cmd = [driver, folder, input_path, output_path, str(rank), str(alpha), ",".join(dsee_targets)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        failures.append(f"{name}: precision_driver failed: {result.stderr.strip()}")
        print(result.stderr)
        return
    out = load_file(output_path)

    not_fp32 = [k[: -len(".dtype_is_fp32")] for k, v in out.items() if k.endswith(".dtype_is_fp32") and v.item() != 1]
    if not_fp32:
        failures.append(f"{name}: dsee trainable tensors not fp32: {not_fp32}")
    check(f"{name} logits", out["logits"].float(), logits16, LOGITS_BOUND, logits32)
    for p in ab:
        check(f"{name} {p}.lora_A grad", out[p + ".lora_A.grad"], lora16[p][0], GRAD_BOUND, lora32[p][0])
        check(f"{name} {p}.lora_B grad", out[p + ".lora_B.grad"], lora16[p][1], GRAD_BOUND, lora32[p][1])
    dsee_heads = sorted(k[: -len(".grad")] for k in out if k.endswith(".grad") and ".lora_" not in k)
    if sorted(heads16) != dsee_heads:
        failures.append(f"{name}: trainable head tensors differ: peft {sorted(heads16)}, dsee {dsee_heads}")
    for head_name in sorted(set(heads16) & set(dsee_heads)):
        check(f"{name} {head_name} grad", out[head_name + ".grad"], heads16[head_name].float(), GRAD_BOUND,
              heads32[head_name])


def main():
    driver, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    def seeded(factory):
        def make():
            torch.manual_seed(0)
            return factory().eval()
        return make

    bert_config = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa")
    ids = torch.randint(0, 60, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    run_case("bert", seeded(lambda: transformers.BertForSequenceClassification(bert_config)),
             LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"],
                        lora_dropout=0.0),
             ["query", "value"], "bert.", ids, mask, driver, work)

    roberta_config = transformers.RobertaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=2, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation="sdpa")
    ids = torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(3))
    run_case("roberta", seeded(lambda: transformers.RobertaForSequenceClassification(roberta_config)),
             LoraConfig(task_type=TaskType.SEQ_CLS, r=2, lora_alpha=5, target_modules=["query", "value"],
                        lora_dropout=0.0),
             ["query", "value"], "roberta.", ids, None, driver, work)

    gpt2_config = transformers.GPT2Config(
        vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=24, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    run_case("gpt2", seeded(lambda: transformers.GPT2LMHeadModel(gpt2_config)),
             LoraConfig(task_type=TaskType.CAUSAL_LM, r=3, lora_alpha=12, target_modules=["c_attn"],
                        fan_in_fan_out=True, lora_dropout=0.0),
             ["c_attn"], "transformer.", ids, None, driver, work)

    print(f"{passes} passed, {len(failures)} failed")
    for f in failures:
        print("  " + f)
    sys.exit(1 if failures or passes == 0 else 0)


if __name__ == "__main__":
    main()
