"""The LoRA parity cases against PEFT (test_tuning_peft.py,
test_precision_peft.py, test_lora_training_peft.py, test_export.py): the tiny
BERT / RoBERTa / GPT-2 cases with their PEFT LoraConfig, the walk over a PEFT
model's adapters and trainable head, and the lora-step request of
dsee_parity. Each test still draws its own values, runs its own reference
and sets its own bounds."""
from collections import namedtuple

import torch
import transformers
from peft import LoraConfig, TaskType

from harness.models import bert_config, gpt2_config, roberta_config
from harness.runs import recipe_text

# One LoRA parity case: make_model() builds the transformers model (eval mode,
# from the global RNG), peft_config wraps it, dsee_targets are the matching
# adapted.h patterns, prefix is what PEFT's module names carry before dsee's
# names ("bert." ...); ids [batch, seq] and attention_mask (or None).
LoraCase = namedtuple("LoraCase", "name make_model peft_config dsee_targets prefix ids attention_mask")
CASE_NAMES = ["bert", "roberta", "gpt2"]


def lora_case(name, attn_implementation):
    """BERT (classification head, padding in the batch), RoBERTa (head
    classifier.dense + out_proj) or GPT-2 (fused c_attn with fan_in_fan_out,
    tied LM head)."""
    if name == "bert":
        bert = bert_config(attn_implementation=attn_implementation)
        ids = torch.randint(0, 60, (3, 7), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(3, 7, dtype=torch.long)
        mask[1, 5:] = 0
        mask[2, 3:] = 0
        return LoraCase("bert", lambda: transformers.BertForSequenceClassification(bert).eval(),
                        LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"],
                                   lora_dropout=0.0),
                        ["query", "value"], "bert.", ids, mask)
    if name == "roberta":
        roberta = roberta_config(attn_implementation=attn_implementation)
        ids = torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(3))
        return LoraCase("roberta", lambda: transformers.RobertaForSequenceClassification(roberta).eval(),
                        LoraConfig(task_type=TaskType.SEQ_CLS, r=2, lora_alpha=5, target_modules=["query", "value"],
                                   lora_dropout=0.0),
                        ["query", "value"], "roberta.", ids, None)
    assert name == "gpt2", name
    gpt2 = gpt2_config(attn_implementation=attn_implementation)
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    return LoraCase("gpt2", lambda: transformers.GPT2LMHeadModel(gpt2).eval(),
                    LoraConfig(task_type=TaskType.CAUSAL_LM, r=3, lora_alpha=12, target_modules=["c_attn"],
                               fan_in_fan_out=True, lora_dropout=0.0),
                    ["c_attn"], "transformer.", ids, None)


def model_inputs(case):
    """The forward's keyword arguments: input_ids, and attention_mask when the case has one."""
    kwargs = {"input_ids": case.ids}
    if case.attention_mask is not None:
        kwargs["attention_mask"] = case.attention_mask
    return kwargs


def lora_modules(peft_model, prefix):
    """(dsee prefix, lora_A Linear, lora_B Linear) of every adapted module, in
    PEFT's module order; the dsee prefix is the module name after `prefix`."""
    for module_name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            yield module_name.split(prefix, 1)[1], module.lora_A["default"], module.lora_B["default"]


def draw_lora(peft_model, prefix, generator):
    """{dsee prefix: (A, B)}, both N(0, 0.3²) from `generator` (A then B, per
    module in order): B non-zero, so A's gradient is not trivially zero."""
    return {p: (torch.randn(a.weight.shape, generator=generator) * 0.3,
                torch.randn(b.weight.shape, generator=generator) * 0.3)
            for p, a, b in lora_modules(peft_model, prefix)}


def copy_lora(peft_model, prefix, ab):
    """Copies {dsee prefix: (A, B)} into the PEFT model (KeyError for a module
    `ab` lacks); returns {dsee prefix: (lora_A Linear, lora_B Linear)}."""
    lora = {}
    with torch.no_grad():
        for p, a, b in lora_modules(peft_model, prefix):
            a.weight.copy_(ab[p][0])
            b.weight.copy_(ab[p][1])
            lora[p] = (a, b)
    return lora


def lora_tensors(ab):
    """{"<prefix>.lora_A": A, "<prefix>.lora_B": B}: the adapters as dsee_parity reads them."""
    tensors = {}
    for p, (a, b) in ab.items():
        tensors[p + ".lora_A"], tensors[p + ".lora_B"] = a.contiguous(), b.contiguous()
    return tensors


def lora_recipe(rank, alpha, targets, precision="fp32", train=None):
    """The recipe dsee_parity's LoRA modes read: run.precision, the tuning
    table of LoRA with `rank`, `alpha` and `targets` (adapted.h patterns) and
    the [train] keys of `train`."""
    tables = {"run": {"precision": precision},
              "tuning": {"method": "lora", "rank": rank, "alpha": float(alpha), "target_modules": targets}}
    if train:
        tables["train"] = train
    return recipe_text(tables)


def lora_request(case, folder, precision="fp32"):
    """The request of dsee_parity's lora-step for `case` on the model saved in `folder`."""
    return {"model": folder,
            "recipe": lora_recipe(case.peft_config.r, case.peft_config.lora_alpha, case.dsee_targets, precision)}


def head_name(peft_name):
    """dsee's name of a PEFT parameter of the base model:
    base_model.model.classifier.modules_to_save.default.weight -> classifier.weight."""
    return peft_name.split("model.", 2)[-1].replace("modules_to_save.default.", "")


def trainable_heads(peft_model):
    """{dsee name: parameter} of every trainable tensor that is not an adapter."""
    return {head_name(name): param for name, param in peft_model.named_parameters()
            if param.requires_grad and "lora_" not in name}


def dsee_heads(out):
    """The sorted names of the head tensors dsee returned a gradient for."""
    return sorted(k[: -len(".grad")] for k in out if k.endswith(".grad") and ".lora_" not in k)
