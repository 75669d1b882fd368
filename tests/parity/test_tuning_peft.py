"""Parity of dsee's LoRA (core/tuning.h, method lora) with PEFT's LoRA.

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
import subprocess
import sys

import torch
from peft import LoraConfig, TaskType, get_peft_model
from safetensors.torch import load_file, save_file

import transformers

TOLERANCE = 1e-5
failures = []
passes = 0


def check(name, actual, expected):
    global passes
    if actual.shape != expected.shape:
        failures.append(f"{name}: shape {tuple(actual.shape)} != peft {tuple(expected.shape)}")
        print(f"FAIL {name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
        return
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item() / max(scale, 1e-30)
    ok = err <= TOLERANCE and scale > 0
    print(f"{'ok  ' if ok else 'FAIL'} {name}: relative error {err:.2e} (max |peft| {scale:.2e})")
    if ok:
        passes += 1
    else:
        failures.append(f"{name}: relative error {err:.2e}, max |peft| {scale:.2e}")


def run_case(name, model, peft_config, dsee_targets, prefix, ids, attention_mask, driver, work):
    folder = os.path.join(work, name)
    model.save_pretrained(folder)
    rank, alpha = peft_config.r, peft_config.lora_alpha
    peft_model = get_peft_model(model, peft_config)
    peft_model.eval()  # no dropout anywhere; gradients still flow

    generator = torch.Generator().manual_seed(11)
    tensors = {"input_ids": ids}
    if attention_mask is not None:
        tensors["attention_mask"] = attention_mask
    lora = {}  # dsee prefix -> (peft lora_A module, peft lora_B module)
    with torch.no_grad():
        for module_name, module in peft_model.named_modules():
            if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
                continue
            dsee_prefix = module_name.split(prefix, 1)[1]
            a, b = module.lora_A["default"], module.lora_B["default"]
            a.weight.copy_(torch.randn(a.weight.shape, generator=generator) * 0.3)
            b.weight.copy_(torch.randn(b.weight.shape, generator=generator) * 0.3)
            tensors[dsee_prefix + ".lora_A"] = a.weight.detach().clone().contiguous()
            tensors[dsee_prefix + ".lora_B"] = b.weight.detach().clone().contiguous()
            lora[dsee_prefix] = (a, b)
    if not lora:
        failures.append(f"{name}: PEFT adapted no module")
        return

    kwargs = {"input_ids": ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    logits = peft_model(**kwargs).logits
    weights = torch.randn(logits.shape, generator=generator)
    tensors["loss_weights"] = weights
    (logits * weights).sum().backward()

    input_path, output_path = os.path.join(work, name + "_in.safetensors"), os.path.join(work, name + "_out.safetensors")
    save_file(tensors, input_path)
    cmd = [driver, folder, input_path, output_path, str(rank), str(alpha), ",".join(dsee_targets)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        failures.append(f"{name}: tuning_driver failed: {result.stderr.strip()}")
        print(result.stderr)
        return
    out = load_file(output_path)

    check(f"{name} logits", out["logits"], logits.detach())
    for dsee_prefix, (a, b) in lora.items():
        check(f"{name} {dsee_prefix}.lora_A grad", out[dsee_prefix + ".lora_A.grad"], a.weight.grad)
        check(f"{name} {dsee_prefix}.lora_B grad", out[dsee_prefix + ".lora_B.grad"], b.weight.grad)
    heads = {}
    for param_name, param in peft_model.named_parameters():
        if param.requires_grad and "lora_" not in param_name:
            # base_model.model.classifier.modules_to_save.default.weight -> classifier.weight
            heads[param_name.split("model.", 2)[-1].replace("modules_to_save.default.", "")] = param
    dsee_heads = sorted(k[: -len(".grad")] for k in out if k.endswith(".grad") and ".lora_" not in k)
    if sorted(heads) != dsee_heads:
        failures.append(f"{name}: trainable head tensors differ: peft {sorted(heads)}, dsee {dsee_heads}")
        print(f"FAIL {name}: trainable head tensors peft {sorted(heads)} dsee {dsee_heads}")
    for head_name in sorted(set(heads) & set(dsee_heads)):
        check(f"{name} {head_name} grad", out[head_name + ".grad"], heads[head_name].grad)


def main():
    driver, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)

    bert_config = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="eager")
    bert = transformers.BertForSequenceClassification(bert_config).eval()
    ids = torch.randint(0, 60, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    run_case("bert", bert,
             LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"],
                        lora_dropout=0.0),
             ["query", "value"], "bert.", ids, mask, driver, work)

    roberta_config = transformers.RobertaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=2, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation="eager")
    roberta = transformers.RobertaForSequenceClassification(roberta_config).eval()
    ids = torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(3))
    run_case("roberta", roberta,
             LoraConfig(task_type=TaskType.SEQ_CLS, r=2, lora_alpha=5, target_modules=["query", "value"],
                        lora_dropout=0.0),
             ["query", "value"], "roberta.", ids, None, driver, work)

    gpt2_config = transformers.GPT2Config(
        vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=24, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    gpt2 = transformers.GPT2LMHeadModel(gpt2_config).eval()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    run_case("gpt2", gpt2,
             LoraConfig(task_type=TaskType.CAUSAL_LM, r=3, lora_alpha=12, target_modules=["c_attn"],
                        fan_in_fan_out=True, lora_dropout=0.0),
             ["c_attn"], "transformer.", ids, None, driver, work)

    print(f"{passes} passed, {len(failures)} failed")
    for f in failures:
        print("  " + f)
    sys.exit(1 if failures or passes == 0 else 0)


if __name__ == "__main__":
    main()
