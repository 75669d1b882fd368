"""Parity of dsee's LoRA (core/tuning/tuning.h, method lora) with PEFT's LoRA.

For each case a tiny random transformers model (torch seed 0) is saved as a
Hugging Face folder and wrapped with peft's LoraConfig (lora_dropout 0). A
and B are drawn here (B non-zero, so A's gradient is not trivially zero) and
copied into both PEFT's lora_A/lora_B and, through a safetensors file, into
dsee_parity's lora-step. Both run one forward on the same ids, loss =
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
"""
import os

import pytest
import torch
from peft import get_peft_model

from harness import check, check_close, check_equal
from harness.lora import (CASE_NAMES, copy_lora, draw_lora, dsee_heads, lora_case, lora_request, lora_tensors,
                          model_inputs, trainable_heads)

TOLERANCE = 1e-5


@pytest.mark.parametrize("name", CASE_NAMES)
def test_lora_step_matches_peft(name, parity, tmp_path):
    case = lora_case(name, "eager")
    torch.manual_seed(0)  # the model, then PEFT's own A init, draw from the global generator
    model = case.make_model()
    folder = os.path.join(tmp_path, name)
    model.save_pretrained(folder)
    peft_model = get_peft_model(model, case.peft_config)
    peft_model.eval()  # no dropout anywhere; gradients still flow

    generator = torch.Generator().manual_seed(11)
    ab = draw_lora(peft_model, case.prefix, generator)
    lora = copy_lora(peft_model, case.prefix, ab)  # dsee prefix -> (peft lora_A, lora_B module)
    check(f"{name}: PEFT adapted modules", len(lora) > 0, f"{len(lora)}")
    kwargs = model_inputs(case)
    logits = peft_model(**kwargs).logits
    weights = torch.randn(logits.shape, generator=generator)
    (logits * weights).sum().backward()

    out = parity("lora-step", lora_request(case, folder), {**kwargs, **lora_tensors(ab), "loss_weights": weights},
                 out=True).tensors

    check_close(f"{name} logits", out["logits"], logits.detach(), rel=TOLERANCE, reference="peft")
    for dsee_prefix, (a, b) in lora.items():
        check_close(f"{name} {dsee_prefix}.lora_A grad", out[dsee_prefix + ".lora_A.grad"], a.weight.grad,
                    rel=TOLERANCE, reference="peft")
        check_close(f"{name} {dsee_prefix}.lora_B grad", out[dsee_prefix + ".lora_B.grad"], b.weight.grad,
                    rel=TOLERANCE, reference="peft")
    heads = trainable_heads(peft_model)
    check_equal(f"{name}: trainable head tensors, dsee vs peft", dsee_heads(out), sorted(heads))
    for head_name in sorted(heads):
        check_close(f"{name} {head_name} grad", out[head_name + ".grad"], heads[head_name].grad, rel=TOLERANCE,
                    reference="peft")
