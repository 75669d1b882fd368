"""bench/run's pipeline section: the whole job, Ω → train → prune → retune →
eval, through `dsee run` and through the equivalent Python pipeline, wall
time per stage, fp32 and bf16.

Two pipelines:
  demo   the built-in demo's recipe (recipes/demo.toml) as its
         dsee-unstructured-30 arm, one seed: dsee generates the model and the
         data (its data stage), the Python side loads the same files
         (data/pretrained, data/train.safetensors, data/dev.safetensors).
  sst2   an SST-2-sized job: a random BERT-base-shaped model saved by
         transformers (hidden 768, 12 heads, intermediate 3072; --layers of
         them) and SST-2-format TSV data drawn at random here (--train /
         --dev examples, every sentence seq − 2 words so that every batch is
         [batch, seq] on both sides, no padding); DSEE r = 16, α = 32, c = 16,
         Ω by GreBsmo's reference variant (dsee's default) on query and value
         of every layer, 1 epoch, unstructured pruning (--prune of P_adapt and
         P_rest), 1 epoch of re-tuning, eval.

dsee side: `dsee run RECIPE` (the recipe is written here), OMP_NUM_THREADS =
--threads; the stage times are the run's own (summary.json: stages.<stage>.
seconds); "other" is the process's wall time less the stages (start-up, the
data stage: tokenizing or generating, loading the model).

Python side, in a fresh interpreter (as `dsee run` is a fresh process;
"other": the interpreter's start, its imports, loading the model and the
data), the same stages with the same settings and the same dev
evaluations as dsee's pipeline (untuned; train and retune: at the epoch end
and once more for the stage's record; after pruning; eval): Ω by
bench/grebsmo_reference.py (reference variant) or bench/grebsmo.py's
tolerance transcription (the demo's recipe), on the same matrices (bf16: the
bf16-stored weights upcast, as dsee); transformers' BertForSequenceClassification
+ PEFT LoRA on query and value (A drawn from N(0, 0.02²) as dsee's), the sparse
term s·P_Ω(S)·x as a forward hook (gather the Ω columns of x, index_add into
the Ω rows), the classifier trained; torch.optim.AdamW with the linear
schedule, warm-up and gradient clipping of the recipe; pruning by the
arithmetic of docs/method.md in torch (P_adapt by |ΔW|, P_rest by |W|, exactly
round(p·N) entries each, ties to the lower index: a stable sort); re-tuning
computes (W + ΔW)⊙M (retune.mask_update = true, dsee's default). bf16: the
base model in bf16, adapters, S and the head in fp32 (docs/precision.md; the
head's input cast to fp32 as tests/parity/test_precision_peft.py does).

The sanity columns: dev accuracy after eval on each side (same data, same
model, different random draws: A, the head and the data order), and how many
of the adapted matrices got the same Ω on both sides. Both sides use every
thread for Ω: dsee computes each matrix on one thread, omega.workers =
--threads matrices at a time, so its Ω does not depend on the thread count;
Python runs the loop with --threads intra-op threads, whose QR and GEMM
round differently from one thread, and GreBsmo's threshold amplifies that.
So the same Ω is expected at --threads 1 (dsee equals the Python reference
there, as tests/parity checks) and not, in general, above it.

Options (parse_known_args: options meant for other sections, as bench/run
passes everything after `--` to every section, are ignored):
  --pipelines demo,sst2   which pipelines
  --layers N              sst2: encoder layers (default 2; 12 is BERT-base)
  --train N --dev N       sst2: examples (default 512 / 128; SST-2 has 67,349 / 872)
  --seq N --batch N       sst2: tokens per example (default 64), batch size (32)
  --prune P               sst2: fraction of P_adapt and P_rest removed (0.5)
  --lr LR                 sst2: learning rate of train and retune (1e-3)
  --keep DIR              keep the work folder (recipes, runs, models) in DIR
--smoke: tiny shapes (2 layers, hidden 64; a handful of examples, one step
per stage), 1 thread, the Python side in this process (imports paid once),
for bench/run --smoke.
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grebsmo_reference as ref  # noqa: E402

STAGES = ["omega", "pretrained", "train", "prune", "retune", "eval"]


def log(text):
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the jobs


class Job:
    """One pipeline's settings, shared by both sides."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def sst2_job(args, work):
    """Writes the random BERT model (transformers) and the SST-2-format data; returns the Job."""
    import transformers
    if args.smoke:
        dims = dict(layers=2, hidden=64, heads=4, intermediate=128)
        n_train, n_dev, seq, batch = 8, 8, 16, 8
    else:
        dims = dict(layers=args.layers, hidden=768, heads=12, intermediate=3072)
        n_train, n_dev, seq, batch = args.train, args.dev, args.seq, args.batch
    rng = random.Random(7)
    words = [f"w{i}" for i in range(1000)]
    positive, negative, neutral = words[:50], words[50:100], words[100:]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    model_dir = os.path.join(work, "sst2-model")
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True}, f)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=dims["hidden"],
                                     num_hidden_layers=dims["layers"], num_attention_heads=dims["heads"],
                                     intermediate_size=dims["intermediate"], max_position_embeddings=max(512, seq))
    transformers.BertModel(config).save_pretrained(model_dir, safe_serialization=True)

    def rows(n):
        out = []
        for _ in range(n):
            k = seq - 2
            sentiment = [rng.choice(positive + negative) for _ in range(max(1, k // 8))]
            filler = [rng.choice(neutral) for _ in range(k - len(sentiment))]
            tokens = sentiment + filler
            rng.shuffle(tokens)
            score = sum(1 if w in positive else -1 for w in sentiment)
            label = 1 if score > 0 or (score == 0 and rng.random() < 0.5) else 0
            out.append((" ".join(tokens), label))
        return out

    data_dir = os.path.join(work, "sst2-data")
    os.makedirs(data_dir, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        with open(os.path.join(data_dir, name), "w") as f:
            f.write("sentence\tlabel\n")
            for text, label in rows(n):
                f.write(f"{text}\t{label}\n")
    epochs, retune_epochs = 1, 1
    return Job(name="sst2", model_dir=model_dir, data_dir=data_dir, seq=seq, batch=batch, rank=16, alpha=32.0, c=16,
               variant="reference", max_rank=0, lr=args.lr, epochs=epochs, retune_epochs=retune_epochs,
               warmup_ratio=0.0, p_adapt=args.prune, p_rest=args.prune, eval_batch=256, n_train=n_train,
               n_dev=n_dev, dims=dims, new_head=True,
               describe=(f"sst2: BERT-base-shaped random model ({dims['layers']} layers, hidden {dims['hidden']}, "
                         f"{dims['heads']} heads, intermediate {dims['intermediate']}), random SST-2-format TSV, "
                         f"{n_train} train / {n_dev} dev examples of {seq} tokens, batch {batch}; DSEE r 16, "
                         f"c 16, Ω by GreBsmo (reference variant) on {2 * dims['layers']} matrices; 1 epoch, "
                         f"unstructured {args.prune:g} / {args.prune:g}, 1 retune epoch, lr {args.lr:g}"))


def demo_job(args):
    """The demo recipe's dsee-unstructured-30 arm (recipes/demo.toml), one seed."""
    sets = ["run.compare=[]", "run.compare_seeds=1", "tuning.method=dsee", "prune.kind=unstructured",
            "prune.p_adapt=0.3", "prune.p_rest=0.3"]
    train_size, dev_size, epochs, retune_epochs = 4096, 512, 5, 2
    if args.smoke:
        train_size, dev_size, epochs, retune_epochs = 32, 32, 1, 1
        sets += [f"task.train_size={train_size}", f"task.dev_size={dev_size}", f"train.epochs={epochs}",
                 f"retune.epochs={retune_epochs}"]
    return Job(name="demo", sets=sets, batch=32, rank=2, alpha=32.0, c=16, variant="tolerance", max_rank=4, lr=1e-2,
               epochs=epochs, retune_epochs=retune_epochs, warmup_ratio=0.06, p_adapt=0.3, p_rest=0.3,
               eval_batch=256, new_head=False,
               describe=(f"demo: recipes/demo.toml's dsee-unstructured-30 arm, one seed (dsee's generated 2-layer "
                         f"hidden-64 model; {train_size} train / {dev_size} dev sequences of 16 tokens; r 2, c 16, Ω "
                         f"by GreBsmo's tolerance variant, rank cap 4; {epochs} epochs, unstructured 0.3 / 0.3, "
                         f"{retune_epochs} retune epochs)"))


# ---------------------------------------------------------------- dsee side


def dsee_recipe(job, work, dtype, threads):
    path = os.path.join(work, f"{job.name}-{dtype}.toml")
    with open(path, "w") as f:
        f.write(f'[run]\nname = "{job.name}-{dtype}"\nout_dir = "{work}/runs"\nseed = 42\ndevice = "cpu"\n'
                f'precision = "{dtype}"\n\n[model]\npath = "{job.model_dir}"\n\n'
                f'[task]\nname = "sst2"\ndata_dir = "{job.data_dir}"\nmax_seq_length = {job.seq}\n\n'
                f'[tuning]\nmethod = "dsee"\nrank = {job.rank}\nalpha = {job.alpha}\n\n'
                f'[omega]\nc = {job.c}\nvariant = "{job.variant}"\nworkers = {threads}\n\n'
                f'[train]\nlr = {job.lr}\nepochs = {job.epochs}\nbatch_size = {job.batch}\n\n'
                f'[prune]\nkind = "unstructured"\np_adapt = {job.p_adapt}\np_rest = {job.p_rest}\n\n'
                f'[retune]\nepochs = {job.retune_epochs}\n\n[eval]\nbatch_size = {job.eval_batch}\n')
    return path


def run_dsee(args, job, work, dtype):
    """Runs the pipeline through dsee; returns ({stage: s, "other": s, "total": s}, summary, run dir)."""
    dsee = os.path.join(args.build, "bin", "dsee")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if job.name == "demo":
        name = f"demo-{dtype}"
        recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "demo.toml")
        cmd = [dsee, "run", recipe] + [x for s in job.sets + [f"run.out_dir={work}/runs", f"run.name={name}",
                                                      f"omega.workers={args.threads}",
                                                      f"run.precision={dtype}", "run.device=cpu"]
                               for x in ("--set", s)]
    else:
        name = f"{job.name}-{dtype}"
        cmd = [dsee, "run", dsee_recipe(job, work, dtype, args.threads)]
    run_dir = os.path.join(work, "runs", name)
    shutil.rmtree(run_dir, ignore_errors=True)
    log(f"pipeline: {' '.join(cmd)}")
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    with open(os.path.join(work, f"{name}.log"), "w") as f:  # spdlog's time-stamped lines, for --keep
        f.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"pipeline: dsee run failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    missing = [stage for stage in STAGES if "seconds" not in summary["stages"].get(stage, {})]
    if missing:
        raise SystemExit(f"pipeline: {run_dir}/summary.json has no seconds for stage(s) {', '.join(missing)}: "
                         f"{dsee} predates per-stage times; rebuild it (cmake --build {args.build} --target dsee)")
    times = {stage: summary["stages"][stage]["seconds"] for stage in STAGES}
    times["other"] = total - sum(times.values())
    times["total"] = total
    return times, summary, run_dir


def dsee_omega(run_dir):
    import h5py
    out = {}
    with h5py.File(os.path.join(run_dir, "omega.h5"), "r") as h:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[:]
        h.visititems(visit)
    return out


# ---------------------------------------------------------------- Python side


def linear_lambda(total, warmup):
    def factor(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return factor


class PythonPipeline:
    """The Python stack's pipeline for one job and dtype; each stage a method, timed by the caller."""

    def __init__(self, job, dtype, threads, seed=42):
        self.job, self.dtype, self.seed = job, dtype, seed
        self.bf16 = dtype == "bf16"
        self.gen = torch.Generator().manual_seed(seed)
        torch.set_num_threads(threads)

    def load(self, run_dir):
        """The model, the data and the adapted modules' names (the dsee run dir has the demo's files)."""
        import transformers
        from safetensors.torch import load_file
        job = self.job
        torch.manual_seed(self.seed)
        if job.name == "demo":
            folder = os.path.join(run_dir, "data", "pretrained")
            model = transformers.BertForSequenceClassification.from_pretrained(folder)
            train, dev = (load_file(os.path.join(run_dir, "data", f"{s}.safetensors")) for s in ("train", "dev"))
            self.train_ids, self.train_labels = train["input_ids"].long(), train["labels"].long()
            self.dev_ids, self.dev_labels = dev["input_ids"].long(), dev["labels"].long()
        else:
            model = transformers.BertForSequenceClassification.from_pretrained(job.model_dir, num_labels=2)
            tokenizer = transformers.BertTokenizerFast(os.path.join(job.model_dir, "vocab.txt"), do_lower_case=True)

            def encode(name):
                with open(os.path.join(job.data_dir, name)) as f:
                    lines = [line.rstrip("\n").split("\t") for line in f][1:]
                enc = tokenizer([x[0] for x in lines], truncation=True, max_length=job.seq, padding="longest",
                                return_tensors="pt")
                return enc["input_ids"], torch.tensor([int(x[1]) for x in lines])
            self.train_ids, self.train_labels = encode("train.tsv")
            self.dev_ids, self.dev_labels = encode("dev.tsv")
        model.config.use_cache = False
        if self.bf16:
            model = model.to(torch.bfloat16)
        self.model = model
        self.names = [n for n, m in model.named_modules()
                      if n.endswith("attention.self.query") or n.endswith("attention.self.value")]

    def omega(self):
        """Ω of every adapted matrix, model order, one generator seeded once (omega.seed 0)."""
        gen = torch.Generator().manual_seed(0)
        self.omega_idx = {}
        for name in self.names:
            W = self.model.get_submodule(name).weight.detach().float()
            if self.job.variant == "reference":
                S = ref.grebsmo_reference(W, gen)
            else:
                import grebsmo
                S = grebsmo.python_tolerance(W, gen, max_rank=self.job.max_rank)
            self.omega_idx[name] = torch.tensor(ref.top_c(S.abs(), self.job.c), dtype=torch.long)

    def attach(self):
        """PEFT LoRA on query and value, the sparse term as a hook, the head trainable in fp32."""
        from peft import LoraConfig, get_peft_model
        job = self.job
        config = LoraConfig(r=job.rank, lora_alpha=job.alpha, lora_dropout=0.0, target_modules=["query", "value"],
                            modules_to_save=["classifier"])
        self.peft = get_peft_model(self.model, config)
        self.scale = job.alpha / job.rank
        self.adapted = {}
        for name in self.names:
            module = self.peft.base_model.model.get_submodule(name)
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            with torch.no_grad():
                a.normal_(0.0, 0.02, generator=self.gen)
                b.zero_()
            m, n = module.base_layer.weight.shape
            idx = self.omega_idx[name]
            values = torch.nn.Parameter(torch.zeros(job.c))
            entry = dict(module=module, a=a, b=b, rows=idx // n, cols=idx % n, flat=idx, values=values, m=m, n=n,
                         mask=None)
            module.register_forward_hook(self.sparse_hook(entry))
            self.adapted[name] = entry
        for module_name, module in self.peft.named_modules():
            if module_name.endswith("modules_to_save") and self.bf16:
                head = module["default"].float()
                head.register_forward_pre_hook(
                    lambda _m, args: tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x
                                           for x in args))
        self.trainable = [p for p in self.peft.parameters() if p.requires_grad] + \
            [e["values"] for e in self.adapted.values()]

    def sparse_hook(self, entry):
        scale = self.scale

        def hook(_module, inputs, out):
            if entry["mask"] is not None:
                return out  # re-tuning: masked_forward already has the whole update
            x = inputs[0].float()
            sparse = torch.zeros(out.shape, dtype=torch.float32).index_add_(
                -1, entry["rows"], x[..., entry["cols"]] * entry["values"])
            return (out.float() + scale * sparse).to(out.dtype)
        return hook

    def delta(self, entry):
        """ΔW = s·(B·A + P_Ω(S)), fp32 [m, n]."""
        dense = (entry["b"] @ entry["a"]).reshape(-1).index_add(0, entry["flat"], entry["values"])
        return self.scale * dense.view(entry["m"], entry["n"])

    def logits(self, ids):
        return self.peft(input_ids=ids).logits.float()  # no padding on either pipeline

    def evaluate(self):
        self.peft.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(self.dev_ids), self.job.eval_batch):
                ids = self.dev_ids[i:i + self.job.eval_batch]
                correct += (self.logits(ids).argmax(-1) == self.dev_labels[i:i + self.job.eval_batch]).sum().item()
        return correct / len(self.dev_ids)

    def train(self, epochs):
        """`epochs` of AdamW (linear schedule, warm-up ratio, clipping at 1), dev evaluation at the end."""
        job = self.job
        n = len(self.train_ids)
        steps = epochs * math.ceil(n / job.batch)
        optimizer = torch.optim.AdamW(self.trainable, lr=job.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_lambda(steps, math.ceil(job.warmup_ratio * steps)))
        self.peft.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=self.gen)
            for i in range(0, n, job.batch):
                pick = order[i:i + job.batch]
                loss = torch.nn.functional.cross_entropy(self.logits(self.train_ids[pick]), self.train_labels[pick])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
                optimizer.step()
                schedule.step()
            self.evaluate()  # the epoch-end evaluation
            self.peft.train()
        return self.evaluate()  # the stage record's

    def prune(self):
        """Masks: P_adapt by |ΔW| and P_rest by |W|, exactly round(p·N) each, ties to the lower index."""
        job = self.job
        model = self.peft.base_model.model

        def plan(scores, p):
            flat = torch.cat([s.reshape(-1) for s in scores])
            k = int(math.floor(p * flat.numel() + 0.5))
            keep = torch.ones(flat.numel(), dtype=torch.bool)
            keep[torch.sort(flat, stable=True).indices[:k]] = False
            return keep.split([s.numel() for s in scores])

        with torch.no_grad():
            entries = list(self.adapted.values())
            masks = plan([self.delta(e).abs() for e in entries], job.p_adapt)
            for e, mask in zip(entries, masks):
                e["mask"] = mask.view(e["m"], e["n"])
                e["module"].forward = self.masked_forward(e)
            rest = [m for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and "lora_" not in name and "classifier" not in name
                    and not any(name.startswith(a) for a in self.names)]
            masks = plan([m.weight.float().abs() for m in rest], job.p_rest)
            for m, mask in zip(rest, masks):
                m.weight.mul_(mask.view(m.weight.shape).to(m.weight.dtype))
        return self.evaluate()

    def masked_forward(self, entry):
        """Re-tuning's forward of an adapted projection: x·((W + ΔW)⊙M)ᵀ + b."""
        base = entry["module"].base_layer

        def forward(x, *args, **kwargs):
            weight = ((base.weight.float() + self.delta(entry)) * entry["mask"]).to(base.weight.dtype)
            return torch.nn.functional.linear(x, weight, base.bias)
        return forward


def run_python(job, dtype, threads, run_dir, work, fresh=True):
    """The Python pipeline in a fresh interpreter (as `dsee run` is a fresh process; --smoke: in this one, so
    the imports are paid once); returns ({stage: s, "other": s, "total": s}, dev accuracy, Ω)."""
    if not fresh:
        start = time.perf_counter()
        times, accuracy, omega = python_stages(job, dtype, threads, run_dir)
        total = time.perf_counter() - start
        times["other"] = total - sum(times.values())
        times["total"] = total
        return times, accuracy, omega
    request = os.path.join(work, f"python-{job.name}-{dtype}.json")
    with open(request, "w") as f:
        json.dump({"job": job.__dict__, "dtype": dtype, "threads": threads, "run_dir": run_dir}, f)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--python-side", request],
                          stdout=subprocess.PIPE, text=True)
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pipeline: the Python pipeline failed ({done.returncode}) on {job.name} {dtype}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    times = result["times"]
    times["other"] = total - sum(times.values())
    times["total"] = total
    return times, result["accuracy"], {k: torch.tensor(v) for k, v in result["omega"].items()}


def quiet_imports():
    import importlib
    import warnings
    warnings.filterwarnings("ignore")
    importlib.import_module("peft")
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def python_side(request_file):
    """The --python-side process: runs the stages, prints {times, accuracy, omega} as one JSON line."""
    quiet_imports()
    with open(request_file) as f:
        request = json.load(f)
    times, accuracy, omega = python_stages(Job(**request["job"]), request["dtype"], request["threads"],
                                           request["run_dir"])
    print(json.dumps({"times": times, "accuracy": accuracy, "omega": {k: v.tolist() for k, v in omega.items()}}))


def python_stages(job, dtype, threads, run_dir):
    """The Python pipeline's stages, each timed: ({stage: s}, dev accuracy, Ω); "load" is left to the caller's
    "other" (interpreter start, imports, model and data loading)."""
    times = {}

    def timed(stage, fn, *a):
        t = time.perf_counter()
        result = fn(*a)
        times[stage] = time.perf_counter() - t
        log(f"pipeline: python {job.name} {dtype} {stage}: {times[stage]:.1f} s")
        return result

    p = PythonPipeline(job, dtype, threads)
    p.load(run_dir)
    timed("omega", p.omega)

    def pretrained():
        p.attach()
        return p.evaluate()
    timed("pretrained", pretrained)
    timed("train", p.train, job.epochs)
    timed("prune", p.prune)
    timed("retune", p.train, job.retune_epochs)
    accuracy = timed("eval", p.evaluate)
    return times, accuracy, p.omega_idx


def omega_agreement(dsee_sets, python_sets):
    """(same, total): adapted matrices whose Ω is the same set on both sides (matched by layer and projection)."""
    def key(name):
        parts = name.replace("/", ".").split(".")
        layer = next((parts[i + 1] for i, x in enumerate(parts) if x == "layer" and i + 1 < len(parts)), "?")
        return layer, "query" if "query" in name else "value"
    theirs = {key(n): sorted(v.reshape(-1).tolist()) for n, v in dsee_sets.items()}
    same = sum(1 for n, v in python_sets.items() if theirs.get(key(n)) == sorted(v.tolist()))
    return same, len(python_sets)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--pipelines", default="demo,sst2")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--dev", type=int, default=128)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--keep", default="")
    parser.add_argument("--python-side", default="", help=argparse.SUPPRESS)
    args, ignored = parser.parse_known_args()
    if args.python_side:
        return python_side(args.python_side)
    if ignored:
        log(f"pipeline: ignoring options meant for other sections: {' '.join(ignored)}")
    dtypes = [d for d in args.dtypes.split(",") if d]
    for d in dtypes:
        if d not in ("fp32", "bf16"):
            raise SystemExit(f"pipeline: --dtypes {args.dtypes}: expected fp32 and/or bf16")
    pipelines = [x for x in args.pipelines.split(",") if x]
    for x in pipelines:
        if x not in ("demo", "sst2"):
            raise SystemExit(f"pipeline: --pipelines {args.pipelines}: expected demo and/or sst2")
    if args.smoke:  # tiny shapes on a possibly loaded machine: threads would only wait for each other
        args.threads = 1
        quiet_imports()
    work = args.keep or tempfile.mkdtemp(prefix="dsee-bench-pipeline-")
    os.makedirs(work, exist_ok=True)
    try:
        jobs = [demo_job(args) if x == "demo" else sst2_job(args, work) for x in pipelines]
        rows, sanity = [], []
        for job in jobs:
            for dtype in dtypes:
                ours, summary, run_dir = run_dsee(args, job, work, dtype)
                log(f"pipeline: dsee {job.name} {dtype}: " +
                    ", ".join(f"{k} {v:.1f} s" for k, v in ours.items()))
                theirs, accuracy, omega = run_python(job, dtype, args.threads, run_dir, work, fresh=not args.smoke)
                for stage in STAGES + ["other", "total"]:
                    rows.append((job.name, dtype, stage, ours[stage], theirs[stage]))
                same, total = omega_agreement(dsee_omega(run_dir), omega)
                sanity.append((job.name, dtype, summary["dev"]["accuracy"], accuracy, same, total))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("#### Pipeline: `dsee run` against transformers + PEFT + torch (Ω → train → prune → retune → eval)")
    print()
    for job in jobs:
        print(f"- {job.describe}")
    print(f"- {args.threads} thread(s) per side; stage seconds of dsee from its summary.json; \"pretrained\": "
          "attaching the update and the untuned dev evaluation; \"other\": the process's start-up (the Python "
          "interpreter and its imports; dsee's libraries), data and model loading; both "
          "sides evaluate the dev set where dsee's pipeline does; Ω: dsee omega.workers = threads (one thread per "
          "matrix), Python the reference loop on all threads (same Ω expected at 1 thread only: the reference "
          "loop's rounding depends on the thread count)"
          + (" (--smoke: tiny shapes, one step per stage, 1 thread, the Python side in this process)"
             if args.smoke else ""))
    print()
    print("| pipeline | dtype | stage | dsee s | Python s | Python / dsee |")
    print("|---|---|---|---|---|---|")
    for name, dtype, stage, a, b in rows:
        bold = "**" if stage == "total" else ""
        print(f"| {name} | {dtype} | {bold}{stage}{bold} | {a:.2f} | {b:.2f} | {bold}{b / max(a, 1e-9):.2f}x{bold} |")
    print()
    print("| pipeline | dtype | dev accuracy dsee | dev accuracy Python | same Ω (matrices) |")
    print("|---|---|---|---|---|")
    for name, dtype, a, b, same, total in sanity:
        print(f"| {name} | {dtype} | {a:.4f} | {b:.4f} | {same} of {total} |")


if __name__ == "__main__":
    main()
