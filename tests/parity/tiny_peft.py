"""Pieces shared by the LoRA parity scripts (test_tuning_peft.py,
test_precision_peft.py, test_lora_training_peft.py, test_export.py): the
pass/fail tally, the fp32 relative-error check, the tiny random BERT /
RoBERTa / GPT-2 configs with their PEFT LoraConfig cases, and the walk over
a PEFT model's adapters and trainable head.

Kept to what the scripts really do alike: each script still draws its own
values, runs its own reference and sets its own bounds. Imported from the
scripts' own folder (they run as `python tests/parity/X.py`).
"""
import os
import subprocess
import sys
from collections import namedtuple

import torch
import transformers
from peft import LoraConfig, TaskType
from safetensors.torch import load_file, save_file


class Checks:
    """Counts checks; finish() prints the summary and exits 1 on any failure
    or when nothing passed (a run that checked nothing is not a pass)."""

    def __init__(self):
        self.passes = 0
        self.failures = []

    def expect(self, ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if ok:
            self.passes += 1
        else:
            self.failures.append(what)

    def fail(self, what):
        self.failures.append(what)

    def close(self, name, actual, expected, tolerance, reference):
        """max |actual - expected| / max |expected| <= tolerance, same shape,
        expected not all zero; `reference` names the expected side."""
        if actual.shape != expected.shape:
            self.expect(False, f"{name}: shape {tuple(actual.shape)} != {reference} {tuple(expected.shape)}")
            return
        scale = expected.abs().max().item()
        err = (actual - expected).abs().max().item() / max(scale, 1e-30)
        self.expect(err <= tolerance and scale > 0,
                    f"{name}: relative error {err:.2e} (max |{reference}| {scale:.2e})")

    def finish(self):
        print(f"{self.passes} passed, {len(self.failures)} failed")
        for f in self.failures:
            print("  " + f)
        sys.exit(1 if self.failures or self.passes == 0 else 0)


# Tiny models, dropout off. `extra` adds config fields (attn_implementation,
# classifier_dropout, ...).
def bert_config(**extra):
    return transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        **extra)


def roberta_config(**extra):
    return transformers.RobertaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=2, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **extra)


def gpt2_config(**extra):
    return transformers.GPT2Config(
        vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=24, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **extra)


# One LoRA parity case: make_model() builds the transformers model (eval mode,
# from the global RNG), peft_config wraps it, dsee_targets are the matching
# adapted.h patterns, prefix is what PEFT's module names carry before dsee's
# names ("bert." ...); ids [batch, seq] and attention_mask (or None).
LoraCase = namedtuple("LoraCase", "name make_model peft_config dsee_targets prefix ids attention_mask")


def lora_cases(attn_implementation):
    """BERT (classification head, padding in the batch), RoBERTa (head
    classifier.dense + out_proj) and GPT-2 (fused c_attn with fan_in_fan_out,
    tied LM head), as compared by test_tuning_peft.py / test_precision_peft.py."""
    bert = bert_config(attn_implementation=attn_implementation)
    bert_ids = torch.randint(0, 60, (3, 7), generator=torch.Generator().manual_seed(1))
    bert_mask = torch.ones(3, 7, dtype=torch.long)
    bert_mask[1, 5:] = 0
    bert_mask[2, 3:] = 0
    roberta = roberta_config(attn_implementation=attn_implementation)
    roberta_ids = torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(3))
    gpt2 = gpt2_config(attn_implementation=attn_implementation)
    gpt2_ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    return [
        LoraCase("bert", lambda: transformers.BertForSequenceClassification(bert).eval(),
                 LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"],
                            lora_dropout=0.0),
                 ["query", "value"], "bert.", bert_ids, bert_mask),
        LoraCase("roberta", lambda: transformers.RobertaForSequenceClassification(roberta).eval(),
                 LoraConfig(task_type=TaskType.SEQ_CLS, r=2, lora_alpha=5, target_modules=["query", "value"],
                            lora_dropout=0.0),
                 ["query", "value"], "roberta.", roberta_ids, None),
        LoraCase("gpt2", lambda: transformers.GPT2LMHeadModel(gpt2).eval(),
                 LoraConfig(task_type=TaskType.CAUSAL_LM, r=3, lora_alpha=12, target_modules=["c_attn"],
                            fan_in_fan_out=True, lora_dropout=0.0),
                 ["c_attn"], "transformer.", gpt2_ids, None),
    ]


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


def head_name(peft_name):
    """dsee's name of a PEFT parameter of the base model:
    base_model.model.classifier.modules_to_save.default.weight -> classifier.weight."""
    return peft_name.split("model.", 2)[-1].replace("modules_to_save.default.", "")


def trainable_heads(peft_model):
    """{dsee name: parameter} of every trainable tensor that is not an adapter."""
    return {head_name(name): param for name, param in peft_model.named_parameters()
            if param.requires_grad and "lora_" not in name}


def dsee_heads(out):
    """The sorted names of the head tensors a driver returned a gradient for."""
    return sorted(k[: -len(".grad")] for k in out if k.endswith(".grad") and ".lora_" not in k)


def run_lora_driver(driver, work, case, folder, tensors):
    """Saves `tensors` as <work>/<name>_in.safetensors and runs
    `driver MODEL_DIR IN OUT RANK ALPHA TARGETS` (tests/parity/lora_from_file.h);
    returns (the CompletedProcess, OUT's tensors or None when it failed)."""
    input_path = os.path.join(work, case.name + "_in.safetensors")
    output_path = os.path.join(work, case.name + "_out.safetensors")
    save_file(tensors, input_path)
    cmd = [driver, folder, input_path, output_path, str(case.peft_config.r), str(case.peft_config.lora_alpha),
           ",".join(case.dsee_targets)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    return result, (load_file(output_path) if result.returncode == 0 else None)
