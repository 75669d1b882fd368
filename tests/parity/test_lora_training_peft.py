"""Parity of a dsee LoRA training run with PEFT + a plain PyTorch loop.

A small random BertForSequenceClassification (dropout 0) is saved as a
Hugging Face folder. PEFT wraps it (LoraConfig task_type SEQ_CLS, r 4,
lora_alpha 8, query + value, lora_dropout 0; the classifier trains through
modules_to_save); the initial A is drawn here and copied into PEFT and, via
a safetensors file, into dsee_parity's lora-train, which trains with core's
Trainer set up from a recipe by the pipeline's own recipe_trainer_options
and recipe_tuning_options. Both sides take 20 optimizer steps over the same
batches in the same order with the same hyperparameters:
  torch.optim.AdamW (weight decay 0.01 except biases, transformers' rule),
  transformers.get_linear_schedule_with_warmup (4 warm-up steps),
  torch.nn.utils.clip_grad_norm_ at 0.1 (it clips: the norms are larger),
  cross-entropy on the logits.
Compared: the loss of every step (|dsee - torch| / |torch| <= 1e-5) and the
final A, B and classifier (max |diff| / max |torch| <= 1e-5).

Then the same for causal LM training (lora-train with causal_lm: the Trainer
in causal LM mode): a small random GPT2LMHeadModel, PEFT LoRA on c_attn
(fan_in_fan_out), A and B drawn non-zero, 6 optimizer steps of 2
micro-batches of 2 rows; each row is context + completion + padding, labels
-100 on context and padding, so the micro-batches count different numbers
of completion tokens. The torch loop is transformers' Trainer's arithmetic
with num_items_in_batch: per step, count the targets of both micro-batches,
then backward cross_entropy(label_smoothing=0.1, reduction="sum") / count
per micro-batch; the step's loss is the summed loss / count. Compared: the
trainer's own loss of every step (its metrics.jsonl) and the final A and B.
"""
import json
import os

import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, TaskType, get_peft_model

from harness import check, check_close
from harness.lora import copy_lora, draw_lora, head_name, lora_modules, lora_recipe
from harness.models import bert_config, gpt2_config

TOLERANCE = 1e-5
STEPS, BATCH, ROWS, SEQ = 20, 4, 40, 8
LR, WARMUP, MAX_NORM, WEIGHT_DECAY = 5e-3, 4, 0.1, 0.01
RANK, ALPHA = 4, 8


def train_keys(steps, batch, warmup, max_norm, accumulation=1):
    """The [train] table both runs set: the steps, the global batch (rows of
    all micro-batches), lr, warm-up, clipping and weight decay."""
    return {"max_steps": steps, "batch_size": batch * accumulation, "grad_accumulation": accumulation, "lr": LR,
            "schedule": "linear", "warmup_steps": warmup, "max_grad_norm": max_norm, "weight_decay": WEIGHT_DECAY}


def test_bert_classification_training_matches_peft(parity, tmp_path):
    torch.manual_seed(0)
    config = bert_config(classifier_dropout=0.0, attn_implementation="eager")
    model = transformers.BertForSequenceClassification(config)
    folder = os.path.join(tmp_path, "bert")
    model.save_pretrained(folder)

    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 60, (ROWS, SEQ), generator=generator)
    labels = torch.randint(0, 3, (ROWS,), generator=generator)

    peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=RANK, lora_alpha=ALPHA,
                                                  target_modules=["query", "value"], lora_dropout=0.0))
    tensors = {"input_ids": ids, "labels": labels}
    lora = {}
    with torch.no_grad():
        for prefix, a_module, b_module in lora_modules(peft_model, "bert."):
            a, b = a_module.weight, b_module.weight
            a.copy_(torch.randn(a.shape, generator=generator) * 0.3)
            tensors[prefix + ".lora_A"] = a.detach().clone().contiguous()
            tensors[prefix + ".lora_B"] = b.detach().clone().contiguous()  # zeros, PEFT's init
            lora[prefix] = (a, b)
    check("PEFT adapted 4 modules, B starts at zero",
          len(lora) == 4 and all(float(b.detach().abs().max()) == 0 for _, b in lora.values()), f"{len(lora)}")

    # The PyTorch loop.
    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if "bias" not in n.lower()]
    no_decay = [p for n, p in named if "bias" in n.lower()]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, WARMUP, STEPS)
    peft_model.train()
    losses, norms = [], []
    per_epoch = ROWS // BATCH
    for step in range(STEPS):
        rows = slice((step % per_epoch) * BATCH, (step % per_epoch + 1) * BATCH)
        loss = F.cross_entropy(peft_model(input_ids=ids[rows]).logits, labels[rows])
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p for _, p in named], MAX_NORM)))
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    result = parity("lora-train", {"model": folder, "recipe": lora_recipe(
        RANK, ALPHA, ["query", "value"], train=train_keys(STEPS, BATCH, WARMUP, MAX_NORM))}, tensors, out=True)
    out, dsee_losses = result.tensors, result.json["losses"]
    check(f"dsee took {STEPS} steps", len(dsee_losses) == STEPS, f"{len(dsee_losses)}")
    check_close(f"losses of {STEPS} steps (torch {losses[0]:.5f} → {losses[-1]:.5f}, dsee {dsee_losses[0]:.5f} → "
                f"{dsee_losses[-1]:.5f})", dsee_losses, losses, rel_each=TOLERANCE, reference="torch")
    clipped = sum(n > MAX_NORM for n in norms)
    check("clipping is active", clipped > 0,
          f"{clipped} of {STEPS} steps had a gradient norm above {MAX_NORM}")
    check("the loop trains (loss moves down)", losses[-1] < losses[0] - 1e-3 or min(losses) < losses[0])
    for prefix, (a, b) in lora.items():
        check_close(f"final {prefix}.lora_A", out[prefix + ".lora_A"], a.detach(), rel=TOLERANCE, reference="torch")
        check_close(f"final {prefix}.lora_B", out[prefix + ".lora_B"], b.detach(), rel=TOLERANCE, reference="torch")
    for name, p in named:
        if "modules_to_save" in name:
            head = head_name(name)
            check_close(f"final {head}", out[head], p.detach(), rel=TOLERANCE, reference="torch")


LM_STEPS, LM_BATCH, LM_ACCUMULATION, LM_SEQ, SMOOTHING = 6, 2, 2, 10, 0.1
LM_WARMUP, LM_MAX_NORM = 2, 1.0


def lm_data(generator, rows, vocab):
    """input_ids, attention_mask, labels [rows, LM_SEQ]: context 2-4 tokens,
    completion 1-5, padding (id 0, mask 0) after; labels the ids on the
    completion, -100 on context and padding."""
    ids = torch.randint(1, vocab, (rows, LM_SEQ), generator=generator)
    mask = torch.zeros(rows, LM_SEQ, dtype=torch.long)
    labels = torch.full((rows, LM_SEQ), -100, dtype=torch.long)
    for r in range(rows):
        context = int(torch.randint(2, 5, (1,), generator=generator))
        completion = int(torch.randint(1, 6, (1,), generator=generator))
        end = context + completion
        mask[r, :end] = 1
        ids[r, end:] = 0
        labels[r, context:end] = ids[r, context:end]
    return ids, mask, labels


def test_gpt2_causal_lm_training_matches_transformers_arithmetic(parity, tmp_path):
    torch.manual_seed(1)
    model = transformers.GPT2LMHeadModel(gpt2_config(attn_implementation="eager"))
    folder = os.path.join(tmp_path, "gpt2")
    model.save_pretrained(folder)
    rows = LM_STEPS * LM_ACCUMULATION * LM_BATCH
    generator = torch.Generator().manual_seed(7)
    ids, mask, labels = lm_data(generator, rows, model.config.vocab_size)
    peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=RANK, lora_alpha=ALPHA,
                                                  target_modules=["c_attn"], fan_in_fan_out=True,
                                                  lora_dropout=0.0))
    ab = draw_lora(peft_model, "transformer.", generator)
    lora = copy_lora(peft_model, "transformer.", ab)
    tensors = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for prefix, (a, b) in ab.items():
        tensors[prefix + ".lora_A"] = a.contiguous()
        tensors[prefix + ".lora_B"] = b.contiguous()

    def targets(rows):
        return int((labels[rows, 1:] != -100).sum())

    # The PyTorch loop: transformers' Trainer's token-weighted accumulation.
    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    check(f"PEFT trains the {2 * len(lora)} adapter tensors only",
          len(named) == 2 * len(lora) and all("lora_" in n for n, _ in named), f"{[n for n, _ in named]}")
    optimizer = torch.optim.AdamW([p for _, p in named], lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, LM_WARMUP, LM_STEPS)
    peft_model.train()
    losses, counts = [], []
    for step in range(LM_STEPS):
        micro = [slice((step * LM_ACCUMULATION + m) * LM_BATCH, (step * LM_ACCUMULATION + m + 1) * LM_BATCH)
                 for m in range(LM_ACCUMULATION)]
        counts.append([targets(rows) for rows in micro])
        items = sum(counts[-1])
        total, means = 0.0, []
        for rows in micro:
            logits = peft_model(input_ids=ids[rows], attention_mask=mask[rows]).logits
            vocab = logits.shape[-1]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[rows, 1:].reshape(-1),
                                   ignore_index=-100, label_smoothing=SMOOTHING, reduction="sum")
            (loss / items).backward()
            total += loss.item()
            means.append(loss.item() / targets(rows))
        torch.nn.utils.clip_grad_norm_([p for _, p in named], LM_MAX_NORM)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(total / items)
        if step == 0:  # what a mean of micro-batch means would log instead: the comparison tells them apart
            gap = abs(sum(means) / len(means) - losses[0]) / losses[0]
            check("step 1: the mean of micro-batch means differs from the token mean", gap > 1e-3, f"{gap:.1e}")
    uneven = sum(a != b for a, b in counts)
    check("micro-batches of a step count different completion tokens", uneven >= LM_STEPS // 2,
          f"in {uneven} of {LM_STEPS} steps ({counts})")

    metrics = os.path.join(tmp_path, "metrics.jsonl")
    out = parity("lora-train", {
        "model": folder, "causal_lm": True, "label_smoothing": SMOOTHING, "metrics": metrics,
        "recipe": lora_recipe(RANK, ALPHA, ["c_attn"],
                              train=train_keys(LM_STEPS, LM_BATCH, LM_WARMUP, LM_MAX_NORM, LM_ACCUMULATION))},
        tensors, out=True).tensors
    with open(metrics) as f:
        dsee_losses = [r["loss"] for r in map(json.loads, f) if r["kind"] == "train"]
    check(f"causal LM: dsee took {LM_STEPS} steps", len(dsee_losses) == LM_STEPS, f"{len(dsee_losses)}")
    check_close(f"causal LM losses of {LM_STEPS} steps (token-weighted, label smoothing {SMOOTHING}; torch "
                f"{losses[0]:.5f} → {losses[-1]:.5f}, dsee {dsee_losses[0]:.5f} → {dsee_losses[-1]:.5f})",
                dsee_losses, losses, rel_each=TOLERANCE, reference="torch")
    for prefix, (a, b) in lora.items():
        for name, module in ((prefix + ".lora_A", a), (prefix + ".lora_B", b)):
            check_close(f"causal LM final {name}", out[name], module.weight.detach(), rel=TOLERANCE,
                        reference="torch")
            check(f"causal LM {name} moved",
                  not torch.equal(module.weight.detach(), ab[prefix][0 if name.endswith("A") else 1]))
