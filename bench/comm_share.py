"""Communication share of a data-parallel step: dsee vs the Python stack.

Runs, for each rank count (default 1, 2, 4 CPU ranks):
  dsee    bench_comm_share under mpirun (MPI communicator): per-step compute
          (forward + backward), sync (the one all-reduce of the trainable
          gradients), update (AdamW), and the cost of an all-reduce as large
          as the whole model (what full-model data parallelism would move);
  python  transformers BertForSequenceClassification + PEFT LoRA wrapped in
          torch DistributedDataParallel (gloo), torch.optim.AdamW: the same
          model shape, batch and LoRA settings; DDP overlaps its all-reduce
          with backward, so only its step time is comparable.
Both sides use one intra-op thread per rank. Output: a Markdown table.

--device cuda runs both sides on GPUs, one rank per GPU (dsee with the NCCL
communicator, Python with DDP over nccl), synchronising the device before
each clock reading; TF32 is off on both sides. On a one-GPU machine use
--ranks 1: the NCCL all-reduce then runs on one rank and its cost is the
floor of a step's communication.

Note: the development VM has 2 cores, so 4 ranks oversubscribe it; the
4-rank line shows contention, not scaling.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


def python_rank(rank, world, args, port, out_path):
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.set_num_threads(1)
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=8000, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                        max_position_embeddings=max(args.seq, 128), hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    model = BertForSequenceClassification(config)
    model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules=["query", "value"],
                                             lora_dropout=0.0, task_type="SEQ_CLS"))
    model.to(device).train()
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(1000 + rank)
    ids = torch.randint(0, 8000, (args.batch, args.seq), generator=generator)
    labels = torch.randint(0, 2, (args.batch,), generator=generator)
    ids, labels = ids.to(device), labels.to(device)
    total = 0.0
    for step in range(args.warmup + args.steps):
        dist.barrier()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        optimizer.zero_grad()
        ddp(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        if step >= args.warmup:
            total += t1 - t0
    step_s = torch.tensor([total / args.steps], dtype=torch.float64, device=device)
    gathered = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(world)]
    dist.all_gather(gathered, step_s)
    if rank == 0:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        with open(out_path, "w") as f:
            json.dump({"step_s_slowest_rank": max(float(g) for g in gathered), "trainable_parameters": trainable}, f)
    dist.destroy_process_group()


def run_python(world, args):
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        port = 29500 + (os.getpid() + world) % 2000
        mp.spawn(python_rank, args=(world, args, port, out), nprocs=world, join=True)
        with open(out) as f:
            return json.load(f)


def run_dsee(world, method, args):
    command = [args.mpiexec, "-n", str(world), "--oversubscribe", args.driver, "--layers", str(args.layers),
               "--hidden", str(args.hidden), "--heads", str(args.heads), "--seq", str(args.seq), "--batch",
               str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup), "--method", method,
               "--r", str(args.r), "--c", str(args.c), "--device", args.device]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", required=True, help="path to bench_comm_share")
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="micro-batch per rank")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--c", type=int, default=16)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"# Communication share per data-parallel step ({platform.node()}, {os.cpu_count()} CPUs, "
          f"load average {load:.2f} at start)")
    print(f"device: {args.device}; model: BERT-style, {args.layers} layers, hidden {args.hidden}, seq {args.seq}, micro-batch {args.batch} "
          f"per rank, r = {args.r}, c = {args.c}; {args.steps} timed steps after {args.warmup}\n")
    print("| ranks | method | trainable | bytes / step | full-model bytes | compute s | sync s | sync share | "
          "full-model all-reduce s | share if full-model | dsee step s | python DDP+PEFT step s | python / dsee |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for world in [int(x) for x in args.ranks.split(",")]:
        python = run_python(world, args)
        for method in ("lora", "dsee"):
            d = run_dsee(world, method, args)
            ratio = f"{python['step_s_slowest_rank'] / d['step_s_slowest_rank']:.2f}x" if method == "lora" else "-"
            py_step = f"{python['step_s_slowest_rank']:.4f}" if method == "lora" else "-"
            print(f"| {world} | {method} | {d['trainable_parameters']} | {d['bytes_per_step']} | {d['full_model_bytes_per_step']} | {d['compute_s']:.4f} | "
                  f"{d['sync_s']:.5f} | {100 * d['sync_share']:.1f}% | {d['full_model_allreduce_s']:.4f} | "
                  f"{100 * d['full_model_share']:.1f}% | {d['step_s_slowest_rank']:.4f} | {py_step} | {ratio} |",
                  flush=True)
    print(f"\nfinished, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
