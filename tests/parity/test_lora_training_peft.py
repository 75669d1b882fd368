"""Parity of a dsee LoRA training run with PEFT + a plain PyTorch loop.

A small random BertForSequenceClassification (dropout 0) is saved as a
Hugging Face folder. PEFT wraps it (LoraConfig task_type SEQ_CLS, r 4,
lora_alpha 8, query + value, lora_dropout 0; the classifier trains through
modules_to_save); the initial A is drawn here and copied into PEFT and, via
a safetensors file, into tuning_driver's `train` mode, which trains with
core's Trainer, tuning_attach and AdamW as the pipeline's train stage does.
Both sides take 20 optimizer steps over the same batches in the same order
with the same hyperparameters:
  torch.optim.AdamW (weight decay 0.01 except biases, transformers' rule),
  transformers.get_linear_schedule_with_warmup (4 warm-up steps),
  torch.nn.utils.clip_grad_norm_ at 0.1 (it clips: the norms are larger),
  cross-entropy on the logits.
Compared: the loss of every step (|dsee - torch| / |torch| <= 1e-5) and the
final A, B and classifier (max |diff| / max |torch| <= 1e-5).

Usage: test_lora_training_peft.py TUNING_DRIVER WORK_DIR
"""
import os
import shutil
import subprocess
import sys

import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_peft  # noqa: E402

TOLERANCE = 1e-5
STEPS, BATCH, ROWS, SEQ = 20, 4, 40, 8
LR, WARMUP, MAX_NORM, WEIGHT_DECAY = 5e-3, 4, 0.1, 0.01
RANK, ALPHA = 4, 8
checks = tiny_peft.Checks()
expect = checks.expect


def main():
    driver, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)
    config = tiny_peft.bert_config(classifier_dropout=0.0, attn_implementation="eager")
    model = transformers.BertForSequenceClassification(config)
    folder = os.path.join(work, "bert")
    model.save_pretrained(folder)

    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 60, (ROWS, SEQ), generator=generator)
    labels = torch.randint(0, 3, (ROWS,), generator=generator)

    peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=RANK, lora_alpha=ALPHA,
                                                  target_modules=["query", "value"], lora_dropout=0.0))
    tensors = {"input_ids": ids, "labels": labels}
    lora = {}
    with torch.no_grad():
        for prefix, a_module, b_module in tiny_peft.lora_modules(peft_model, "bert."):
            a, b = a_module.weight, b_module.weight
            a.copy_(torch.randn(a.shape, generator=generator) * 0.3)
            tensors[prefix + ".lora_A"] = a.detach().clone().contiguous()
            tensors[prefix + ".lora_B"] = b.detach().clone().contiguous()  # zeros, PEFT's init
            lora[prefix] = (a, b)
    expect(len(lora) == 4 and all(float(b.detach().abs().max()) == 0 for _, b in lora.values()),
           f"PEFT adapted {len(lora)} modules, B starts at zero")
    input_path, output_path = os.path.join(work, "in.safetensors"), os.path.join(work, "out.safetensors")
    save_file(tensors, input_path)

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

    cmd = [driver, "train", folder, input_path, output_path, str(RANK), str(ALPHA), "query,value", str(STEPS),
           str(BATCH), str(LR), str(WARMUP), str(MAX_NORM), str(WEIGHT_DECAY)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout, result.stderr)
        sys.exit("tuning_driver train failed")
    out = load_file(output_path)

    dsee_losses = out["loss"].tolist()
    expect(len(dsee_losses) == STEPS, f"dsee took {len(dsee_losses)} steps")
    worst = max(abs(d - t) / abs(t) for d, t in zip(dsee_losses, losses))
    expect(worst <= TOLERANCE, f"losses of {STEPS} steps: worst relative difference {worst:.2e} "
                               f"(torch {losses[0]:.5f} → {losses[-1]:.5f}, dsee {dsee_losses[0]:.5f} → "
                               f"{dsee_losses[-1]:.5f})")
    clipped = sum(n > MAX_NORM for n in norms)
    expect(clipped > 0, f"clipping is active: {clipped} of {STEPS} steps had a gradient norm above {MAX_NORM}")
    expect(losses[-1] < losses[0] - 1e-3 or min(losses) < losses[0], "the loop trains (loss moves down)")

    def close(name, actual, expected):
        checks.close(f"final {name}", actual, expected, TOLERANCE, "torch")

    for prefix, (a, b) in lora.items():
        close(prefix + ".lora_A", out[prefix + ".lora_A"], a.detach())
        close(prefix + ".lora_B", out[prefix + ".lora_B"], b.detach())
    for name, p in named:
        if "modules_to_save" in name:
            head = tiny_peft.head_name(name)
            close(head, out[head], p.detach())

    checks.finish()


if __name__ == "__main__":
    main()
