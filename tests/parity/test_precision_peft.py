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
import sys

import torch
from peft import get_peft_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_peft  # noqa: E402

LOGITS_BOUND = 2e-2
GRAD_BOUND = 5e-2
checks = tiny_peft.Checks()


def relative(actual, expected):
    actual, expected = actual.double(), expected.double()
    return (actual - expected).abs().max().item() / max(expected.abs().max().item(), 1e-30)


def check(name, actual, expected, bound, reference32=None):
    if actual.shape != expected.shape:
        checks.expect(False, f"{name}: shape {tuple(actual.shape)} != peft {tuple(expected.shape)}")
        return
    err = relative(actual, expected)
    ok = err <= bound and expected.abs().max().item() > 0
    scale = f", peft-bf16 vs fp32 {relative(expected, reference32):.2e}" if reference32 is not None else ""
    checks.expect(ok, f"{name}: dsee-bf16 vs peft-bf16 {err:.2e} (bound {bound:.0e}){scale}")


def peft_step(model, case, ab, weights, bf16):
    """PEFT's LoRA step; returns logits (fp32 copy), {prefix: (A grad, B grad)}, {head name: grad}."""
    if bf16:
        model = model.to(torch.bfloat16)
    peft_model = get_peft_model(model, case.peft_config)
    peft_model.eval()
    lora = tiny_peft.copy_lora(peft_model, case.prefix, ab)
    for a, _ in lora.values():
        assert a.weight.dtype == torch.float32, "PEFT should keep adapters in fp32"
    if bf16:
        for module_name, module in peft_model.named_modules():
            if module_name.endswith("modules_to_save"):
                head = module["default"].float()
                head.register_forward_pre_hook(
                    lambda _m, args: tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x
                                           for x in args))
    logits = peft_model(**tiny_peft.model_inputs(case)).logits
    (logits.float() * weights).sum().backward()
    heads = {name: param.grad for name, param in tiny_peft.trainable_heads(peft_model).items()}
    grads = {p: (a.weight.grad, b.weight.grad) for p, (a, b) in lora.items()}
    return logits.detach().float(), grads, heads


def run_case(case, make_model, driver, work):
    name = case.name
    folder = os.path.join(work, name)
    make_model().save_pretrained(folder)

    # A, B for every adapted module, by dsee prefix, from a probe PEFT model.
    probe = get_peft_model(make_model(), case.peft_config)
    generator = torch.Generator().manual_seed(11)
    ab = tiny_peft.draw_lora(probe, case.prefix, generator)
    logits_shape = probe(**tiny_peft.model_inputs(case)).logits.shape
    weights = torch.randn(logits_shape, generator=generator)

    logits16, lora16, heads16 = peft_step(make_model(), case, ab, weights, bf16=True)
    logits32, lora32, heads32 = peft_step(make_model(), case, ab, weights, bf16=False)

    tensors = {**tiny_peft.model_inputs(case), "loss_weights": weights}
    for p, (a, b) in ab.items():
        tensors[p + ".lora_A"], tensors[p + ".lora_B"] = a.contiguous(), b.contiguous()
    result, out = tiny_peft.run_lora_driver(driver, work, case, folder, tensors)
    if out is None:
        checks.fail(f"{name}: precision_driver failed: {result.stderr.strip()}")
        print(result.stderr)
        return

    not_fp32 = [k[: -len(".dtype_is_fp32")] for k, v in out.items() if k.endswith(".dtype_is_fp32") and v.item() != 1]
    if not_fp32:
        checks.fail(f"{name}: dsee trainable tensors not fp32: {not_fp32}")
    check(f"{name} logits", out["logits"].float(), logits16, LOGITS_BOUND, logits32)
    for p in ab:
        check(f"{name} {p}.lora_A grad", out[p + ".lora_A.grad"], lora16[p][0], GRAD_BOUND, lora32[p][0])
        check(f"{name} {p}.lora_B grad", out[p + ".lora_B.grad"], lora16[p][1], GRAD_BOUND, lora32[p][1])
    dsee_heads = tiny_peft.dsee_heads(out)
    if sorted(heads16) != dsee_heads:
        checks.fail(f"{name}: trainable head tensors differ: peft {sorted(heads16)}, dsee {dsee_heads}")
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
            return factory()
        return make

    for case in tiny_peft.lora_cases("sdpa"):
        run_case(case, seeded(case.make_model), driver, work)
    checks.finish()


if __name__ == "__main__":
    main()
