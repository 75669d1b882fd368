"""Parity: omega.method = gradient (recipes/omega_gradient.h) against transformers.

A tiny random BertForSequenceClassification (its head saved, so dsee and the
reference start from the same one) and a tiny SST-2 folder; `dsee run` with
run.stages = ["omega"] writes omega.h5. The reference computes RoSA's
criterion independently: for each of the run's gradient batches (dsee's
documented order: splitmix64 + Fisher-Yates per (seed, epoch), global batches
of train.batch_size, the last one short, then the next epoch), the gradient of
the batch's mean cross-entropy with respect to every query and value weight
in evaluation mode, squared and summed; Ω = the c largest, ties to the lower
index, ascending. The index sets must be equal exactly:
  - one batch holding the whole training set (order-free);
  - four batches of 5 of 12 rows (two epochs: the sampler's order matters);
  - a 2-step LoRA warm-up (rank 4, alpha 8, AdamW lr 1e-2 on the linear
    schedule of the whole run, gradient norm clipped at 1) reproduced with torch.optim.AdamW, then the
    gradients at W + s·B·A with the warmed-up head.
The omega.h5 attributes record the method and its settings. Then GPT-2 on
a tiny E2E task, one batch holding the training set: the token-mean loss of
the completions (dsee's encoding from dsee_parity nlg-encode), Ω of
c_attn's q and v thirds.
"""
import json
import os
import random
import subprocess

import pytest

from harness import check, check_equal
from harness.models import wordpiece_vocabulary

WORDS = "the movie film great terrible plot actors good bad boring fun a an is was very not".split()
MASK64 = (1 << 64) - 1
N_TRAIN = 12
C = 6


def splitmix_next(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def epoch_order(n, seed, epoch):
    """data/distributed_sampler.cpp's epoch order."""
    _, e = splitmix_next(epoch)
    _, s = splitmix_next(seed ^ e)
    state = s
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = MASK64 - MASK64 % bound
        state, x = splitmix_next(state)
        while x >= limit:
            state, x = splitmix_next(state)
        j = x % bound
        order[i], order[j] = order[j], order[i]
    return order


def global_batches(n, batch_size, seed):
    """The global batches of the training order, epoch after epoch."""
    epoch = 0
    while True:
        order = epoch_order(n, seed, epoch)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]
        epoch += 1


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    import torch
    import transformers
    work = str(tmp_path_factory.mktemp("omega-gradient"))
    rng = random.Random(3)
    rows = [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))), rng.randint(0, 1)) for _ in range(18)]
    data = f"{work}/sst2"
    os.makedirs(data)
    for name, part in (("train.tsv", rows[:N_TRAIN]), ("dev.tsv", rows[N_TRAIN:])):
        with open(f"{data}/{name}", "w") as f:
            f.write("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in part))
    with open(f"{work}/corpus.txt", "w") as f:
        f.write("\n".join(s for s, _ in rows))
    model = f"{work}/bert"
    wordpiece_vocabulary(f"{work}/corpus.txt", model, vocab_size=80, min_frequency=1)
    with open(f"{model}/vocab.txt") as f:
        vocab_size = sum(1 for _ in f)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                                     num_labels=2)
    transformers.BertForSequenceClassification(config).save_pretrained(model, safe_serialization=True)
    return work, data, model, rows[:N_TRAIN]


def dsee_omega(dsee, work, data, model, name, batch_size, steps, warmup=0):
    """omega.h5 of `dsee run` stopped after the omega stage: {dataset: indices}, attributes."""
    import h5py
    recipe = f"{work}/{name}.toml"
    with open(recipe, "w") as f:
        f.write(f'[run]\nname = "{name}"\nout_dir = "{work}/runs"\nseed = 5\nstages = ["omega"]\n\n'
                f'[model]\npath = "{model}"\n\n[task]\nname = "sst2"\ndata_dir = "{data}"\nmax_seq_length = 16\n\n'
                '[tuning]\nmethod = "dsee"\nrank = 4\nalpha = 8.0\n\n'
                f'[omega]\nc = {C}\nmethod = "gradient"\ngradient_steps = {steps}\n'
                f'gradient_warmup_steps = {warmup}\n\n'
                f'[train]\nlr = 1e-2\nepochs = 2\nbatch_size = {batch_size}\n')
    r = subprocess.run([dsee, "run", recipe], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    check(f"dsee run {name} exits 0", r.returncode == 0, f"{r.returncode}:\n{r.stdout}\n{r.stderr}")
    with open(f"{work}/runs/{name}/stages/omega.json") as f:
        record = json.load(f)
    check_equal(f"{name}: stages/omega.json gradient_steps", record["gradient_steps"], steps)
    with h5py.File(f"{work}/runs/{name}/omega.h5", "r") as f:
        omega = {key: f[key][()].tolist() for key in f.keys()}
        attrs = {key: (v.decode() if isinstance(v, bytes) else v) for key, v in f.attrs.items()}
    return omega, attrs


def top_c(scores, c):
    import torch
    flat = scores.reshape(-1).double()
    order = sorted(range(flat.numel()), key=lambda i: (-flat[i].item(), i))
    return sorted(order[:c]), torch.sort(flat, descending=True).values


def reference_omega(model_dir, rows, batch_size, steps, warmup=0, seed=5, lr=1e-2, epochs=2, rank=4, alpha=8.0):
    import torch
    import transformers
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(model_dir).float()
    model.eval()
    names = [f"bert.encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value")]
    modules = [model.get_submodule(n) for n in names]
    for p in model.parameters():
        p.requires_grad_(False)

    def encode(indices):
        enc = tokenizer([rows[i][0] for i in indices], truncation=True, max_length=16, padding="longest",
                        return_tensors="pt")
        return enc, torch.tensor([rows[i][1] for i in indices])

    batches = global_batches(len(rows), batch_size, seed)
    lora = []
    if warmup:
        # core/tuning/tuning.h: A = randn(r, n)·0.02 per matrix in order from one generator seeded run.seed; B = 0.
        gen = torch.Generator().manual_seed(seed)
        for m in modules:
            a = (torch.randn(rank, m.in_features, generator=gen) * 0.02).requires_grad_(True)
            b = torch.zeros(m.out_features, rank, requires_grad=True)
            lora.append((a, b))
        scale = alpha / rank
        for m, (a, b) in zip(modules, lora):
            m.forward = (lambda lin, a, b: lambda x: torch.nn.functional.linear(x, lin.weight, lin.bias)
                         + scale * (x @ a.t()) @ b.t())(m, a, b)
        head = [model.classifier.weight, model.classifier.bias]
        for p in head:
            p.requires_grad_(True)
        params = [t for ab in lora for t in ab] + head
        optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        total = epochs * -(-len(rows) // batch_size)
        sched = transformers.get_linear_schedule_with_warmup(optim, 0, total)
        for _ in range(warmup):
            enc, labels = encode(next(batches))
            optim.zero_grad()
            model(**enc, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # train.max_grad_norm's default
            optim.step()
            sched.step()
        for p in params:
            p.requires_grad_(False)
    for m in modules:
        m.weight.requires_grad_(True)
    scores = [torch.zeros_like(m.weight) for m in modules]
    for _ in range(steps):
        enc, labels = encode(next(batches))
        for m in modules:
            m.weight.grad = None
        model(**enc, labels=labels).loss.backward()
        for s, m in zip(scores, modules):
            s += m.weight.grad.square()
    return {n.removeprefix("bert.") + ".weight": top_c(s, C) for n, s in zip(names, scores)}


@pytest.mark.parametrize("name,batch_size,steps,warmup", [("whole", N_TRAIN, 1, 0), ("batches", 5, 4, 0),
                                                          ("warmup", 5, 2, 2)])
def test_gradient_omega_matches_reference(task, dsee, name, batch_size, steps, warmup):
    work, data, model, rows = task
    omega, attrs = dsee_omega(dsee, work, data, model, name, batch_size, steps, warmup)
    check_equal(f"{name}: omega.h5 method", attrs["method"], "gradient")
    check_equal(f"{name}: omega.h5 settings", attrs["variant"],
                f"gradient_steps={steps},gradient_warmup_steps={warmup}")
    reference = reference_omega(model, rows, batch_size, steps, warmup)
    check_equal(f"{name}: Ω's matrices", sorted(omega), sorted(reference))
    for key, (indices, ranked) in reference.items():
        gap = (ranked[C - 1] - ranked[C]).item() / max(ranked[C - 1].item(), 1e-30)
        check(f"{name}: the reference's c-th and (c+1)-th scores of {key} are apart (relative gap {gap:.2e})",
              gap > 1e-4)
        check_equal(f"{name}: Ω of {key}", omega[key], indices)


def test_gradient_omega_gpt2_matches_reference(dsee, parity, tmp_path):
    """GPT-2 on a tiny E2E task (test_nlg_run.py's generated lines), one batch holding the whole
    training set: the token-mean loss of the completions, Ω of c_attn's q and v thirds."""
    import h5py
    import torch
    import transformers
    from harness.models import gpt2_bpe_tokenizer
    from test_nlg_run import e2e_lines
    work = str(tmp_path)
    rng = random.Random(1)
    data = f"{work}/e2e"
    os.makedirs(data)
    train = e2e_lines(rng, 20)
    for name, lines in (("train.txt", train), ("valid.txt", e2e_lines(rng, 4)), ("test.txt", e2e_lines(rng, 4))):
        with open(f"{data}/{name}", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    with open(f"{work}/corpus.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(line.replace("||", " ") for line in train))
    model_dir = f"{work}/gpt2"
    tokenizer = gpt2_bpe_tokenizer(f"{work}/corpus.txt", model_dir, vocab_size=300)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                                     initializer_range=0.2)
    transformers.GPT2LMHeadModel(config).save_pretrained(model_dir)
    recipe = f"{work}/gpt2.toml"
    with open(recipe, "w") as f:
        f.write(f'[run]\nname = "gpt2"\nout_dir = "{work}/runs"\nseed = 2\nstages = ["omega"]\n\n'
                f'[model]\npath = "{model_dir}"\n\n[task]\nname = "e2e"\ndata_dir = "{data}"\nmax_seq_length = 40\n\n'
                f'[tuning]\nmethod = "dsee"\nrank = 4\n\n[omega]\nc = {C}\nmethod = "gradient"\n\n'
                '[train]\nbatch_size = 64\n\n[eval]\nmax_new_tokens = 8\n')
    r = subprocess.run([dsee, "run", recipe], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    check("dsee run gpt2 exits 0", r.returncode == 0, f"{r.returncode}:\n{r.stdout}\n{r.stderr}")
    with h5py.File(f"{work}/runs/gpt2/omega.h5", "r") as f:
        omega = {key: f[key][()].tolist() for key in f.keys()}
    # dsee's encoding of the training lines (checked against transformers by test_nlg_encoding.py).
    got = parity("nlg-encode", {"file": f"{data}/train.txt", "tokenizer": model_dir, "max_seq_length": 40,
                                "prompt_length": 32}).json
    longest = max(len(x) for x in got["ids"])
    check("gpt2: one batch of 64 holds the whole training set", len(got["ids"]) <= 64, f"{len(got['ids'])} rows")
    ids = torch.tensor([x + [0] * (longest - len(x)) for x in got["ids"]])
    mask = torch.tensor([[1] * len(x) + [0] * (longest - len(x)) for x in got["ids"]])
    labels = torch.tensor(got["labels"])[:, :longest]
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir).float()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    weights = [block.attn.c_attn.weight for block in model.transformer.h]
    for w in weights:
        w.requires_grad_(True)
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    d = config.n_embd
    reference = {}
    for i, w in enumerate(weights):
        g = w.grad.t()  # Conv1D [in, 3d] → [3d, in]: rows q | k | v
        reference[f"h.{i}.attn.c_attn.weight:q"] = top_c(g[:d].square(), C)
        reference[f"h.{i}.attn.c_attn.weight:v"] = top_c(g[2 * d:].square(), C)
    check_equal("gpt2: Ω's matrices", sorted(omega), sorted(reference))
    for key, (indices, ranked) in reference.items():
        gap = (ranked[C - 1] - ranked[C]).item() / max(ranked[C - 1].item(), 1e-30)
        check(f"gpt2: the reference's c-th and (c+1)-th scores of {key} are apart (relative gap {gap:.2e})",
              gap > 1e-4)
        check_equal(f"gpt2: Ω of {key}", omega[key], indices)
