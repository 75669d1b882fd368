"""`dsee run` under mpirun when rank 0's disk fails it.

Usage: test_full_disk_ranks.py SCENARIO MPIEXEC DSEE
  checkpoint  2 ranks, the run directory on a small tmpfs: a run stopped at
              step 3 (SIGTERM through DSEE_TEST_STOP_AFTER_STEP) is resumed
              with too little space left for the step-4 checkpoint; rank 0's
              write fails and every rank stops, exit 1, with rank 0's message
              (the file and "No space left on device"), within seconds, no
              temporary left and the step-3 checkpoint untouched. With the
              space freed the same job resumes and finishes. Needs root
              (mount); exits 77 (skipped) otherwise.
  metrics     2 ranks, metrics.jsonl (which only rank 0 writes, inside the
              training loop, not at a collective) refuses a line (the test
              hook DSEE_TEST_FAIL_WRITE=metrics.jsonl): the job ends non-zero
              within seconds with rank 0's message; no rank hangs.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tiny_run import fail, tiny_recipe  # noqa: E402

SCENARIO, MPIEXEC, DSEE = sys.argv[1:4]
FULL = "No space left on device"
RECIPE = tiny_recipe(prune='kind = "heads"\nheads_per_layer = 1', dist="timeout_s = 30.0")


def job(out, recipe, env_name=None, env_value=None, timeout=120):
    """2 ranks of `dsee run`; (exit code, output, seconds)."""
    command = [MPIEXEC, "-n", "2", "--oversubscribe", "--bind-to", "none"]
    env = dict(os.environ)
    if env_name:
        command += ["-x", env_name]
        env[env_name] = env_value
    command += [DSEE, "run", recipe, "--set", f"run.out_dir={out}", "--set", "ckpt.every=2"]
    start = time.monotonic()
    p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)
    seconds = time.monotonic() - start
    print(p.stdout)
    print(f"--- exit {p.returncode} after {seconds:.1f} s")
    return p.returncode, p.stdout, seconds


def temporaries(root):
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if ".tmp-" in n]


def checkpoint(tmp, recipe):
    disk = os.path.join(tmp, "disk")
    os.makedirs(disk)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", disk], stderr=subprocess.PIPE,
                             text=True)
    if mounted.returncode != 0:
        print(f"skipped: cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
        sys.exit(77)
    try:
        rc, _, _ = job(disk, recipe, "DSEE_TEST_STOP_AFTER_STEP", "3")
        if rc == 0:
            fail("the stopped job exited 0")
        ckpt = os.path.join(disk, "tiny", "ckpt")
        before = {name: open(os.path.join(ckpt, name), "rb").read() for name in os.listdir(ckpt)}
        if "step-3.h5" not in before:
            fail(f"no step-3 checkpoint: {sorted(before)}")
        # Leave half a checkpoint free: room for metrics lines, not for step 4's checkpoint.
        stat = os.statvfs(disk)
        free = stat.f_bavail * stat.f_frsize
        with open(os.path.join(disk, "filler"), "wb") as f:
            f.write(b"f" * (free - len(before["step-3.h5"]) // 2 // 4096 * 4096))
        rc, text, seconds = job(disk, recipe)
        if rc != 1:
            fail(f"exit {rc}, not 1")
        if seconds > 60:
            fail(f"took {seconds:.1f} s to stop")
        step4 = os.path.join(ckpt, "step-4.h5")
        root = [l for l in text.splitlines() if l.startswith("dsee: error: ") and "rank 0 failed" not in l]
        other = [l for l in text.splitlines() if l.startswith("dsee: error: rank 0 failed: ")]
        for lines, who in ((root, "rank 0"), (other, "rank 1")):
            if not any(step4 in l and FULL in l for l in lines):
                fail(f"{who} did not print rank 0's message naming {step4} and '{FULL}'")
        if any(s in text for s in ("HDF5-DIAG", "HDF5:", "FL,FL")):
            fail("HDF5 printed its own errors")
        if temporaries(disk):
            fail(f"temporaries left: {temporaries(disk)}")
        after = {name: open(os.path.join(ckpt, name), "rb").read() for name in os.listdir(ckpt)}
        if after != before:
            fail("the checkpoint folder changed")
        os.remove(os.path.join(disk, "filler"))
        rc, text, _ = job(disk, recipe)
        if rc != 0 or "resuming train from ckpt/step-3.h5" not in text:
            fail(f"the job with space again did not resume from step 3 and finish (exit {rc})")
    finally:
        subprocess.run(["umount", disk])


def metrics(tmp, recipe):
    out = os.path.join(tmp, "out")
    rc, text, seconds = job(out, recipe, "DSEE_TEST_FAIL_WRITE", "metrics.jsonl", timeout=90)
    if rc == 0:
        fail("the job exited 0")
    if seconds > 60:
        fail(f"took {seconds:.1f} s to stop")
    expected = f"dsee: error: cannot append to '{os.path.join(out, 'tiny', 'metrics.jsonl')}': {FULL}"
    if expected not in text:
        fail(f"rank 0 did not print: {expected}")


tmp = tempfile.mkdtemp(prefix="dsee-full-disk-ranks-")
try:
    recipe = os.path.join(tmp, "tiny.toml")
    with open(recipe, "w") as f:
        f.write(RECIPE)
    {"checkpoint": checkpoint, "metrics": metrics}[SCENARIO](tmp, recipe)
    print("ok")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
