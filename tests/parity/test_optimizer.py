"""Parity: dsee's training pieces (through trainer_driver) against the Python stack.

- AdamW + schedule + clipping over fixed gradient sequences vs torch.optim.AdamW
  (param groups split by transformers' decay rule), transformers'
  get_{linear,constant,cosine}_schedule_with_warmup and
  torch.nn.utils.clip_grad_norm_; also through a state export/import midway.
- The decay exclusion rule vs transformers' Trainer.get_decay_parameter_names
  on tiny BERT, RoBERTa and GPT-2 models.
- Losses and their gradients vs torch.nn.functional (cross_entropy with
  ignore_index and label_smoothing, mse_loss), transformers' ForCausalLMLoss
  and the spec's smoothing formula written out.
- Metrics vs scikit-learn (accuracy_score, f1_score, matthews_corrcoef) and
  scipy (pearsonr, spearmanr), with ties and degenerate inputs.

usage: test_optimizer.py path/to/trainer_driver
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

torch.set_num_threads(1)
warnings.filterwarnings("ignore")
DRIVER = sys.argv[1]
failures = []
worst = {}


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message)
    if not ok:
        failures.append(message)


def note(kind, value):
    worst[kind] = max(worst.get(kind, 0.0), float(value))


def driver(args):
    done = subprocess.run([DRIVER] + args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"trainer_driver failed ({done.returncode}): {' '.join(args)}\n{done.stderr}")
    return done.stdout


# ------------------------------------------------------------------ optimizer
SHAPES = [
    ("encoder.layer.0.attention.self.query.lora_A", (4, 8)),
    ("encoder.layer.0.attention.self.query.lora_B", (8, 4)),
    ("encoder.layer.0.attention.self.query.sparse_values", (16,)),
    ("embeddings.LayerNorm.weight", (8,)),
    ("h.0.ln_1.weight", (8,)),
    ("h.0.mlp.c_fc.weight", (8, 12)),
    ("classifier.weight", (3, 8)),
    ("classifier.bias", (3,)),
]
# Kept out of decay by transformers' rule (bias / LayerNorm by name, GPT-2's ln_* by module type).
EXCLUDED = {"embeddings.LayerNorm.weight", "h.0.ln_1.weight", "classifier.bias"}


def make_problem(steps, seed, missing=()):
    g = torch.Generator().manual_seed(seed)
    params = {n: torch.randn(s, generator=g) for n, s in SHAPES}
    grads = []
    for k in range(steps):
        scale = 10.0 ** (k % 4 - 2)  # norms from ~1e-2 to ~10: clipping on some steps only
        grads.append({n: torch.randn(s, generator=g) * scale for n, s in SHAPES if (k, n) not in missing})
    return params, grads


def reference(params, grads, lr, betas, eps, wd, exclude, schedule, warmup, total, max_norm, cycles=0.5):
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)
    tensors = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    decay = [t for n, t in tensors.items() if not (exclude and n in EXCLUDED)]
    no_decay = [t for n, t in tensors.items() if exclude and n in EXCLUDED]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=betas, eps=eps)
    if schedule == "linear":
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
    elif schedule == "cosine":
        sched = get_cosine_schedule_with_warmup(opt, warmup, total, num_cycles=cycles)
    else:
        sched = get_constant_schedule_with_warmup(opt, warmup)
    lrs, norms = [], []
    for step_grads in grads:
        for n, t in tensors.items():
            t.grad = step_grads[n].clone() if n in step_grads else None
        with_grad = [t for t in tensors.values() if t.grad is not None]
        if max_norm > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(with_grad, max_norm)))
        else:
            norms.append(float(torch.nn.utils.get_total_norm([t.grad for t in with_grad])))
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    state = {}
    for n, t in tensors.items():
        s = opt.state.get(t, {})
        state[n] = (s.get("exp_avg", torch.zeros_like(t)), s.get("exp_avg_sq", torch.zeros_like(t)),
                    int(s["step"]) if "step" in s else 0)
    return {n: t.detach() for n, t in tensors.items()}, lrs, norms, state


def optimizer_case(folder, label, steps, seed, lr, betas, eps, wd, exclude, schedule, warmup_steps=0,
                   warmup_ratio=0.0, total=None, max_norm=0.0, resume_at=-1, missing=()):
    total = total or steps
    params, grads = make_problem(steps, seed, missing)
    tensors = {f"param.{n}": p for n, p in params.items()}
    for k, step_grads in enumerate(grads):
        tensors.update({f"grad.{k}.{n}": g for n, g in step_grads.items()})
    path_in, path_out = os.path.join(folder, f"{label}_in.safetensors"), os.path.join(folder, f"{label}_out.safetensors")
    save_file(tensors, path_in, metadata={"names": ",".join(n for n, _ in SHAPES)})
    args = ["optimize", "--input", path_in, "--output", path_out, "--lr", repr(lr), "--beta1", repr(betas[0]),
            "--beta2", repr(betas[1]), "--eps", repr(eps), "--weight-decay", repr(wd), "--schedule", schedule,
            "--warmup-steps", str(warmup_steps), "--warmup-ratio", repr(warmup_ratio), "--steps", str(steps),
            "--total-steps", str(total), "--max-norm", repr(max_norm), "--resume-at", str(resume_at)]
    if not exclude:
        args.append("--no-exclude")
    driver(args)
    out = load_file(path_out)
    warmup = warmup_steps if warmup_ratio == 0 else math.ceil(total * warmup_ratio)
    ref_params, ref_lrs, ref_norms, ref_state = reference(params, grads, lr, betas, eps, wd, exclude, schedule,
                                                          warmup, total, max_norm)
    lr_diff = max(abs(a - b) for a, b in zip(out["lr"].tolist(), ref_lrs))
    norm_rel = max(abs(a - b) / max(b, 1e-30) for a, b in zip(out["norm"].tolist(), ref_norms))
    param_abs = max(float((out[f"param.{n}"] - p).abs().max()) for n, p in ref_params.items())
    param_rel = max(float(((out[f"param.{n}"] - p).abs() / p.abs().clamp_min(1e-3)).max())
                    for n, p in ref_params.items())
    state_abs = max(max(float((out[f"state.{n}.exp_avg"] - m).abs().max()),
                        float((out[f"state.{n}.exp_avg_sq"] - v).abs().max())) for n, (m, v, _) in ref_state.items())
    steps_equal = all(int(out[f"state.{n}.step"]) == t for n, (_, _, t) in ref_state.items())
    clipped = sum(1 for x in ref_norms if x > max_norm) if max_norm > 0 else 0
    note("lr abs", lr_diff)
    note("norm rel", norm_rel)
    note("param abs", param_abs)
    note("param rel", param_rel)
    note("state abs", state_abs)
    check(lr_diff == 0.0, f"{label}: learning rates equal transformers' schedule exactly ({steps} steps)")
    check(norm_rel <= 1e-7, f"{label}: pre-clip norms vs clip_grad_norm_, max rel {norm_rel:.2e} "
                            f"({clipped} of {steps} steps clipped)")
    check(param_abs <= 1e-7 and param_rel <= 1e-7,
          f"{label}: parameters vs torch.optim.AdamW, max abs {param_abs:.2e}, rel {param_rel:.2e}")
    check(state_abs <= 1e-7 and steps_equal, f"{label}: exp_avg / exp_avg_sq / step vs torch, max abs {state_abs:.2e}")


def optimizer_tests(folder):
    optimizer_case(folder, "linear_warmup_clip", steps=12, seed=1, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, wd=0.01,
                   exclude=True, schedule="linear", warmup_steps=3, max_norm=1.0)
    optimizer_case(folder, "cosine_ratio_resume", steps=20, seed=2, lr=3e-3, betas=(0.9, 0.98), eps=1e-6, wd=0.1,
                   exclude=False, schedule="cosine", warmup_ratio=0.06, total=25, resume_at=7)
    optimizer_case(folder, "constant_missing_grads", steps=9, seed=3, lr=5e-3, betas=(0.8, 0.99), eps=1e-8, wd=0.05,
                   exclude=True, schedule="constant", warmup_steps=2, max_norm=0.5,
                   missing={(0, "classifier.bias"), (1, "classifier.bias"), (4, "h.0.mlp.c_fc.weight")})
    optimizer_case(folder, "linear_past_end", steps=8, seed=4, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, wd=0.0,
                   exclude=True, schedule="linear", total=6, max_norm=2.0)


def decay_tests(folder):
    from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel,
                              RobertaConfig, RobertaForSequenceClassification, Trainer)
    small = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    models = {"bert": BertForSequenceClassification(BertConfig(**small)),
              "roberta": RobertaForSequenceClassification(RobertaConfig(**small, max_position_embeddings=40)),
              "gpt2": GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=32))}
    for name, model in models.items():
        names = [n for n, _ in model.named_parameters()]
        decayed = set(Trainer.get_decay_parameter_names(None, model))
        expected = [n for n in names if n not in decayed]
        path = os.path.join(folder, f"{name}_names.txt")
        with open(path, "w") as f:
            f.write("\n".join(names) + "\n")
        got = json.loads(driver(["decay", "--input", path]))
        check(got == expected, f"decay exclusion = Trainer.get_decay_parameter_names on tiny {name} "
                               f"({len(expected)} of {len(names)} excluded)" + ("" if got == expected else
                                                                                f": got {got}, want {expected}"))


# ------------------------------------------------------------------ losses
def loss_case(folder, label, logits, labels, kind, smoothing, want_loss, want_grad, sum_=False):
    path_in, path_out = os.path.join(folder, f"{label}_in.safetensors"), os.path.join(folder, f"{label}_out.safetensors")
    save_file({"logits": logits.contiguous(), "labels": labels.contiguous()}, path_in)
    args = ["loss", "--input", path_in, "--output", path_out, "--kind", kind, "--label-smoothing", repr(smoothing)]
    driver(args + (["--sum"] if sum_ else []))
    out = load_file(path_out)
    loss_rel = abs(float(out["loss"]) - float(want_loss)) / abs(float(want_loss))
    grad_abs = float((out["grad"] - want_grad).abs().max())
    note("loss rel", loss_rel)
    note("loss grad abs", grad_abs)
    check(loss_rel <= 1e-6 and grad_abs <= 1e-7, f"{label}: loss rel {loss_rel:.2e}, gradient max abs {grad_abs:.2e}")
    return out


def reference_loss(fn, logits):
    x = logits.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach(), x.grad


def loss_tests(folder):
    from transformers.loss.loss_utils import ForCausalLMLoss
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    loss_case(folder, "cross_entropy", logits, labels, "classification", 0.0,
              *reference_loss(lambda x: F.cross_entropy(x, labels), logits))
    scores = torch.randn(6, 1, generator=g)
    targets = torch.rand(6, generator=g) * 5
    loss_case(folder, "mse_regression", scores, targets, "classification", 0.0,
              *reference_loss(lambda x: F.mse_loss(x.squeeze(), targets), scores))

    batch, seq, vocab = 3, 9, 13
    lm_logits = torch.randn(batch, seq, vocab, generator=g)
    lm_labels = torch.randint(0, vocab, (batch, seq), generator=g)
    lm_labels[0, :4] = -100  # context
    lm_labels[1, :2] = -100
    lm_labels[1, 7:] = -100  # padding
    lm_labels[2, :6] = -100
    count = int((lm_labels[:, 1:] != -100).sum())
    # transformers' GPT-2 loss (no smoothing)
    out = loss_case(folder, "causal_lm", lm_logits, lm_labels, "lm", 0.0,
                    *reference_loss(lambda x: ForCausalLMLoss(x, lm_labels, vocab), lm_logits))
    check(int(out["targets"]) == count, f"causal_lm: {int(out['targets'])} completion targets counted, want {count}")

    def smoothed(x, eps=0.1):  # spec: (1 − ε)·NLL + ε·mean over the vocabulary of −log p, over counted tokens
        logp = F.log_softmax(x[:, :-1].reshape(-1, vocab), -1)
        y = lm_labels[:, 1:].reshape(-1)
        keep = y != -100
        nll = -logp[keep].gather(1, y[keep][:, None]).squeeze(1)
        uniform = -logp[keep].mean(1)
        return ((1 - eps) * nll + eps * uniform).mean()

    loss_case(folder, "causal_lm_smoothing_spec", lm_logits, lm_labels, "lm", 0.1,
              *reference_loss(smoothed, lm_logits))
    loss_case(folder, "causal_lm_smoothing_sum", lm_logits, lm_labels, "lm", 0.1,
              *reference_loss(lambda x: F.cross_entropy(x[:, :-1].reshape(-1, vocab), lm_labels[:, 1:].reshape(-1),
                                                        ignore_index=-100, label_smoothing=0.1, reduction="sum"),
                              lm_logits), sum_=True)


# ------------------------------------------------------------------ metrics
def metrics_of(folder, label, tensors, task=None):
    path = os.path.join(folder, f"{label}_metrics.safetensors")
    save_file(tensors, path)
    result = json.loads(driver(["metrics", "--input", path] + (["--task", task] if task else [])))
    return {k: (float("nan") if v == "nan" else v) for k, v in result.items()}


def same(a, b, tol=1e-12):
    if math.isnan(b):
        return math.isnan(a)
    note("metric abs", abs(a - b))
    return abs(a - b) <= tol


def classification_metric_case(folder, label, p, y):
    got = metrics_of(folder, label, {"predictions": torch.tensor(p, dtype=torch.int64),
                                     "labels": torch.tensor(y, dtype=torch.int64)})
    want = {"accuracy": accuracy_score(y, p), "mcc": matthews_corrcoef(y, p),
            "f1": f1_score(y, p, pos_label=1, average="binary", zero_division=0.0) if max(max(p), max(y)) <= 1
            else None}
    ok = all(want[k] is None or same(got[k], want[k]) for k in want)
    check(ok, f"{label}: accuracy/F1/MCC vs scikit-learn: got {got}, want {want}")


def correlation_case(folder, label, x, y):
    got = metrics_of(folder, label, {"x": torch.tensor(x, dtype=torch.float64), "y": torch.tensor(y, dtype=torch.float64)})
    want = {"pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0])}
    check(same(got["pearson"], want["pearson"]) and same(got["spearman"], want["spearman"]),
          f"{label}: Pearson/Spearman vs scipy: got {got}, want {want}")


def metric_tests(folder):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200).tolist()
    p = rng.integers(0, 2, 200).tolist()
    classification_metric_case(folder, "binary_random", p, y)
    classification_metric_case(folder, "binary_mostly_right", [v if rng.random() < 0.85 else 1 - v for v in y], y)
    classification_metric_case(folder, "constant_predictions", [1] * 50, y[:50])
    classification_metric_case(folder, "all_negative", [0] * 20, [0] * 20)
    classification_metric_case(folder, "three_class", rng.integers(0, 3, 150).tolist(), rng.integers(0, 3, 150).tolist())
    x = rng.normal(size=120)
    correlation_case(folder, "continuous", x.tolist(), (0.6 * x + rng.normal(size=120)).tolist())
    ties_x = np.round(rng.uniform(0, 5, 80) * 2) / 2  # STS-B style scores in 0.5 steps: many ties
    correlation_case(folder, "ties", ties_x.tolist(), np.round(ties_x + rng.normal(size=80), 1).tolist())
    correlation_case(folder, "constant_input_is_nan", [2.5] * 10, rng.normal(size=10).tolist())

    # glue_metrics: the task map on logits
    logits2 = torch.randn(64, 2, generator=torch.Generator().manual_seed(8))
    labels2 = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(9))
    pred2 = logits2.argmax(1).tolist()
    for task, want, main in [("CoLA", {"mcc": matthews_corrcoef(labels2, pred2)}, "mcc"),
                             ("MRPC", {"accuracy": accuracy_score(labels2, pred2), "f1": f1_score(labels2, pred2)}, "f1"),
                             ("SST-2", {"accuracy": accuracy_score(labels2, pred2)}, "accuracy")]:
        got = metrics_of(folder, task, {"logits": logits2, "labels": labels2}, task)
        check(got.pop("main_metric") == main and set(got) == set(want) and all(same(got[k], want[k]) for k in want),
              f"glue_metrics {task}: {got} vs scikit-learn {want}, main metric {main}")
    scores = torch.randn(40, 1, generator=torch.Generator().manual_seed(10))
    gold = torch.rand(40, generator=torch.Generator().manual_seed(12)) * 5
    got = metrics_of(folder, "stsb", {"logits": scores, "labels": gold}, "sts-b")
    want = {"pearson": float(pearsonr(scores[:, 0].double(), gold.double())[0]),
            "spearman": float(spearmanr(scores[:, 0].double(), gold.double())[0])}
    check(got.pop("main_metric") == "pearson" and all(same(got[k], want[k]) for k in want),
          f"glue_metrics STS-B: {got} vs scipy {want}")


with tempfile.TemporaryDirectory() as folder:
    optimizer_tests(folder)
    decay_tests(folder)
    loss_tests(folder)
    metric_tests(folder)
print("worst deviations: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))
if failures:
    print(f"{len(failures)} FAILED")
    sys.exit(1)
print("all passed")
