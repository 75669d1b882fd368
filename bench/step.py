"""bench/run's step section: one training step, dsee against transformers + PEFT.

For each model and dtype, three configurations, each in a process of its own
(so each peak resident memory is that configuration's alone):
  dsee DSEE   bench_step --method dsee (r, c = |Ω| per matrix, magnitude Ω)
  dsee LoRA   bench_step --method lora (r)
  PEFT LoRA   transformers (its default attention implementation, sdpa) +
              peft.get_peft_model(LoraConfig(r, lora_alpha, lora_dropout=0))
              and a plain torch loop with torch.optim.AdamW (its defaults;
              weight_decay 0 as dsee's AdamW); this script run as a worker
on the same random batch shape, the same thread count (at::set_num_threads /
torch.set_num_threads) and random weights (N(0, 0.02²), as HF initialises).
Dropout is 0 everywhere (dsee's models have none; its LoRA dropout is 0 too).
Each step is timed by phase: forward (model + loss), backward, optimizer
(AdamW step + zero_grad); the medians over --steps timed steps after --warmup
untimed ones. samples/s = batch / median step. Peak memory: the process's
VmHWM (peak resident set), measured before any profiling.

Models: bert-base (12 layers, hidden 768, 12 heads, MLP 3072, vocab 30522;
sequence classification, 2 labels; seq 128, batch 32) and gpt2-medium (24
layers, hidden 1024, 16 heads, vocab 50257; causal LM with labels = ids; seq
512, batch 2). Targets: BERT query and value on both sides. GPT-2: dsee
adapts the q and v thirds of attn.c_attn (c_attn:q, c_attn:v: two r-rank
updates per layer); PEFT cannot target a third of the fused c_attn, so it
adapts all of c_attn (fan_in_fan_out) with one r-rank update: the same number
of trainable parameters (r·(1024 + 3072) = 2·r·(1024 + 1024)), slightly
different matmuls.

bf16: dsee's run.precision = bf16 (frozen weights and activations bf16, A, B,
S and the task head fp32, docs/precision.md) against PEFT on a bf16 base
model: the model is built in bf16, get_peft_model keeps lora_A / lora_B in
fp32 (autocast_adapter_dtype=True, its default) and casts the layer's input
to fp32 for them, and the trainable head copy (modules_to_save, BERT's
classifier) is cast to fp32 with a pre-hook casting its input — as
tests/parity/test_precision_peft.py, where this setup matches dsee's step.

Rounds: --rounds R runs every configuration R times, alternating the order
of the stacks between rounds so that load from other processes hits both
alike; each configuration reports its best round (fastest median step) and
its largest peak memory over the rounds.

--profile DIR: one more step of every configuration under a profiler (dsee:
LibTorch's legacy profiler, a Chrome trace; Python: torch.profiler), and a
table per configuration of the ops with the most self time, in DIR.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {
    "bert-base": dict(model="bert", layers=12, hidden=768, heads=12, intermediate=3072, vocab=30522, seq=128, batch=32),
    "gpt2-medium": dict(model="gpt2", layers=24, hidden=1024, heads=16, intermediate=4096, vocab=50257, seq=512,
                        batch=2),
}
SMOKE_DIMS = dict(layers=2, hidden=64, heads=4, intermediate=256, vocab=1000, seq=16, batch=2)
METHODS = ("peft-lora", "dsee-dsee", "dsee-lora")
LABELS = {"peft-lora": "PEFT LoRA", "dsee-dsee": "dsee DSEE", "dsee-lora": "dsee LoRA"}


def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return -1.0


# ------------------------------------------------------------------ worker
def python_step(cfg, threads, warmup, steps, profile=None):
    """PEFT LoRA's step for one configuration (a dict of MODELS' keys plus
    dtype, r, alpha, seed); returns the JSON-able result."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(threads)
    base_rss = status_mib("VmRSS")
    dtype = torch.bfloat16 if cfg["dtype"] == "bf16" else torch.float32
    gpt2 = cfg["model"] == "gpt2"
    torch.manual_seed(cfg["seed"])
    if gpt2:
        config = GPT2Config(vocab_size=cfg["vocab"], n_embd=cfg["hidden"], n_layer=cfg["layers"], n_head=cfg["heads"],
                            n_inner=cfg["intermediate"], n_positions=max(cfg["seq"], 1024), resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel._from_config(config, dtype=dtype)
        lora = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], target_modules=["c_attn"], fan_in_fan_out=True,
                          lora_dropout=0.0, task_type="CAUSAL_LM")
    else:
        config = BertConfig(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"], num_hidden_layers=cfg["layers"],
                            num_attention_heads=cfg["heads"], intermediate_size=cfg["intermediate"],
                            max_position_embeddings=max(cfg["seq"], 512), hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, num_labels=2)
        model = BertForSequenceClassification._from_config(config, dtype=dtype)
        lora = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], target_modules=["query", "value"], lora_dropout=0.0,
                          task_type="SEQ_CLS")
    attention = model.config._attn_implementation
    model = get_peft_model(model, lora)
    if dtype == torch.bfloat16:  # the head trains in fp32, as dsee's (see the module docstring)
        for name, module in model.named_modules():
            if name.endswith("modules_to_save"):
                module["default"].float()
                module["default"].register_forward_pre_hook(
                    lambda _m, args: tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x
                                           for x in args))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trainable), "every trainable tensor should be fp32"
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg["seed"] + 1000)
    ids = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), generator=generator)
    labels = ids if gpt2 else torch.randint(0, 2, (cfg["batch"],), generator=generator)

    times = {"forward_ms": [], "backward_ms": [], "optimizer_ms": [], "step_ms": []}
    loss_value = 0.0

    def step(timed):
        nonlocal loss_value
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        t3 = time.perf_counter()
        loss_value = loss.item()
        if timed:
            for key, (a, b) in (("forward_ms", (t0, t1)), ("backward_ms", (t1, t2)), ("optimizer_ms", (t2, t3)),
                                ("step_ms", (t0, t3))):
                times[key].append(1000.0 * (b - a))

    for i in range(warmup + steps):
        step(i >= warmup)
    peak_rss = status_mib("VmHWM")
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step(False)
        rows = [(e.key, e.self_cpu_time_total / 1000.0, e.count) for e in prof.key_averages()]
        with open(profile, "w") as f:
            json.dump(rows, f)
    out = {key: statistics.median(values) for key, values in times.items()}
    out.update(stack="python", model=cfg["model"], method="lora", dtype=cfg["dtype"], threads=threads,
               batch=cfg["batch"], seq=cfg["seq"], steps=steps, step_ms_all=times["step_ms"],
               trainable_parameters=sum(p.numel() for p in trainable), attention=attention,
               samples_per_s=1000.0 * cfg["batch"] / out["step_ms"], base_rss_mib=base_rss, peak_rss_mib=peak_rss,
               loss=loss_value, torch_threads=torch.get_num_threads())
    return out


def worker(args):
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # peft's use of a renamed transformers method
    for cfg in json.loads(args.worker):
        print(json.dumps(python_step(cfg, args.threads, args.warmup, args.steps, cfg.get("profile"))), flush=True)


# ------------------------------------------------------------------ driver
def fail(message):
    sys.exit(f"bench/step.py: {message}")


def fmt_ms(value):
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def run_json(command, what):
    """Runs `command`; returns its stdout's JSON lines (stderr passes through)."""
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        fail(f"{what} failed (exit {result.returncode}): {' '.join(command)}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        fail(f"{what} printed no result: {' '.join(command)}")
    return [json.loads(line) for line in lines]


def dsee_command(binary, cfg, args, method, profile=None):
    command = [binary, "--model", cfg["model"], "--method", method, "--dtype", cfg["dtype"], "--threads",
               str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps), "--r", str(args.r), "--c",
               str(args.c), "--alpha", str(args.alpha), "--seed", str(cfg["seed"])]
    for key in ("layers", "hidden", "heads", "intermediate", "vocab", "seq", "batch"):
        command += [f"--{key}", str(cfg[key])]
    if profile:
        command += ["--profile", profile]
    return command


def self_times_of_trace(path):
    """{op name: (self ms, count)} from a LibTorch legacy-profiler Chrome trace:
    each event's duration less that of the events nested directly in it (per thread)."""
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_thread = {}
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            by_thread.setdefault(e.get("tid"), []).append(e)
    totals = {}
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack = []  # [event, end, child time]
        def close(entry):
            name = entry[0]["name"]
            t, n = totals.get(name, (0.0, 0))
            totals[name] = (t + (float(entry[0]["dur"]) - entry[2]) / 1000.0, n + 1)
        for e in evs:
            start, dur = float(e["ts"]), float(e["dur"])
            while stack and start >= stack[-1][1]:
                close(stack.pop())
            if stack:
                stack[-1][2] += dur
            stack.append([e, start + dur, 0.0])
        while stack:
            close(stack.pop())
    return totals


def write_profiles(folder, profiles, top=25):
    """One Markdown file: per configuration the ops with the most self time."""
    lines = ["# Profiles of one training step (self time per op, ms)\n"]
    for title, kind, path in profiles:
        if kind == "dsee":
            totals = self_times_of_trace(path)
        else:
            with open(path) as f:
                totals = {name: (ms, n) for name, ms, n in json.load(f)}
        total = sum(ms for ms, _ in totals.values())
        lines += [f"## {title} (total self time {total:.1f} ms)\n", "| op | self ms | share | calls |", "|---|---|---|---|"]
        for name, (ms, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
            lines.append(f"| {name} | {ms:.1f} | {100 * ms / max(total, 1e-9):.1f}% | {n} |")
        lines.append("")
    out = os.path.join(folder, "profiles.md")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"bench/step.py: profiles in {out}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build", help="dsee build folder (bin/bench_step)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes (2 layers, hidden 64, seq 16, batch 2), one warm-up and one timed step")
    parser.add_argument("--models", default="bert-base,gpt2-medium")
    parser.add_argument("--bert-batch", type=int, default=32)
    parser.add_argument("--gpt2-batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every configuration (best reported)")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--c", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", metavar="DIR", help="profile one more step of every configuration into DIR")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON list of configurations: the Python side
    # bench/run passes its `-- args` to every section: options meant for another section are ignored.
    args, unknown = parser.parse_known_args()
    if unknown and not args.worker:
        print(f"bench/step.py: ignoring options for other sections: {' '.join(unknown)}", file=sys.stderr)
    if args.worker:
        return worker(args)

    if args.smoke:
        args.warmup, args.steps, args.rounds = 1, 1, 1
    dtypes = [d for d in args.dtypes.split(",") if d]
    for d in dtypes:
        if d not in ("fp32", "bf16"):
            fail(f"unknown dtype '{d}' in --dtypes (expected fp32 and/or bf16)")
    models = [m for m in args.models.split(",") if m]
    if not models or not dtypes:
        fail("--models and --dtypes must each name at least one")
    for m in models:
        if m not in MODELS:
            fail(f"unknown model '{m}' in --models (expected {', '.join(MODELS)})")
    binary = os.path.join(os.path.abspath(args.build), "bin", "bench_step")
    if not os.access(binary, os.X_OK):
        fail(f"no {binary} (build the target bench_step: cmake --build {args.build} --target bench_step)")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    configs = []
    for m in models:
        dims = dict(MODELS[m])
        dims["batch"] = args.bert_batch if dims["model"] == "bert" else args.gpt2_batch
        if args.smoke:
            dims.update(SMOKE_DIMS)
        for d in dtypes:
            configs.append(dict(dims, name=m, dtype=d, r=args.r, alpha=args.alpha, seed=args.seed))

    def key(cfg):
        return f"{cfg['name']}-{cfg['dtype']}"

    results = {}  # (config key, method) -> list of round results
    profiles = []

    def record(cfg, method, result):
        results.setdefault((key(cfg), method), []).append(result)
        print(f"bench/step.py: {key(cfg)} {LABELS[method]}: {result['samples_per_s']:.2f} samples/s, "
              f"peak {result['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)

    def python_configs(cfgs, last_round):
        out = []
        for cfg in cfgs:
            c = dict(cfg)
            if args.profile and last_round:
                c["profile"] = os.path.join(args.profile, f"python-{key(cfg)}.json")
                profiles.append((f"{key(cfg)} PEFT LoRA", "python", c["profile"]))
            out.append(c)
        return out

    def worker_command(cfgs, last_round):
        return [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(python_configs(cfgs, last_round)),
                "--threads", str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps)]

    for round_ in range(args.rounds):
        last_round = round_ == args.rounds - 1
        python_first = round_ % 2 == 0
        if args.smoke:  # one Python process for every configuration: the import alone takes seconds
            order = ("python", "dsee") if python_first else ("dsee", "python")
            for stack in order:
                if stack == "python":
                    for cfg, r in zip(configs, run_json(worker_command(configs, last_round), "the Python side")):
                        record(cfg, "peft-lora", r)
                else:
                    for cfg in configs:
                        for method in ("dsee", "lora"):
                            r = run_json(dsee_command(binary, cfg, args, method), f"bench_step --method {method}")[0]
                            record(cfg, f"dsee-{method}", r)
            continue
        for cfg in configs:
            order = METHODS if python_first else tuple(reversed(METHODS))
            for method in order:
                if method == "peft-lora":
                    r = run_json(worker_command([cfg], last_round), "the Python side")[0]
                else:
                    tuning = method.split("-")[1]
                    profile = None
                    if args.profile and last_round:
                        profile = os.path.join(args.profile, f"dsee-{tuning}-{key(cfg)}.json")
                        profiles.append((f"{key(cfg)} {LABELS[method]}", "dsee", profile))
                    r = run_json(dsee_command(binary, cfg, args, tuning, profile), f"bench_step --method {tuning}")[0]
                record(cfg, method, r)

    # ------------------------------------------------------------ the table
    def base_rss(prefix):
        return next(r[0]["base_rss_mib"] for (_, m), r in results.items() if m.startswith(prefix))

    shapes = "; ".join(
        f"{m}: {MODELS[m]['layers'] if not args.smoke else SMOKE_DIMS['layers']} layers, hidden "
        f"{MODELS[m]['hidden'] if not args.smoke else SMOKE_DIMS['hidden']}, seq "
        f"{MODELS[m]['seq'] if not args.smoke else SMOKE_DIMS['seq']}, batch "
        f"{next(c['batch'] for c in configs if c['name'] == m)}" for m in models)
    print("#### Training step: dsee DSEE and LoRA against transformers + PEFT LoRA" + (" (smoke)" if args.smoke else ""))
    print()
    print(f"Random weights; {shapes}; r = {args.r}, alpha = {args.alpha:g}, c = {args.c} (DSEE, magnitude Ω); "
          f"{args.threads} thread(s) per side; median of {args.steps} timed step(s) after {args.warmup} warm-up, "
          f"best of {args.rounds} round(s); Python: attention `{next(r[0]['attention'] for (k, m), r in results.items() if m == 'peft-lora')}`, "
          f"torch.optim.AdamW. Ratios against PEFT LoRA of the same model and dtype: samples/s (higher is "
          f"better) and peak resident memory (lower is better).")
    print()
    print("| model | dtype | method | trainable | samples/s | forward ms | backward ms | optimizer ms | peak RSS MiB | "
          "× PEFT samples/s | × PEFT memory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cfg in configs:
        reference = None
        for method in METHODS:
            runs = results.get((key(cfg), method))
            if not runs:
                fail(f"no result for {key(cfg)} {LABELS[method]}")
            best = min(runs, key=lambda r: r["step_ms"])
            peak = max(r["peak_rss_mib"] for r in runs)
            if method == "peft-lora":
                reference = (best["samples_per_s"], peak)
            print(f"| {cfg['name']} | {cfg['dtype']} | {LABELS[method]} | {best['trainable_parameters']:,} | "
                  f"{best['samples_per_s']:.2f} | {fmt_ms(best['forward_ms'])} | {fmt_ms(best['backward_ms'])} | "
                  f"{fmt_ms(best['optimizer_ms'])} | {peak:.0f} | {best['samples_per_s'] / reference[0]:.2f}× | "
                  f"{peak / reference[1]:.2f}× |")
    print()
    gpt2_note = ("GPT-2: dsee adapts the q and v thirds of c_attn (two r-rank updates per layer); PEFT adapts the "
                 "whole fused c_attn with one (the same trainable count). " if "gpt2-medium" in models else "")
    bf16_note = "bf16: frozen weights bf16, adapters and head fp32 on both sides. " if "bf16" in dtypes else ""
    print(f"{gpt2_note}{bf16_note}"
          f"Peak RSS includes each process's start-up (dsee ≈ {base_rss('dsee'):.0f} MiB with LibTorch loaded; "
          f"Python with torch, transformers and peft imported ≈ {base_rss('peft'):.0f} MiB).")
    if args.profile:
        write_profiles(args.profile, profiles)


if __name__ == "__main__":
    main()
