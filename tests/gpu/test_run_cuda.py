"""`dsee run` on CUDA: the whole pipeline on the GPU, with the NCCL
communicator on one rank, against the same recipe on the CPU with the MPI
communicator (docs/distributed.md, 'Training on a GPU').

Each scenario is a test parametrised by DEVICE, cuda or cpu:
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
Without a usable GPU the cuda tests are skipped. With DEVICE = cpu they run
the same comparisons CPU against CPU: a check of this module itself on a
machine without a GPU (every difference is then 0).
"""
import json
import os
import re
import subprocess

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from harness import check, check_close, check_equal
from harness.runs import h5_datasets, run_command, tiny_recipe, write_recipe

RECIPE = tiny_recipe(prune='kind = "unstructured"', dist="timeout_s = 60.0")


@pytest.fixture(params=["cuda", "cpu"])
def device(request):
    """The device the run under test trains on; cuda is skipped without a usable GPU."""
    if request.param == "cuda":
        import torch
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device on this machine")
    return request.param


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(str(tmp_path), RECIPE)


def run(dsee, arguments, env=None, timeout=300):
    return run_command([dsee, "run"] + arguments, timeout, dict(os.environ, **(env or {})))


def run_ok(dsee, label, arguments, env=None):
    rc, text, seconds = run(dsee, arguments, env)
    print(f"--- {label}: exit {rc} after {seconds:.1f} s")
    check(f"{label}: dsee run exits 0", rc == 0, text if rc else "")
    return text


def stage(run_dir, name):
    return json.load(open(os.path.join(run_dir, "stages", f"{name}.json")))


def check_tensors(label, base, other, bound, base_label, other_label):
    """Two safetensors files: the same names, dtypes and shapes; max |base − other| / max |base| ≤ bound."""
    a, b = load_file(base), load_file(other)
    check_equal(f"{label}: tensor names", sorted(b), sorted(a))
    for k in a:
        check(f"{label}: {k} dtype and shape", a[k].shape == b[k].shape and a[k].dtype == b[k].dtype,
              f"{b[k].dtype} {b[k].shape}, expected {a[k].dtype} {a[k].shape}")
    names = [k for k in sorted(a) if a[k].size]
    check_close(f"{label}: max |{base_label} - {other_label}| / max |{base_label}|",
                np.concatenate([b[k].astype(np.float64).reshape(-1) for k in names]),
                np.concatenate([a[k].astype(np.float64).reshape(-1) for k in names]), rel=bound, reference=base_label)


def compare_trainables(base, other, base_label, other_label, bound):
    """The trained and re-tuned tensors of two run directories, relative to the base's largest value."""
    for name in ("trainable-train", "trainable-retune"):
        check_tensors(f"{name}.safetensors", os.path.join(base, f"{name}.safetensors"),
                      os.path.join(other, f"{name}.safetensors"), bound, base_label, other_label)


def check_device_record(run_dir, device):
    record = stage(run_dir, "train")
    check_equal(f"{device}: stages/train.json's device", record.get("device"), "cuda:0" if device == "cuda" else "cpu")
    print(f"    {device}: trained on {record['device']}, communicator {record.get('communicator')}, "
          f"{record['seconds'] / max(record['steps'], 1) * 1e3:.2f} ms per step over {record['steps']} steps "
          f"(stage wall time, evaluation included)")
    return record


def test_matches_cpu(device, dsee, recipe, tmp_path):
    dirs = {}
    for on in ("cpu", device):
        out = os.path.join(tmp_path, f"out-{on}-{len(dirs)}")
        run_ok(dsee, f"run.device = {on}",
               [recipe, "--set", f"run.out_dir={out}", "--set", f"run.device={on}", "--set", "export.format=hf"])
        dirs[len(dirs)] = os.path.join(out, "tiny")
    cpu, other = dirs[0], dirs[1]
    check_device_record(cpu, "cpu")
    record = check_device_record(other, device)
    env_text = subprocess.run([dsee, "env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    if device == "cuda" and re.search(r"NCCL\s+compiled", env_text):
        check_equal("the CUDA run's communicator", record.get("communicator"), "nccl")
    for h5 in ("omega.h5", "masks.h5"):
        a, b = h5_datasets(os.path.join(cpu, h5)), h5_datasets(os.path.join(other, h5))
        differing = [k for k in a if k not in b or not np.array_equal(a[k], b[k])]
        check(f"{h5} identical on cpu and {device} ({len(a)} datasets)", a.keys() == b.keys() and not differing,
              f"{differing[:5]}")
    compare_trainables(cpu, other, "cpu", device, 1e-4)
    check_tensors("export/model.safetensors", os.path.join(cpu, "export", "model.safetensors"),
                  os.path.join(other, "export", "model.safetensors"), 1e-4, "cpu", device)
    for name in ("pretrained", "train", "prune", "retune", "eval"):
        if name == "pretrained":
            a = json.load(open(os.path.join(cpu, "summary.json")))["stages"]["pretrained"]["dev"]
            b = json.load(open(os.path.join(other, "summary.json")))["stages"]["pretrained"]["dev"]
        else:
            a, b = stage(cpu, name)["dev"], stage(other, name)["dev"]
        check_close(f"{name}: dev accuracy on {device} within one example of cpu's", b["accuracy"], a["accuracy"],
                    abs=1.0 / 48 + 1e-12, reference="cpu")
        if name in ("train", "retune"):
            check_equal(f"{name}: step count on {device}, as on cpu", stage(other, name)["steps"],
                        stage(cpu, name)["steps"])
    la = [json.loads(line) for line in open(os.path.join(cpu, "metrics.jsonl"))]
    lb = [json.loads(line) for line in open(os.path.join(other, "metrics.jsonl"))]
    check("metrics.jsonl records agree in kind and number", [x["kind"] for x in la] == [y["kind"] for y in lb])
    train = [(x["loss"], y["loss"]) for x, y in zip(la, lb) if x["kind"] == "train"]
    check_close(f"metrics.jsonl: {len(la)} records, the logged losses", [y for _, y in train], [x for x, _ in train],
                rel_each=1e-4, floor=1.0, reference="cpu")


def test_resume(device, dsee, recipe, tmp_path):
    common = [recipe, "--set", f"run.device={device}", "--set", "ckpt.every=2"]
    straight = os.path.join(tmp_path, "straight")
    run_ok(dsee, f"straight run on {device}", common + ["--set", f"run.out_dir={straight}"])
    out = os.path.join(tmp_path, "out")
    rc, text, seconds = run(dsee, common + ["--set", f"run.out_dir={out}"], env={"DSEE_TEST_STOP_AFTER_STEP": "3"})
    print(f"--- SIGTERM at step 3: exit {rc} after {seconds:.1f} s")
    check("exit 143 and 'stopped by SIGTERM at step 3'", rc == 143 and "stopped by SIGTERM at step 3" in text,
          f"exit {rc}" + ("" if rc == 143 else f"\n{text}"))
    run_dir = os.path.join(out, "tiny")
    checkpoint = os.path.join(run_dir, "ckpt", "step-3.h5")
    check("ckpt/step-3.h5 written by the stop", os.path.exists(checkpoint))
    with h5py.File(checkpoint, "r") as f:
        has_cuda_rng = "rng/cuda/0" in f
    if device == "cuda":
        check(f"{checkpoint} holds /rng/cuda/0", has_cuda_rng)
    print(f"    ckpt/step-3.h5 written; /rng/cuda/0 {'present' if has_cuda_rng else 'absent (no CUDA)'}")
    text = run_ok(dsee, "resumed", common + ["--set", f"run.out_dir={out}"])
    check("the run resumed from ckpt/step-3.h5", "resuming train from ckpt/step-3.h5" in text, text)
    base = os.path.join(straight, "tiny")
    compare_trainables(base, run_dir, "straight", "resumed", 1e-5)
    for name in ("train", "retune"):
        a, b = stage(base, name), stage(run_dir, name)
        check_equal(f"{name}: steps after resume, as straight", b["steps"], a["steps"])
        check_close(f"{name}: dev accuracy after resume within one example of straight", b["dev"]["accuracy"],
                    a["dev"]["accuracy"], abs=1.0 / 48 + 1e-12, reference="straight")
