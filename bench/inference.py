"""bench/run's inference section: the pruned models against the dense one,
dsee and transformers, latency and throughput, fp32 and bf16.

Models (a BERT-base-sized random BertForSequenceClassification, 12 layers,
hidden 768, 12 heads, 2 labels, saved by transformers; --layers changes the
depth):
  dense          as saved
  heads-3        3 of 12 heads removed in every layer by `dsee prune --heads 3`
                 (the heads with the smallest Σ|W| over their query and value
                 rows; removal is physical, recorded in config.json's
                 pruned_heads); transformers: the dense model with the same
                 heads removed as transformers 4's model.prune_heads did
                 (transformers 5 has no prune_heads; shrink() here)
  unstructured   50% of every encoder projection and the pooler removed by
                 `dsee prune --p-rest 0.5` (by |W|), merged: the zeros are in
                 dense weights, so dense kernels run and the speed should equal
                 the dense model's — that is what the row shows
Timing: dsee's forward by bench_forward (bench/forward_bench.cpp), the
transformers model (default attention implementation) in
torch.inference_mode, the same thread count and random token ids [batch,
seq] without padding; a warm-up forward (dsee: in every round's process;
transformers: before its first round), then --iters timed forwards per
round, rounds alternating the two stacks so that load from other processes
hits both alike; the best round of each is reported. latency = ms per
forward of the batch, throughput = samples/s; pruned / dense ratios of
throughput on each stack.

Sanity (fp32): the logits of dsee's head-pruned folder (`dsee forward`)
against transformers' prune_heads on the dense model, and of the
unstructured folder against transformers loading it, on a small batch: max
|dsee − transformers| / max |transformers| must be ≤ 1e-5, else the section
fails.

Options (parse_known_args: options for other sections are ignored):
  --batch 32 --seq 128 --iters 2 --rounds 2 --layers 12 --heads-removed 3
  --p 0.5 --keep DIR
"""
import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

BOUND = 1e-5


def log(text):
    print(text, file=sys.stderr, flush=True)


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"inference: failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}\n"
                         f"{done.stderr[-2000:]}")
    return done.stdout


def dsee_seconds(args, folder, dtype):
    out = run([os.path.join(args.build, "bin", "bench_forward"), folder, str(args.batch), str(args.seq),
               str(args.iters), str(args.threads), "cpu", dtype])
    return json.loads(out.strip().splitlines()[-1])["seconds_per_forward"]


def hf_seconds(model, ids, iters, warm_up):
    with torch.inference_mode():
        if warm_up:
            model(input_ids=ids)
        start = time.perf_counter()
        for _ in range(iters):
            model(input_ids=ids)
        return (time.perf_counter() - start) / iters


def pruned_heads(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return {int(k): v for k, v in json.load(f)["pruned_heads"].items()}


def dsee_logits(args, folder, ids, work):
    from safetensors.torch import load_file
    path = os.path.join(work, "ids.json")
    with open(path, "w") as f:
        json.dump(ids.tolist(), f)
    out = os.path.join(work, "out.safetensors")
    run([os.path.join(args.build, "bin", "dsee"), "forward", "--model", folder, "--input-ids", path, "--out", out])
    return load_file(out)["logits"]


def shrink(model, pruned):
    """Removes heads in place, what transformers 4's prune_heads did (transformers 5 has none): query, key and
    value keep the surviving heads' rows, the attention output projection the matching input columns."""
    n_heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // n_heads
    hidden = model.config.hidden_size
    for layer, heads in pruned.items():
        keep = torch.tensor([h * head_dim + i for h in range(n_heads) if h not in heads for i in range(head_dim)])
        a = model.bert.encoder.layer[layer].attention
        with torch.no_grad():
            for name in ("query", "key", "value"):
                old = getattr(a.self, name)
                new = torch.nn.Linear(hidden, len(keep))
                new.weight.copy_(old.weight[keep])
                new.bias.copy_(old.bias[keep])
                setattr(a.self, name, new)
            new = torch.nn.Linear(len(keep), hidden)
            new.weight.copy_(a.output.dense.weight[:, keep])
            new.bias.copy_(a.output.dense.bias)
            a.output.dense = new
    return model


def relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads-removed", type=int, default=3)
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--keep", default="")
    args, ignored = parser.parse_known_args()
    if ignored:
        log(f"inference: ignoring options meant for other sections: {' '.join(ignored)}")
    dtypes = [d for d in args.dtypes.split(",") if d]
    for d in dtypes:
        if d not in ("fp32", "bf16"):
            raise SystemExit(f"inference: --dtypes {args.dtypes}: expected fp32 and/or bf16")
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    if args.smoke:
        config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=128, num_labels=2)
        args.batch, args.seq, args.iters, args.rounds, args.heads_removed = 4, 16, 1, 1, 1
        args.threads = 1  # tiny shapes on a possibly loaded machine: threads would only wait for each other
        torch.set_num_threads(1)
    else:
        config = transformers.BertConfig(num_hidden_layers=args.layers, num_labels=2)
    heads = config.num_attention_heads
    work = args.keep or tempfile.mkdtemp(prefix="dsee-bench-inference-")
    os.makedirs(work, exist_ok=True)
    dsee = os.path.join(args.build, "bin", "dsee")
    try:
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification(config).eval()
        folders = {name: os.path.join(work, name) for name in ("dense", "heads", "unstructured")}
        model.save_pretrained(folders["dense"])
        run([dsee, "prune", "--model", folders["dense"], "--out", folders["heads"], "--heads",
             str(args.heads_removed)])
        run([dsee, "prune", "--model", folders["dense"], "--out", folders["unstructured"], "--p-rest", str(args.p)])
        removed = pruned_heads(folders["heads"])

        def hf_model(name, dtype):
            if name == "unstructured":
                m = transformers.BertForSequenceClassification.from_pretrained(folders["unstructured"])
            else:
                m = copy.deepcopy(model)
                if name == "heads":
                    shrink(m, removed)
            return m.eval().to(torch.bfloat16 if dtype == "bf16" else torch.float32)

        # Sanity: dsee's pruned folders against transformers, fp32 logits.
        g = torch.Generator().manual_seed(1)
        small = torch.randint(4, config.vocab_size, (2, 16), generator=g)
        sanity = {}
        for name in ("heads", "unstructured"):
            with torch.inference_mode():
                expected = hf_model(name, "fp32")(input_ids=small).logits
            sanity[name] = relative(dsee_logits(args, folders[name], small, work), expected)
            log(f"inference: {name} logits, dsee vs transformers: {sanity[name]:.2e}")
            if not sanity[name] <= BOUND:
                raise SystemExit(f"inference: the {name} model's logits differ from transformers' by "
                                 f"{sanity[name]:.2e} relative (bound {BOUND:g})")

        ids = torch.randint(4, config.vocab_size, (args.batch, args.seq), generator=g)
        rows = []
        for dtype in dtypes:
            seconds = {}
            for name in ("dense", "heads", "unstructured"):
                hf = hf_model(name, dtype) if name != "unstructured" else None
                ours, theirs = [], []
                for round_ in range(args.rounds):
                    ours.append(dsee_seconds(args, folders[name], dtype))  # a warm-up forward in every process
                    if hf is not None:
                        theirs.append(hf_seconds(hf, ids, args.iters, warm_up=round_ == 0))
                seconds[("dsee", name)] = min(ours)
                if theirs:
                    seconds[("transformers", name)] = min(theirs)
                log(f"inference: {dtype} {name}: dsee {min(ours) * 1e3:.1f} ms" +
                    (f", transformers {min(theirs) * 1e3:.1f} ms" if theirs else ""))
                del hf
            for stack in ("dsee", "transformers"):
                for name in ("dense", "heads", "unstructured"):
                    if (stack, name) in seconds:
                        s = seconds[(stack, name)]
                        rows.append((dtype, stack, name, s, s / seconds[(stack, "dense")],
                                     seconds[("transformers", name)] / s if stack == "dsee" and
                                     ("transformers", name) in seconds else None))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    names = {"dense": "dense", "heads": f"{args.heads_removed} of {heads} heads removed per layer",
             "unstructured": f"unstructured {args.p:g}, merged (dense kernels)"}
    print("#### Inference: pruned models against the dense one, dsee and transformers")
    print()
    print(f"- random BertForSequenceClassification, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{heads} heads, intermediate {config.intermediate_size}; batch {args.batch} x seq {args.seq}, no padding; "
          f"{args.threads} thread(s) per side; best of {args.rounds} round(s) of {args.iters} forward(s) after a "
          f"warm-up forward; transformers {transformers.__version__} with its default attention, torch.inference_mode"
          + (" (--smoke: tiny shapes, 1 thread)" if args.smoke else ""))
    print(f"- sanity (fp32 logits, max |dsee − transformers| / max |transformers|, bound {BOUND:g}): head-pruned "
          f"folder vs transformers with the heads removed {sanity['heads']:.1e}; unstructured folder vs transformers "
          f"{sanity['unstructured']:.1e}")
    print()
    print("| dtype | stack | model | latency ms / batch | throughput samples/s | throughput vs dense | "
          "dsee speed-up vs transformers |")
    print("|---|---|---|---|---|---|---|")
    for dtype, stack, name, s, rel, versus in rows:
        print(f"| {dtype} | {stack} | {names[name]} | {s * 1e3:.1f} | {args.batch / s:.1f} | **{1 / rel:.2f}x** | "
              f"{'' if versus is None else f'{versus:.2f}x'} |")


if __name__ == "__main__":
    main()
