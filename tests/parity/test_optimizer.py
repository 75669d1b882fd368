"""Parity: dsee's training pieces (through dsee_parity) against the Python stack.

- AdamW + schedule + clipping over fixed gradient sequences vs torch.optim.AdamW
  (param groups split by transformers' decay rule), transformers'
  get_{linear,constant,cosine}_schedule_with_warmup and
  torch.nn.utils.clip_grad_norm_; also through a state export/import midway.
- The decay exclusion rule vs transformers' Trainer.get_decay_parameter_names
  on tiny BERT, RoBERTa and GPT-2 models.
- Losses and their gradients vs torch.nn.functional (cross_entropy with
  ignore_index and label_smoothing, mse_loss), transformers' ForCausalLMLoss
  and the label-smoothing formula of docs/training.md ('Training pieces')
  written out.
- Metrics vs scikit-learn (accuracy_score, f1_score, matthews_corrcoef) and
  scipy (pearsonr, spearmanr), with ties and degenerate inputs.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from harness import check, check_close, check_equal

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

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


OPTIMIZER_CASES = {
    "linear_warmup_clip": dict(steps=12, seed=1, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, wd=0.01, exclude=True,
                               schedule="linear", warmup_steps=3, max_norm=1.0),
    "cosine_ratio_resume": dict(steps=20, seed=2, lr=3e-3, betas=(0.9, 0.98), eps=1e-6, wd=0.1, exclude=False,
                                schedule="cosine", warmup_ratio=0.06, total=25, resume_at=7),
    "constant_missing_grads": dict(steps=9, seed=3, lr=5e-3, betas=(0.8, 0.99), eps=1e-8, wd=0.05, exclude=True,
                                   schedule="constant", warmup_steps=2, max_norm=0.5,
                                   missing={(0, "classifier.bias"), (1, "classifier.bias"),
                                            (4, "h.0.mlp.c_fc.weight")}),
    "linear_past_end": dict(steps=8, seed=4, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, wd=0.0, exclude=True,
                            schedule="linear", total=6, max_norm=2.0),
}


@pytest.mark.parametrize("label", OPTIMIZER_CASES)
def test_optimizer_matches_torch(label, parity):
    c = dict(OPTIMIZER_CASES[label])
    steps, total = c["steps"], c.get("total") or c["steps"]
    warmup_steps, warmup_ratio, max_norm = c.get("warmup_steps", 0), c.get("warmup_ratio", 0.0), c.get("max_norm", 0.0)
    params, grads = make_problem(steps, c["seed"], c.get("missing", ()))
    tensors = {f"param.{n}": p for n, p in params.items()}
    for k, step_grads in enumerate(grads):
        tensors.update({f"grad.{k}.{n}": g for n, g in step_grads.items()})
    out = parity("optimize", {
        "names": [n for n, _ in SHAPES], "lr": c["lr"], "beta1": c["betas"][0], "beta2": c["betas"][1],
        "eps": c["eps"], "weight_decay": c["wd"], "exclude": c["exclude"], "schedule": c["schedule"],
        "warmup_steps": warmup_steps, "warmup_ratio": warmup_ratio, "steps": steps, "total_steps": total,
        "max_norm": max_norm, "resume_at": c.get("resume_at", -1)}, tensors, out=True).tensors
    warmup = warmup_steps if warmup_ratio == 0 else math.ceil(total * warmup_ratio)
    ref_params, ref_lrs, ref_norms, ref_state = reference(params, grads, c["lr"], c["betas"], c["eps"], c["wd"],
                                                          c["exclude"], c["schedule"], warmup, total, max_norm)
    clipped = sum(1 for x in ref_norms if x > max_norm) if max_norm > 0 else 0

    def flat(tensors):
        return torch.cat([t.reshape(-1) for t in tensors])

    check_close(f"{label}: learning rates vs transformers' schedule ({steps} steps)", out["lr"].tolist(), ref_lrs,
                abs=0.0, reference="transformers")
    check_close(f"{label}: pre-clip norms vs clip_grad_norm_ ({clipped} of {steps} steps clipped)",
                out["norm"].tolist(), ref_norms, rel_each=1e-7, floor=1e-30, reference="torch")
    names = list(ref_params)
    check_close(f"{label}: parameters vs torch.optim.AdamW", flat(out[f"param.{n}"] for n in names),
                flat(ref_params[n] for n in names), abs=1e-7, rel_each=1e-7, floor=1e-3, reference="torch")
    check_close(f"{label}: exp_avg / exp_avg_sq vs torch",
                flat(out[f"state.{n}.{m}"] for n in names for m in ("exp_avg", "exp_avg_sq")),
                flat(ref_state[n][i] for n in names for i in (0, 1)), abs=1e-7, reference="torch")
    check_equal(f"{label}: AdamW step counts vs torch", [int(out[f"state.{n}.step"]) for n in names],
                [ref_state[n][2] for n in names])


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_decay_exclusion_matches_transformers_trainer(family, parity):
    from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel,
                              RobertaConfig, RobertaForSequenceClassification, Trainer)
    small = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    model = {"bert": lambda: BertForSequenceClassification(BertConfig(**small)),
             "roberta": lambda: RobertaForSequenceClassification(RobertaConfig(**small, max_position_embeddings=40)),
             "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50,
                                                        n_positions=32))}[family]()
    names = [n for n, _ in model.named_parameters()]
    decayed = set(Trainer.get_decay_parameter_names(None, model))
    expected = [n for n in names if n not in decayed]
    got = parity("decay", {"names": names}).json["excluded"]
    check_equal(f"decay exclusion = Trainer.get_decay_parameter_names on tiny {family} "
                f"({len(expected)} of {len(names)} excluded)", got, expected)


# ------------------------------------------------------------------ losses
def reference_loss(fn, logits):
    x = logits.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach(), x.grad


def test_losses_match_torch(parity):
    from transformers.loss.loss_utils import ForCausalLMLoss

    def loss_case(label, logits, labels, kind, smoothing, want, sum_=False):
        want_loss, want_grad = want
        out = parity("loss", {"kind": kind, "label_smoothing": smoothing, "sum": sum_},
                     {"logits": logits, "labels": labels}, out=True).tensors
        check_close(f"{label}: loss", float(out["loss"]), float(want_loss), rel_each=1e-6, reference="torch")
        check_close(f"{label}: gradient", out["grad"], want_grad, abs=1e-7, reference="torch")
        return out

    g = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 3, generator=g)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    loss_case("cross_entropy", logits, labels, "classification", 0.0,
              reference_loss(lambda x: F.cross_entropy(x, labels), logits))
    scores = torch.randn(6, 1, generator=g)
    targets = torch.rand(6, generator=g) * 5
    loss_case("mse_regression", scores, targets, "classification", 0.0,
              reference_loss(lambda x: F.mse_loss(x.squeeze(), targets), scores))

    batch, seq, vocab = 3, 9, 13
    lm_logits = torch.randn(batch, seq, vocab, generator=g)
    lm_labels = torch.randint(0, vocab, (batch, seq), generator=g)
    lm_labels[0, :4] = -100  # context
    lm_labels[1, :2] = -100
    lm_labels[1, 7:] = -100  # padding
    lm_labels[2, :6] = -100
    count = int((lm_labels[:, 1:] != -100).sum())
    # transformers' GPT-2 loss (no smoothing)
    out = loss_case("causal_lm", lm_logits, lm_labels, "lm", 0.0,
                    reference_loss(lambda x: ForCausalLMLoss(x, lm_labels, vocab), lm_logits))
    check_equal("causal_lm: completion targets counted", int(out["targets"]), count)

    def smoothed(x, eps=0.1):  # (1 − ε)·NLL + ε·mean over the vocabulary of −log p, over counted tokens
        logp = F.log_softmax(x[:, :-1].reshape(-1, vocab), -1)
        y = lm_labels[:, 1:].reshape(-1)
        keep = y != -100
        nll = -logp[keep].gather(1, y[keep][:, None]).squeeze(1)
        uniform = -logp[keep].mean(1)
        return ((1 - eps) * nll + eps * uniform).mean()

    loss_case("causal_lm_smoothing_formula", lm_logits, lm_labels, "lm", 0.1, reference_loss(smoothed, lm_logits))
    loss_case("causal_lm_smoothing_sum", lm_logits, lm_labels, "lm", 0.1,
              reference_loss(lambda x: F.cross_entropy(x[:, :-1].reshape(-1, vocab), lm_labels[:, 1:].reshape(-1),
                                                       ignore_index=-100, label_smoothing=0.1, reduction="sum"),
                             lm_logits), sum_=True)


# ------------------------------------------------------------------ metrics
def check_metrics(label, got, want):
    """Every metric of `want` within 1e-12 of dsee's (NaN where the reference gives NaN)."""
    for name, value in want.items():
        if math.isnan(value):
            check(f"{label}: {name} is NaN, as the reference's", math.isnan(got[name]), f"{got[name]}")
        else:
            check_close(f"{label}: {name}", got[name], value, abs=1e-12)


def test_metrics_match_scikit_learn_and_scipy(parity):
    def metrics_of(tensors, task=None):
        result = parity("metrics", {"task": task} if task else {}, tensors).json
        return {k: (float("nan") if v == "nan" else v) for k, v in result.items()}

    def classification_case(label, p, y):
        got = metrics_of({"predictions": torch.tensor(p, dtype=torch.int64),
                          "labels": torch.tensor(y, dtype=torch.int64)})
        want = {"accuracy": accuracy_score(y, p), "mcc": matthews_corrcoef(y, p)}
        if max(max(p), max(y)) <= 1:
            want["f1"] = f1_score(y, p, pos_label=1, average="binary", zero_division=0.0)
        check_metrics(f"{label} vs scikit-learn", got, want)

    def correlation_case(label, x, y):
        got = metrics_of({"x": torch.tensor(x, dtype=torch.float64), "y": torch.tensor(y, dtype=torch.float64)})
        check_metrics(f"{label} vs scipy", got, {"pearson": float(pearsonr(x, y)[0]),
                                                  "spearman": float(spearmanr(x, y)[0])})

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200).tolist()
    p = rng.integers(0, 2, 200).tolist()
    classification_case("binary_random", p, y)
    classification_case("binary_mostly_right", [v if rng.random() < 0.85 else 1 - v for v in y], y)
    classification_case("constant_predictions", [1] * 50, y[:50])
    classification_case("all_negative", [0] * 20, [0] * 20)
    classification_case("three_class", rng.integers(0, 3, 150).tolist(), rng.integers(0, 3, 150).tolist())
    x = rng.normal(size=120)
    correlation_case("continuous", x.tolist(), (0.6 * x + rng.normal(size=120)).tolist())
    ties_x = np.round(rng.uniform(0, 5, 80) * 2) / 2  # STS-B style scores in 0.5 steps: many ties
    correlation_case("ties", ties_x.tolist(), np.round(ties_x + rng.normal(size=80), 1).tolist())
    correlation_case("constant_input_is_nan", [2.5] * 10, rng.normal(size=10).tolist())

    # glue_metrics: the task map on logits
    logits2 = torch.randn(64, 2, generator=torch.Generator().manual_seed(8))
    labels2 = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(9))
    pred2 = logits2.argmax(1).tolist()
    for task, want, main in [("CoLA", {"mcc": matthews_corrcoef(labels2, pred2)}, "mcc"),
                             ("MRPC", {"accuracy": accuracy_score(labels2, pred2), "f1": f1_score(labels2, pred2)},
                              "f1"),
                             ("SST-2", {"accuracy": accuracy_score(labels2, pred2)}, "accuracy")]:
        got = metrics_of({"logits": logits2, "labels": labels2}, task)
        check_equal(f"glue_metrics {task}: main metric", got.pop("main_metric"), main)
        check_equal(f"glue_metrics {task}: metric names", sorted(got), sorted(want))
        check_metrics(f"glue_metrics {task} vs scikit-learn", got, want)
    scores = torch.randn(40, 1, generator=torch.Generator().manual_seed(10))
    gold = torch.rand(40, generator=torch.Generator().manual_seed(12)) * 5
    got = metrics_of({"logits": scores, "labels": gold}, "sts-b")
    check_equal("glue_metrics STS-B: main metric", got.pop("main_metric"), "pearson")
    check_metrics("glue_metrics STS-B vs scipy", got, {"pearson": float(pearsonr(scores[:, 0].double(), gold.double())[0]),
                                                       "spearman": float(spearmanr(scores[:, 0].double(),
                                                                                   gold.double())[0])})
