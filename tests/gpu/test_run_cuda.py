"""`dsee run` on CUDA (issues 6 and 7): the whole pipeline on the GPU, with
the NCCL communicator on one rank, against the same recipe on the CPU with
the MPI communicator.

Usage: test_run_cuda.py SCENARIO DSEE [DEVICE]
  matches_cpu  a tiny DSEE recipe (grad_accumulation 2, clipping, warm-up,
               unstructured pruning + re-tuning, hf export) run with
               run.device = cpu and with run.device = DEVICE. The run on
               DEVICE trains there (stages/train.json: device cuda:0,
               communicator nccl when this build has NCCL); omega.h5 and
               masks.h5 hold the same datasets; the trained and re-tuned
               trainable tensors and the exported weights agree within 1e-4
               of their largest magnitude; dev accuracy differs by at most
               one example; the logged losses agree within 1e-4. Prints the
               train stage's seconds per step on both devices.
  resume       on DEVICE, a run stopped by SIGTERM at step 3 (the test hook
               DSEE_TEST_STOP_AFTER_STEP) writes ckpt/step-3.h5 holding the
               CUDA generator state (/rng/cuda/0), and resumed, ends where a
               straight run on DEVICE ends (trainable tensors within 1e-5 of
               their largest magnitude, the same steps and dev metrics;
               bit-for-bit is a CPU guarantee, Note [The pipeline on CUDA]).
DEVICE defaults to cuda; without a usable GPU the script exits 77 (skipped).
`DEVICE = cpu` runs the same comparisons CPU against CPU: a check of the
script itself on a machine without a GPU (every difference is then 0).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tiny_run import fail, h5_datasets, tiny_recipe  # noqa: E402

SCENARIO, DSEE = sys.argv[1:3]
DEVICE = sys.argv[3] if len(sys.argv) > 3 else "cuda"

RECIPE = tiny_recipe(prune='kind = "unstructured"', dist="timeout_s = 60.0")


def run(arguments, env=None, timeout=300):
    start = time.monotonic()
    p = subprocess.run([DSEE, "run"] + arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, time.monotonic() - start


def run_ok(label, arguments, env=None):
    rc, text, seconds = run(arguments, env)
    print(f"--- {label}: exit {rc} after {seconds:.1f} s")
    if rc != 0:
        print(text)
        fail(f"{label}: exit {rc}")
    return text


def stage(run_dir, name):
    return json.load(open(os.path.join(run_dir, "stages", f"{name}.json")))


def relative_difference(a, b, label):
    """Largest |a - b| over tensors of the same names, relative to the largest |a|."""
    if a.keys() != b.keys():
        fail(f"{label}: tensor names differ: {sorted(set(a) ^ set(b))}")
    for k in a:
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype:
            fail(f"{label}: {k} is {b[k].dtype} {b[k].shape}, expected {a[k].dtype} {a[k].shape}")
    scale = max(float(np.max(np.abs(v.astype(np.float64)))) for v in a.values() if v.size)
    worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a if a[k].size)
    if scale == 0:
        fail(f"{label}: every value is zero: nothing was trained")
    return worst / scale


def compare_trainables(base, other, base_label, other_label, bound):
    """The trained and re-tuned tensors of two run directories, relative to the base's largest value."""
    for name in ("trainable-train", "trainable-retune"):
        d = relative_difference(load_file(os.path.join(base, f"{name}.safetensors")),
                                load_file(os.path.join(other, f"{name}.safetensors")), name)
        print(f"    {name}.safetensors: max |{base_label} - {other_label}| / max |{base_label}| = {d:.2e}")
        if d > bound:
            fail(f"{name}: {other_label} differs from {base_label} by {d:.2e} of the largest value (bound {bound})")


def check_device_record(run_dir, device):
    record = stage(run_dir, "train")
    want = "cuda:0" if device == "cuda" else "cpu"
    if record.get("device") != want:
        fail(f"{run_dir}: stages/train.json says device {record.get('device')!r}, expected {want!r}")
    print(f"    {device}: trained on {record['device']}, communicator {record.get('communicator')}, "
          f"{record['seconds'] / max(record['steps'], 1) * 1e3:.2f} ms per step over {record['steps']} steps "
          f"(stage wall time, evaluation included)")
    return record


def matches_cpu(tmp, recipe):
    dirs = {}
    for device in ("cpu", DEVICE):
        out = os.path.join(tmp, f"out-{device}-{len(dirs)}")
        run_ok(f"run.device = {device}",
               [recipe, "--set", f"run.out_dir={out}", "--set", f"run.device={device}", "--set", "export.format=hf"])
        dirs[len(dirs)] = os.path.join(out, "tiny")
    cpu, other = dirs[0], dirs[1]
    check_device_record(cpu, "cpu")
    record = check_device_record(other, DEVICE)
    env_text = subprocess.run([DSEE, "env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    if DEVICE == "cuda" and re.search(r"NCCL\s+compiled", env_text):
        if record.get("communicator") != "nccl":
            fail(f"the CUDA run used the {record.get('communicator')} communicator, expected nccl")
    for h5 in ("omega.h5", "masks.h5"):
        a, b = h5_datasets(os.path.join(cpu, h5)), h5_datasets(os.path.join(other, h5))
        differing = [k for k in a if k not in b or not np.array_equal(a[k], b[k])]
        if a.keys() != b.keys() or differing:
            fail(f"{h5} differs between cpu and {DEVICE}: {differing[:5]}")
        print(f"    {h5} identical ({len(a)} datasets)")
    compare_trainables(cpu, other, "cpu", DEVICE, 1e-4)
    d = relative_difference(load_file(os.path.join(cpu, "export", "model.safetensors")),
                            load_file(os.path.join(other, "export", "model.safetensors")), "export")
    print(f"    export/model.safetensors: max |cpu - {DEVICE}| / max |cpu| = {d:.2e}")
    if d > 1e-4:
        fail(f"export: {DEVICE} differs from cpu by {d:.2e} of the largest value (bound 1e-4)")
    for name in ("pretrained", "train", "prune", "retune", "eval"):
        if name == "pretrained":
            a = json.load(open(os.path.join(cpu, "summary.json")))["stages"]["pretrained"]["dev"]
            b = json.load(open(os.path.join(other, "summary.json")))["stages"]["pretrained"]["dev"]
        else:
            a, b = stage(cpu, name)["dev"], stage(other, name)["dev"]
        if abs(a["accuracy"] - b["accuracy"]) > 1.0 / 48 + 1e-12:
            fail(f"{name}: dev accuracy {b['accuracy']} on {DEVICE}, {a['accuracy']} on cpu")
        if name in ("train", "retune") and stage(cpu, name)["steps"] != stage(other, name)["steps"]:
            fail(f"{name}: step counts differ")
    print(f"    dev accuracy: cpu {stage(cpu, 'eval')['dev']['accuracy']}, {DEVICE} {stage(other, 'eval')['dev']['accuracy']}")
    la = [json.loads(l) for l in open(os.path.join(cpu, "metrics.jsonl"))]
    lb = [json.loads(l) for l in open(os.path.join(other, "metrics.jsonl"))]
    if [x["kind"] for x in la] != [y["kind"] for y in lb]:
        fail("metrics.jsonl records differ in kind or number")
    worst = max(abs(x["loss"] - y["loss"]) / max(1.0, abs(x["loss"])) for x, y in zip(la, lb) if x["kind"] == "train")
    print(f"    metrics.jsonl: {len(la)} records, largest loss difference {worst:.2e}")
    if worst > 1e-4:
        fail(f"logged losses differ by {worst:.2e} (bound 1e-4)")


def resume(tmp, recipe):
    common = [recipe, "--set", f"run.device={DEVICE}", "--set", "ckpt.every=2"]
    straight = os.path.join(tmp, "straight")
    run_ok(f"straight run on {DEVICE}", common + ["--set", f"run.out_dir={straight}"])
    out = os.path.join(tmp, "out")
    rc, text, seconds = run(common + ["--set", f"run.out_dir={out}"], env={"DSEE_TEST_STOP_AFTER_STEP": "3"})
    print(f"--- SIGTERM at step 3: exit {rc} after {seconds:.1f} s")
    if rc != 143 or "stopped by SIGTERM at step 3" not in text:
        print(text)
        fail(f"expected exit 143 and 'stopped by SIGTERM at step 3', got exit {rc}")
    run_dir = os.path.join(out, "tiny")
    checkpoint = os.path.join(run_dir, "ckpt", "step-3.h5")
    if not os.path.exists(checkpoint):
        fail("no ckpt/step-3.h5 after the stop")
    with h5py.File(checkpoint, "r") as f:
        has_cuda_rng = "rng/cuda/0" in f
    if DEVICE == "cuda" and not has_cuda_rng:
        fail(f"{checkpoint} holds no /rng/cuda/0")
    print(f"    ckpt/step-3.h5 written; /rng/cuda/0 {'present' if has_cuda_rng else 'absent (no CUDA)'}")
    text = run_ok("resumed", common + ["--set", f"run.out_dir={out}"])
    if "resuming train from ckpt/step-3.h5" not in text:
        print(text)
        fail("the run did not resume from ckpt/step-3.h5")
    base = os.path.join(straight, "tiny")
    compare_trainables(base, run_dir, "straight", "resumed", 1e-5)
    for name in ("train", "retune"):
        a, b = stage(base, name), stage(run_dir, name)
        if a["steps"] != b["steps"] or abs(a["dev"]["accuracy"] - b["dev"]["accuracy"]) > 1.0 / 48 + 1e-12:
            fail(f"{name}: steps {b['steps']} / dev {b['dev']} after resume, {a['steps']} / {a['dev']} straight")
    print("    steps and dev accuracy agree with the straight run")


if DEVICE == "cuda":
    import torch

    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device on this machine")
        sys.exit(77)
tmp = tempfile.mkdtemp(prefix="dsee-run-cuda-")
try:
    recipe = os.path.join(tmp, "tiny.toml")
    with open(recipe, "w") as f:
        f.write(RECIPE)
    {"matches_cpu": matches_cpu, "resume": resume}[SCENARIO](tmp, recipe)
    print("ok")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
