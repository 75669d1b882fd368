"""Parity of dsee's LoRA (core/tuning/tuning.h, method lora) with PEFT's LoRA.

For each case a tiny random transformers model is saved as a Hugging Face
folder and wrapped with peft's LoraConfig (lora_dropout 0). A and B are drawn
here (B non-zero, so A's gradient is not trivially zero) and copied into both
PEFT's lora_A/lora_B and, through a safetensors file, into dsee's
tuning_driver. Both run one forward on the same ids, loss =
(logits * fixed weights).sum(), and backpropagate; logits and the gradients
of every A, B and of the task head are compared.

  bert     BertForSequenceClassification, target_modules ["query", "value"],
           task_type SEQ_CLS (PEFT trains the classifier through
           modules_to_save; dsee trains "classifier.*"); padding in the batch.
  roberta  RobertaForSequenceClassification, the same (head
           classifier.dense + classifier.out_proj).
  gpt2     GPT2LMHeadModel, PEFT target_modules ["c_attn"] with
           fan_in_fan_out=True (PEFT adapts the whole fused q|k|v matrix)
           against dsee's whole-matrix pattern "c_attn"; no trainable head
           (tied LM head).

Tolerance: max |dsee - peft| / max |peft| <= 1e-5 per tensor (fp32, CPU).

Usage: test_tuning_peft.py TUNING_DRIVER WORK_DIR
"""
import os
import shutil
import sys

import torch
from peft import get_peft_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_peft  # noqa: E402

TOLERANCE = 1e-5
checks = tiny_peft.Checks()


def check(name, actual, expected):
    checks.close(name, actual, expected, TOLERANCE, "peft")


def run_case(case, model, driver, work):
    name = case.name
    folder = os.path.join(work, name)
    model.save_pretrained(folder)
    peft_model = get_peft_model(model, case.peft_config)
    peft_model.eval()  # no dropout anywhere; gradients still flow

    generator = torch.Generator().manual_seed(11)
    ab = tiny_peft.draw_lora(peft_model, case.prefix, generator)
    lora = tiny_peft.copy_lora(peft_model, case.prefix, ab)  # dsee prefix -> (peft lora_A, lora_B module)
    if not lora:
        checks.fail(f"{name}: PEFT adapted no module")
        return
    kwargs = tiny_peft.model_inputs(case)
    tensors = dict(kwargs)
    for p, (a, b) in ab.items():
        tensors[p + ".lora_A"], tensors[p + ".lora_B"] = a.contiguous(), b.contiguous()

    logits = peft_model(**kwargs).logits
    weights = torch.randn(logits.shape, generator=generator)
    tensors["loss_weights"] = weights
    (logits * weights).sum().backward()

    result, out = tiny_peft.run_lora_driver(driver, work, case, folder, tensors)
    if out is None:
        checks.fail(f"{name}: tuning_driver failed: {result.stderr.strip()}")
        print(result.stderr)
        return

    check(f"{name} logits", out["logits"], logits.detach())
    for dsee_prefix, (a, b) in lora.items():
        check(f"{name} {dsee_prefix}.lora_A grad", out[dsee_prefix + ".lora_A.grad"], a.weight.grad)
        check(f"{name} {dsee_prefix}.lora_B grad", out[dsee_prefix + ".lora_B.grad"], b.weight.grad)
    heads = tiny_peft.trainable_heads(peft_model)
    dsee_heads = tiny_peft.dsee_heads(out)
    if sorted(heads) != dsee_heads:
        checks.expect(False, f"{name}: trainable head tensors differ: peft {sorted(heads)}, dsee {dsee_heads}")
    for head_name in sorted(set(heads) & set(dsee_heads)):
        check(f"{name} {head_name} grad", out[head_name + ".grad"], heads[head_name].grad)


def main():
    driver, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)
    # Each model is built just before its case runs: PEFT's own A init draws
    # from the global RNG too, so the order fixes every model's weights.
    for case in tiny_peft.lora_cases("eager"):
        run_case(case, case.make_model(), driver, work)
    checks.finish()


if __name__ == "__main__":
    main()
