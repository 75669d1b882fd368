"""`dsee run` under mpirun when rank 0's disk fails it.

  test_checkpoint  2 ranks, the run directory on a small tmpfs: a run stopped
                   at step 3 (SIGTERM through DSEE_TEST_STOP_AFTER_STEP) is
                   resumed with too little space left for the step-4
                   checkpoint; rank 0's write fails and every rank stops,
                   exit 1, with rank 0's message (the file and "No space left
                   on device"), within seconds, no temporary left and the
                   step-3 checkpoint untouched. With the space freed the same
                   job resumes and finishes. Needs root (mount); skipped
                   otherwise, with the reason.
  test_metrics     2 ranks, metrics.jsonl (which only rank 0 writes, inside
                   the training loop, not at a collective) refuses a line (the
                   test hook DSEE_TEST_FAIL_WRITE=metrics.jsonl): the job ends
                   non-zero within seconds with rank 0's message; no rank
                   hangs.
"""
import os
import subprocess
import time

import pytest

from harness import check
from harness.runs import tiny_recipe, write_recipe

FULL = "No space left on device"
RECIPE = tiny_recipe(prune='kind = "heads"\nheads_per_layer = 1', dist="timeout_s = 30.0")


def job(mpiexec, dsee, out, recipe, env_name=None, env_value=None, timeout=120):
    """2 ranks of `dsee run`; (exit code, output, seconds)."""
    command = [mpiexec, "-n", "2", "--oversubscribe", "--bind-to", "none"]
    env = dict(os.environ)
    if env_name:
        command += ["-x", env_name]
        env[env_name] = env_value
    command += [dsee, "run", recipe, "--set", f"run.out_dir={out}", "--set", "ckpt.every=2"]
    start = time.monotonic()
    p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)
    seconds = time.monotonic() - start
    print(p.stdout)
    print(f"--- exit {p.returncode} after {seconds:.1f} s")
    return p.returncode, p.stdout, seconds


def temporaries(root):
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if ".tmp-" in n]


@pytest.fixture
def tmpfs(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], stderr=subprocess.PIPE,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    yield str(disk)
    subprocess.run(["umount", str(disk)])


def test_checkpoint(tmpfs, mpiexec, dsee, tmp_path):
    recipe = write_recipe(str(tmp_path), RECIPE)
    rc, _, _ = job(mpiexec, dsee, tmpfs, recipe, "DSEE_TEST_STOP_AFTER_STEP", "3")
    check("the job stopped by SIGTERM at step 3 exits non-zero", rc != 0, f"exit {rc}")
    ckpt = os.path.join(tmpfs, "tiny", "ckpt")
    before = {name: open(os.path.join(ckpt, name), "rb").read() for name in os.listdir(ckpt)}
    check("the stopped job wrote ckpt/step-3.h5", "step-3.h5" in before, f"{sorted(before)}")
    # Leave half a checkpoint free: room for metrics lines, not for step 4's checkpoint.
    stat = os.statvfs(tmpfs)
    free = stat.f_bavail * stat.f_frsize
    with open(os.path.join(tmpfs, "filler"), "wb") as f:
        f.write(b"f" * (free - len(before["step-3.h5"]) // 2 // 4096 * 4096))
    rc, text, seconds = job(mpiexec, dsee, tmpfs, recipe)
    check("a full disk at the step-4 checkpoint exits 1", rc == 1, f"exit {rc}")
    check("every rank stops within 60 s", seconds <= 60, f"{seconds:.1f} s")
    step4 = os.path.join(ckpt, "step-4.h5")
    root = [line for line in text.splitlines() if line.startswith("dsee: error: ") and "rank 0 failed" not in line]
    other = [line for line in text.splitlines() if line.startswith("dsee: error: rank 0 failed: ")]
    for lines, who in ((root, "rank 0"), (other, "rank 1")):
        check(f"{who} prints rank 0's message naming {step4} and '{FULL}'",
              any(step4 in line and FULL in line for line in lines), "\n".join(lines))
    check("HDF5 printed no errors of its own", not any(s in text for s in ("HDF5-DIAG", "HDF5:", "FL,FL")))
    check("no temporary files are left", not temporaries(tmpfs), f"{temporaries(tmpfs)}")
    after = {name: open(os.path.join(ckpt, name), "rb").read() for name in os.listdir(ckpt)}
    check("the checkpoint folder is byte-identical", after == before, f"{sorted(after)} vs {sorted(before)}")
    os.remove(os.path.join(tmpfs, "filler"))
    rc, text, _ = job(mpiexec, dsee, tmpfs, recipe)
    check("with space again the job resumes from step 3 and finishes",
          rc == 0 and "resuming train from ckpt/step-3.h5" in text, f"exit {rc}")


def test_metrics(mpiexec, dsee, tmp_path):
    recipe = write_recipe(str(tmp_path), RECIPE)
    out = str(tmp_path / "out")
    rc, text, seconds = job(mpiexec, dsee, out, recipe, "DSEE_TEST_FAIL_WRITE", "metrics.jsonl", timeout=90)
    check("a refused metrics.jsonl line ends the job non-zero", rc != 0, f"exit {rc}")
    check("every rank stops within 60 s", seconds <= 60, f"{seconds:.1f} s")
    expected = f"cannot append to '{os.path.join(out, 'tiny', 'metrics.jsonl')}': {FULL}"
    errors = [line for line in text.splitlines() if line.startswith("dsee: error: ")]
    check("rank 0's message reaches the output", any(expected in line for line in errors), "\n".join(errors))
