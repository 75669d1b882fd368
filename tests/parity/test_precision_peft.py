"""Parity of dsee's mixed precision (run.precision = bf16) with PEFT's LoRA on
a bf16 base model with fp32 adapters.

The reference is what a PEFT user gets from `model.to(torch.bfloat16)` then
`get_peft_model(...)` (autocast_adapter_dtype=True keeps lora_A/lora_B in
fp32): PEFT's LoRA layer casts the bf16 input to fp32 for the adapter, adds
the fp32 update to the bf16 base output and casts the sum back to bf16 —
the arithmetic of dsee's Note [Mixed precision] (core/tuning/tuning.cpp). dsee
trains the task head in fp32 on the bf16 features; here PEFT's trainable
head copy (modules_to_save) is cast to fp32 with a pre-hook that casts its
input to fp32, which is the same computation.

For each case (as tests/parity/test_tuning_peft.py: BERT and RoBERTa with a
classification head, GPT-2 with its tied LM head) a tiny random fp32 model is
saved; dsee_parity's lora-step loads it with run.precision = bf16. A, B are
drawn here (B non-zero) and copied to both; one forward on the same ids,
loss = (logits · fixed weights).sum() in fp32, backward. Compared: logits and
the gradients of every A, B and the head, as max |dsee − peft| / max |peft|;
every trainable tensor of dsee must be fp32.

Bounds (torch 2.11 CPU, printed on every run): dsee-bf16 vs PEFT-bf16
logits ≤ 2e-2 and gradients ≤ 5e-2. Measured: BERT and RoBERTa bit-exact
(0.0: the same bf16 ops in the same order); GPT-2 logits 6.0e-3, gradients
≤ 1.4e-2 (PEFT adapts GPT-2's Conv1D with fan_in_fan_out, a transposed
weight, so single bf16 roundings differ and propagate). For scale, PEFT-bf16
against the fp32 PEFT model: logits 4.4e-3 (BERT, RoBERTa), 3.4e-2 (GPT-2);
gradients up to 2.2e-2 (encoders), 8.6e-2 (GPT-2).
"""
import os

import pytest
import torch
from peft import get_peft_model

from harness import check, check_close, check_equal
from harness.lora import (CASE_NAMES, copy_lora, draw_lora, dsee_heads, lora_case, lora_request, lora_tensors,
                          model_inputs, trainable_heads)

LOGITS_BOUND = 2e-2
GRAD_BOUND = 5e-2


def peft_step(model, case, ab, weights, bf16):
    """PEFT's LoRA step; returns logits (fp32 copy), {prefix: (A grad, B grad)}, {head name: grad}."""
    if bf16:
        model = model.to(torch.bfloat16)
    peft_model = get_peft_model(model, case.peft_config)
    peft_model.eval()
    lora = copy_lora(peft_model, case.prefix, ab)
    for a, _ in lora.values():
        assert a.weight.dtype == torch.float32, "PEFT should keep adapters in fp32"
    if bf16:
        for module_name, module in peft_model.named_modules():
            if module_name.endswith("modules_to_save"):
                head = module["default"].float()
                head.register_forward_pre_hook(
                    lambda _m, args: tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x
                                           for x in args))
    logits = peft_model(**model_inputs(case)).logits
    (logits.float() * weights).sum().backward()
    heads = {name: param.grad for name, param in trainable_heads(peft_model).items()}
    grads = {p: (a.weight.grad, b.weight.grad) for p, (a, b) in lora.items()}
    return logits.detach().float(), grads, heads


def check_bf16(name, actual, expected, bound, reference32):
    """dsee-bf16 against PEFT-bf16 within `bound`; PEFT-bf16 against the fp32
    PEFT model printed for scale."""
    check_close(f"{name}: PEFT-bf16 vs fp32 (for scale)", expected, reference32, rel=float("inf"), reference="fp32")
    check_close(f"{name}: dsee-bf16 vs PEFT-bf16", actual, expected, rel=bound, reference="peft-bf16")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bf16_lora_step_matches_peft(name, parity, tmp_path):
    case = lora_case(name, "sdpa")

    def make_model():
        torch.manual_seed(0)
        return case.make_model()

    folder = os.path.join(tmp_path, name)
    make_model().save_pretrained(folder)
    # A, B for every adapted module, by dsee prefix, from a probe PEFT model.
    probe = get_peft_model(make_model(), case.peft_config)
    generator = torch.Generator().manual_seed(11)
    ab = draw_lora(probe, case.prefix, generator)
    logits_shape = probe(**model_inputs(case)).logits.shape
    weights = torch.randn(logits_shape, generator=generator)

    logits16, lora16, heads16 = peft_step(make_model(), case, ab, weights, bf16=True)
    logits32, lora32, heads32 = peft_step(make_model(), case, ab, weights, bf16=False)

    result = parity("lora-step", lora_request(case, folder, precision="bf16"),
                    {**model_inputs(case), **lora_tensors(ab), "loss_weights": weights}, out=True)
    out = result.tensors
    not_fp32 = sorted(k for k, dtype in result.json["trainable_dtype"].items() if dtype != "F32")
    check(f"{name}: every dsee trainable tensor is fp32", not not_fp32, f"not fp32: {not_fp32}")
    check_bf16(f"{name} logits", out["logits"].float(), logits16, LOGITS_BOUND, logits32)
    for p in ab:
        check_bf16(f"{name} {p}.lora_A grad", out[p + ".lora_A.grad"], lora16[p][0], GRAD_BOUND, lora32[p][0])
        check_bf16(f"{name} {p}.lora_B grad", out[p + ".lora_B.grad"], lora16[p][1], GRAD_BOUND, lora32[p][1])
    check_equal(f"{name}: trainable head tensors, dsee vs peft", dsee_heads(out), sorted(heads16))
    for head_name in sorted(heads16):
        check_bf16(f"{name} {head_name} grad", out[head_name + ".grad"], heads16[head_name].float(), GRAD_BOUND,
                   heads32[head_name])
