"""`dsee run` under mpirun: data parallelism over the trainable parameters.

One test per scenario, test_<scenario> (ctest runs each as mpi_run_<scenario>):
  same_result  a tiny DSEE recipe (grad_accumulation 2, clipping on, pieces
               of unequal size, head pruning + re-tuning) run as 1 process and
               under mpirun -n 2 and -n 3: the trained and re-tuned trainable
               tensors agree within 1e-6 (re-tuned: 1e-5), omega.h5 and masks.h5 hold the same
               datasets, and the dev metrics of every stage are identical;
               only rank 0 writes files (the run directory is the same set).
  config_mismatch  MPMD, one rank with another train.lr: the job fails
               (non-zero exit, within seconds) with a message naming the
               ranks and the key, before anything is written.
  killed_rank  a rank killed with SIGKILL mid-training: every process ends
               non-zero within dist.timeout_s + 5 s.
  omega_split  omega.split_across_ranks = true on 3 ranks (4 matrices: shares
               of 2, 1 and 1) and on 5 (one rank computes none): omega.h5
               holds exactly the datasets of a 1-process run.
  slow_root    rank 0's own work made slow (the test hook DSEE_TEST_SLOW_ROOT
               sleeps 6 s before "preparing the task data") with
               dist.timeout_s = 2: the other rank waits under
               dist.root_timeout_s and the run succeeds; with
               dist.root_timeout_s = 2 too, rank 1's watchdog ends the job
               with exit 3 and a message naming the wait, within the bound.
  mpirun_sigterm  SIGTERM sent to launch/mpirun (mpirun itself, as Ctrl-C or
               a scheduler does) mid-training: the ranks get it after
               DSEE_MPIRUN_SIGKILL_TIMEOUT (3 s here), stop at a step
               boundary, write the checkpoint and print the "stopped by
               SIGTERM" line; the run resumed on 1 rank ends where a straight
               run ends.
  sigterm_resume  a 2-rank run stopped by SIGTERM (the test hook
               DSEE_TEST_STOP_AFTER_STEP raises it on every rank at step 3)
               exits non-zero after writing ckpt/step-3.h5; the same recipe
               resumed on 3 ranks (rank 0 reads the checkpoint, broadcasts
               it) and stopped at step 5, then resumed on 1 rank, continues
               the same global data order and ends where a straight 1-rank
               run ends (trainable tensors within
               1e-6 / re-tuned 1e-5, identical dev metrics and step counts,
               the same logged losses within 1e-5).
  eval_shards  a tiny STS-B task (float metrics: Pearson, Spearman) whose
               23 dev rows make 5 evaluation batches of eval.batch_size = 5
               (the last of 3), one step with train.lr = 0 (so the
               parameters are the same everywhere): on 2 and 3 ranks the
               predictions file equals 1 rank's bit for bit and the dev
               metrics of every evaluation are identical.
  model_mismatch  MPMD, each rank in its own working directory with
               model.path = "model" (so the resolved configs agree): rank 1's
               model with one weight changed stops the job with a message
               naming the pretrained weights and the ranks; rank 1's model
               with another intermediate size, naming the tensor shapes and
               the first differing tensor.
  versions_mismatch  rank 1's library versions text differs (the test
               hook DSEE_TEST_PERTURB_RANK=1:versions): the job stops with
               a message naming the library versions, the ranks and the line.
  baseline_methods  tuning.method = adapter (Houlsby, with the LayerNorms),
               bitfit and top_k on the tiny recipe without pruning, as 1
               process and under mpirun -n 2: the all-reduced payload the
               gradient-sync line reports is exactly the method's trainable
               tensors (the values of trainable-train.safetensors), the
               trained tensors agree within 1e-6 (not the attention key
               biases: their gradient is zero in exact arithmetic, so AdamW
               steps on rounding noise; the function does not depend on
               them), the dev metrics and step
               counts are identical and the logged losses agree.
  perturbed_rank  rank 1 changes a trainable tensor after step 3 (the test
               hook DSEE_TEST_PERTURB_RANK=1:3) with dist.fingerprint_every =
               2: the job stops at the check after step 4 with a message
               naming the step, the ranks and that tensor.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from harness import check, check_close, check_equal
from harness.runs import (check_logged_losses, check_trainables, compare_runs, files_under, h5_datasets,
                          run_command as run, tiny_recipe, tiny_stsb, write_recipe)

RECIPE = tiny_recipe(prune='kind = "heads"\nheads_per_layer = 1', dist="timeout_s = 30.0\nfingerprint_every = 3")


class Ranks:
    """The binaries of a scenario: dsee, and mpiexec with this suite's flags."""

    def __init__(self, dsee, mpiexec):
        self.dsee, self.mpiexec = dsee, mpiexec

    def mpirun(self, n):
        return [self.mpiexec, "-n", str(n), "--oversubscribe", "--bind-to", "none"]


@pytest.fixture
def ranks(dsee, mpiexec):
    return Ranks(dsee, mpiexec)


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def recipe(tmp):
    """The tiny DSEE recipe (head pruning, re-tuning, fingerprints every 3 steps) in the test's folder."""
    return write_recipe(tmp, RECIPE)


def one_process(dsee, folder, recipe_text, extra=(), env=None):
    """`dsee run` of `recipe_text` as one process in `folder`: the run
    directory the multi-rank runs of a scenario are compared with."""
    recipe = write_recipe(folder, recipe_text)
    out = os.path.join(folder, "out1")
    rc, text, seconds = run([dsee, "run", recipe, "--set", f"run.out_dir={out}", *extra], 120, env)
    print(f"--- 1 process: exit {rc} after {seconds:.1f} s")
    check("1 process: dsee run exits 0", rc == 0, text if rc else "")
    return out


@pytest.fixture(scope="module")
def same_result_base(dsee, tmp_path_factory):
    return os.path.join(one_process(dsee, str(tmp_path_factory.mktemp("same-result")), RECIPE), "tiny")


@pytest.mark.parametrize("n", [2, 3])
def test_same_result(n, same_result_base, ranks, tmp, recipe):
    out = os.path.join(tmp, f"out{n}")
    rc, text, seconds = run(ranks.mpirun(n) + [ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}"], 120)
    print(f"--- {n} ranks: exit {rc} after {seconds:.1f} s")
    check(f"{n} ranks: dsee run exits 0", rc == 0, text if rc else "")
    m = re.search(r"gradient sync: \d+ trainable tensors, (\d+) values, (\d+) bytes all-reduced", text)
    check(f"{n} ranks: the gradient-sync line", m, m.group(0) if m else text)
    # Info lines come from rank 0 only: one per training stage (train and retune).
    check(f"{n} ranks: 2 gradient-sync lines (rank 0, two stages)", text.count("gradient sync:") == 2,
          f"{text.count('gradient sync:')}")
    base, other = same_result_base, os.path.join(out, "tiny")
    base_files, files = files_under(base), files_under(other)
    check(f"{n} ranks: the run directory holds the same files (only rank 0 writes)", files == base_files,
          f"{sorted(files ^ base_files)}")
    check_trainables(f"{n} ranks", base, other)
    for h5 in ("omega.h5", "masks.h5"):
        a, b = h5_datasets(os.path.join(base, h5)), h5_datasets(os.path.join(other, h5))
        check(f"{n} ranks: {h5} identical ({len(a)} datasets)",
              a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a))
    for stage in ("train", "prune", "retune", "eval"):
        a = json.load(open(os.path.join(base, "stages", f"{stage}.json")))
        b = json.load(open(os.path.join(other, "stages", f"{stage}.json")))
        check(f"{n} ranks: stages/{stage}.json dev metrics equal 1 rank's", a["dev"] == b["dev"],
              f"{b['dev']} vs {a['dev']}")
        if stage in ("train", "retune"):
            check(f"{n} ranks: {stage} took 1 rank's steps", a["steps"] == b["steps"], f"{b['steps']} vs {a['steps']}")
    check_logged_losses(f"{n} ranks", base, other)


def test_config_mismatch(ranks, tmp, recipe):
    out = os.path.join(tmp, "out")
    common = ["run", recipe, "--set", f"run.out_dir={out}"]
    command = (ranks.mpirun(1) + [ranks.dsee] + common + [":", "-n", "1", "--bind-to", "none", ranks.dsee] + common +
               ["--set", "train.lr=0.02"])
    rc, text, seconds = run(command, 60)
    print(text)
    print(f"--- exit {rc} after {seconds:.1f} s")
    if rc == 0:
        pytest.fail("the job exited 0")
    if seconds > 30:
        pytest.fail(f"took {seconds:.1f} s to fail")
    lines = [l for l in text.splitlines() if "dsee: error: ranks disagree on the resolved config" in l]
    # Both ranks raise it; mpirun may end the second before it prints.
    if not lines:
        pytest.fail("no rank printed the mismatch")
    for l in lines:
        if not re.search(r"rank 0 \w+, but rank 1 \w+", l) or 'rank 0 has "train.lr = 0.01"' not in l or \
                'rank 1 has "train.lr = 0.02"' not in l:
            pytest.fail(f"the message does not name the ranks and the key: {l}")
    if os.path.exists(os.path.join(out, "tiny", "config.toml")):
        pytest.fail("the run directory was claimed before the ranks agreed")


def test_killed_rank(ranks, tmp, recipe):
    out = os.path.join(tmp, "out")
    # From the kill: mpirun usually ends the job at once (measured 2.3 s on the loaded
    # 2-core VM); the watchdog's path is the timeout + a poll (0.25 s) + MPI_Abort's
    # teardown (under 1 s); 5 s of slack covers both with headroom.
    timeout_s, margin_s = 10, 5
    command = ranks.mpirun(2) + [ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}", "--set", "train.max_steps=100000",
                           "--set", "prune.kind=none", "--set", f"dist.timeout_s={timeout_s}"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(out, "tiny", "metrics.jsonl")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and job.poll() is None:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3:
            break
        time.sleep(0.2)
    else:
        job.kill()
        print(job.communicate()[0])
        pytest.fail("training did not start")
    # Rank 1 of this job: a dsee process whose command line names our run directory.
    victim = None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"dsee" and f"run.out_dir={out}".encode() in argv and \
                b"OMPI_COMM_WORLD_RANK=1" in env:
            victim = int(pid)
    if victim is None:
        job.kill()
        pytest.fail("rank 1 not found")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    try:
        text = job.communicate(timeout=timeout_s + margin_s + 30)[0]
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job hung after rank 1 was killed")
    seconds = time.monotonic() - killed_at
    print(text[-3000:])
    print(f"--- rank 1 (pid {victim}) killed; the job exited {job.returncode} after {seconds:.1f} s "
          f"(dist.timeout_s {timeout_s}, bound {timeout_s + margin_s})")
    if job.returncode == 0:
        pytest.fail("the job exited 0")
    if seconds > timeout_s + margin_s:
        pytest.fail(f"took {seconds:.1f} s, more than {timeout_s + margin_s} s")
    # No dsee process of this job is left.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"dsee" and f"run.out_dir={out}".encode() in argv:
            pytest.fail(f"process {pid} of the job is still running")


@pytest.fixture(scope="module")
def omega_split_base(dsee, tmp_path_factory):
    return os.path.join(one_process(dsee, str(tmp_path_factory.mktemp("omega-split")), RECIPE,
                                    ["--set", "train.max_steps=1", "--set", "prune.kind=none"]), "tiny", "omega.h5")


@pytest.mark.parametrize("n", [3, 5])
def test_omega_split(n, omega_split_base, ranks, tmp, recipe):
    expected = h5_datasets(omega_split_base)
    out = os.path.join(tmp, f"split{n}")
    rc, text, seconds = run(ranks.mpirun(n) + [ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}", "--set",
                                               "train.max_steps=1", "--set", "prune.kind=none", "--set",
                                               "omega.split_across_ranks=true"], 120)
    print(f"--- {n} ranks, Ω split across ranks: exit {rc} after {seconds:.1f} s")
    check(f"{n} ranks: dsee run exits 0", rc == 0, text if rc else "")
    line = re.search(r"Ω: (\d+) matrices split across (\d+) ranks \((\d+) on rank 0\)", text)
    check(f"{n} ranks: the 'Ω: ... matrices split across {n} ranks' line", line and int(line.group(2)) == n,
          line.group(0) if line else text)
    got = h5_datasets(os.path.join(out, "tiny", "omega.h5"))
    check(f"{n} ranks: omega.h5 holds the 1-process Ω ({len(expected)} datasets)",
          got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected))
    with h5py.File(os.path.join(out, "tiny", "omega.h5"), "r") as f, h5py.File(omega_split_base, "r") as g:
        differing = [name for name in expected if dict(f[name].attrs).keys() != dict(g[name].attrs).keys() or
                     any(not np.array_equal(f[name].attrs[a], g[name].attrs[a]) for a in g[name].attrs)]
    check(f"{n} ranks: omega.h5 attributes equal the 1-process ones", not differing, f"{differing}")


def stopped_run(ranks, n, steps, recipe, out, extra, label):
    """`dsee run` on n ranks whose test hook raises SIGTERM after `steps` steps; the finished process."""
    command = ranks.mpirun(n) + ["-x", "DSEE_TEST_STOP_AFTER_STEP", ranks.dsee, "run", recipe, "--set",
                           f"run.out_dir={out}"] + extra
    start = time.monotonic()
    p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                       env=dict(os.environ, DSEE_TEST_STOP_AFTER_STEP=str(steps)))
    print(f"--- {label}: exit {p.returncode} after {time.monotonic() - start:.1f} s")
    return p


def straight_run(ranks, tmp, recipe, extra):
    """The uninterrupted 1-rank run the resumed ones are compared with; its run directory."""
    out = os.path.join(tmp, "straight")
    rc, text, _ = run([ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}"] + extra, 120)
    if rc != 0:
        print(text)
        pytest.fail(f"straight 1-rank run: exit {rc}")
    return os.path.join(out, "tiny")


def test_sigterm_resume(ranks, tmp, recipe):
    extra = ["--set", "ckpt.every=2"]
    straight = straight_run(ranks, tmp, recipe, extra)
    out = os.path.join(tmp, "out")
    p = stopped_run(ranks, 2, 3, recipe, out, extra, "2 ranks with SIGTERM at step 3")
    if p.returncode == 0:
        print(p.stdout)
        pytest.fail("the stopped 2-rank run exited 0")
    if "stopped by SIGTERM at step 3" not in p.stdout:
        print(p.stdout)
        pytest.fail("no 'stopped by SIGTERM at step 3' message")
    run_dir = os.path.join(out, "tiny")
    if not os.path.exists(os.path.join(run_dir, "ckpt", "step-3.h5")):
        pytest.fail(f"no ckpt/step-3.h5 after the stop: {sorted(files_under(run_dir))}")
    if os.path.exists(os.path.join(run_dir, "stages", "train.json")):
        pytest.fail("the stopped run recorded the train stage as finished")
    # Resumed on 3 ranks (rank 0 reads the checkpoint and broadcasts it), stopped again 2 steps later.
    p = stopped_run(ranks, 3, 2, recipe, out, extra, "resumed on 3 ranks, SIGTERM 2 steps later")
    if p.returncode == 0 or "resuming train from ckpt/step-3.h5" not in p.stdout or \
            "stopped by SIGTERM at step 5" not in p.stdout:
        print(p.stdout)
        pytest.fail("the 3-rank run did not resume from ckpt/step-3.h5 and stop at step 5")
    rc, text, seconds = run([ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}"] + extra, 120)
    print(f"--- resumed on 1 rank: exit {rc} after {seconds:.1f} s")
    if rc != 0:
        print(text)
        pytest.fail(f"resume on 1 rank: exit {rc}")
    if not re.search(r"resuming train from ckpt/step-5\.h5", text):
        print(text)
        pytest.fail("the 1-rank run did not resume from ckpt/step-5.h5")
    compare_runs(straight, run_dir, "2 ranks, then 3, then 1")


class TimedLines:
    """A job's output lines as they come, each with its arrival time."""

    def __init__(self, command, env=None):
        self.job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.job.stdout:
            self.lines.append((time.monotonic(), line))

    def wait(self, timeout):
        try:
            self.job.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.job.kill()
            self.reader.join(5)
            print(self.text())
            pytest.fail(f"the job did not end within {timeout} s")
        self.reader.join(5)
        return self.job.returncode, time.monotonic()

    def first(self, needle):
        """(time, line) of the first line containing needle, or None."""
        return next(((t, l) for t, l in self.lines if needle in l), None)

    def text(self):
        return "".join(l for _, l in self.lines)


def test_slow_root(ranks, tmp, recipe):
    # Rank 0 alone sleeps 6 s before preparing the data; dist.timeout_s is 2.
    sleep_s, timeout_s = 6, 2
    env = dict(os.environ, DSEE_TEST_SLOW_ROOT=f"preparing the task data={sleep_s}")
    base = ranks.mpirun(2) + ["-x", "DSEE_TEST_SLOW_ROOT", ranks.dsee, "run", recipe, "--set", "train.max_steps=2", "--set",
                        "prune.kind=none", "--set", f"dist.timeout_s={timeout_s}"]
    ok = TimedLines(base + ["--set", f"run.out_dir={tmp}/ok"], env)
    rc, _ = ok.wait(90)
    print(f"--- root_timeout_s default, rank 0 slow by {sleep_s} s, dist.timeout_s {timeout_s}: exit {rc}")
    if rc != 0 or not ok.first(f"rank 0 sleeps {sleep_s} s before preparing the task data"):
        print(ok.text())
        pytest.fail(f"the run with a slow rank 0 failed (exit {rc}) or the test hook did not run")
    # dist.root_timeout_s = 2 too: rank 1 gives up after 2 s of rank 0's 6.
    root_timeout_s = 2
    # The bound: the timeout, a watchdog poll (0.25 s), MPI_Abort's teardown of
    # the job (measured here 0.3-0.6 s; the watchdog's last resort _exit comes
    # 5 s after the abort), and slack for a loaded 2-core machine.
    bound_s = root_timeout_s + 4
    slow = TimedLines(base + ["--set", f"run.out_dir={tmp}/slow", "--set", f"dist.root_timeout_s={root_timeout_s}"],
                      env)
    rc, ended = slow.wait(60)
    text = slow.text()
    print(text[-3000:])
    started = slow.first("rank 0 sleeps")
    if started is None:
        pytest.fail("the test hook did not run")
    seconds = ended - started[0]
    print(f"--- dist.root_timeout_s {root_timeout_s}: exit {rc} {seconds:.1f} s after rank 0 began its slow work "
          f"(bound {bound_s} s)")
    if rc != 3:
        pytest.fail(f"exit {rc}, expected the watchdog's 3")
    expected = (r"watchdog: rank 1: waiting for rank 0: preparing the task data \(collective 'broadcast' before "
                rf"training\) has not finished after [0-9.]+ s \(dist.root_timeout_s = {root_timeout_s}\); .*raise "
                r"dist.root_timeout_s.*omega.split_across_ranks")
    if not re.search(expected, text):
        pytest.fail("no watchdog message naming the wait for rank 0 and what to do")
    if seconds > bound_s:
        pytest.fail(f"the job ended {seconds:.1f} s after rank 0 began, more than {bound_s} s")


def test_mpirun_sigterm(ranks, tmp, recipe):
    # 14 train steps (2 epochs of 7); ckpt.every = 4.
    extra = ["--set", "prune.kind=none", "--set", "ckpt.every=4"]
    stages = ("train", "eval")
    straight = straight_run(ranks, tmp, recipe, extra)
    out = os.path.join(tmp, "out")
    grace_s = 3
    launcher = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "launch", "mpirun")
    # Steps made 0.6 s longer (test hook), so that the signal, which reaches the ranks grace_s
    # after mpirun, lands mid-training whatever the machine's speed.
    env = dict(os.environ, DSEE_MPIRUN_SIGKILL_TIMEOUT=str(grace_s), DSEE_TEST_STEP_PAUSE_S="0.6")
    job = TimedLines([launcher, "-n", "2", "--oversubscribe", "--", ranks.dsee, "run", recipe, "--set",
                      f"run.out_dir={out}"] + extra, env)
    metrics = os.path.join(out, "tiny", "metrics.jsonl")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.job.poll() is None:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 2:
            break
        time.sleep(0.05)
    else:
        job.job.kill()
        print(job.text())
        pytest.fail("training did not start")
    signalled = time.monotonic()
    os.kill(job.job.pid, signal.SIGTERM)  # launch/mpirun exec'd mpirun: the same process
    rc, ended = job.wait(60)
    text = job.text()
    print(text[-3000:])
    print(f"--- launch/mpirun sent SIGTERM: exit {rc} after {ended - signalled:.1f} s "
          f"(DSEE_MPIRUN_SIGKILL_TIMEOUT {grace_s})")
    if f"--mca odls_base_sigkill_timeout {grace_s}" not in text:
        pytest.fail("launch/mpirun did not print the sigkill timeout it passes")
    stops = re.findall(r"dsee: stopped by SIGTERM at step (\d+) of (\d+); checkpoint (\S+);", text)
    if len(stops) != 2 or stops[0][0] != stops[1][0]:
        pytest.fail(f"expected both ranks to print 'stopped by SIGTERM' at the same step, got {stops}")
    step, total = int(stops[0][0]), int(stops[0][1])
    if not 2 <= step < total:
        pytest.fail(f"stopped at step {step} of {total}: not mid-training")
    if not os.path.exists(os.path.join(out, "tiny", "ckpt", f"step-{step}.h5")):
        pytest.fail(f"no ckpt/step-{step}.h5 after the stop")
    if re.search(r"signal 9|Killed", text):
        pytest.fail("a rank was killed instead of stopping")
    if rc == 0:
        pytest.fail("mpirun exited 0 after SIGTERM")
    rc, text, seconds = run([ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}"] + extra, 120)
    print(f"--- resumed on 1 rank: exit {rc} after {seconds:.1f} s")
    if rc != 0 or f"resuming train from ckpt/step-{step}.h5" not in text:
        print(text)
        pytest.fail(f"the 1-rank run did not resume from ckpt/step-{step}.h5 and finish")
    compare_runs(straight, os.path.join(out, "tiny"), "2 ranks stopped through mpirun, 1 rank",
                 stages)


def stsb_recipe(model, data):
    return (f'[run]\nname = "stsb"\nseed = 1\n[model]\npath = "{model}"\n'
            f'[task]\nname = "stsb"\ndata_dir = "{data}"\nmax_seq_length = 24\n'
            '[tuning]\nmethod = "lora"\nrank = 4\n[train]\nlr = 0.0\nmax_steps = 1\nbatch_size = 8\n'
            '[eval]\nbatch_size = 5\n[dist]\ntimeout_s = 30.0\n')


# One thread per process everywhere: a matmul's rounding may depend on how
# many threads split it, and under mpirun each rank gets one.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def eval_shards_base(dsee, tmp_path_factory):
    """The tiny STS-B task and its 1-rank run: (recipe text, run directory)."""
    folder = str(tmp_path_factory.mktemp("eval-shards"))
    text = stsb_recipe(*tiny_stsb(os.path.join(folder, "stsb"), n_train=16, n_dev=23))
    base = os.path.join(one_process(dsee, folder, text, env=ONE_THREAD), "stsb")
    logits = load_file(os.path.join(base, "predictions-dev.safetensors"))["dev.logits"]
    check(f"1 rank: dev logits of shape {logits.shape} with {len(np.unique(logits))} distinct values",
          logits.shape == (23, 1) and len(np.unique(logits)) >= 20)
    summary = json.load(open(os.path.join(base, "summary.json")))
    check_equal("1 rank: dev metrics", sorted(summary["dev"]), ["pearson", "spearman"])
    return text, base


@pytest.mark.parametrize("n", [2, 3])
def test_eval_shards(n, eval_shards_base, ranks, tmp):
    text, base = eval_shards_base
    recipe = write_recipe(tmp, text)
    out = os.path.join(tmp, f"out{n}")
    rc, output, seconds = run(ranks.mpirun(n) + ["-x", "OMP_NUM_THREADS", ranks.dsee, "run", recipe, "--set",
                                                 f"run.out_dir={out}"], 120, ONE_THREAD)
    print(f"--- {n} ranks: exit {rc} after {seconds:.1f} s")
    check(f"{n} ranks: dsee run exits 0", rc == 0, output if rc else "")
    expected = load_file(os.path.join(base, "predictions-dev.safetensors"))
    got = load_file(os.path.join(out, "stsb", "predictions-dev.safetensors"))
    check(f"{n} ranks: predictions-dev.safetensors equals 1 rank's bit for bit",
          got.keys() == expected.keys() and all(got[k].dtype == expected[k].dtype and
                                                 got[k].tobytes() == expected[k].tobytes() for k in expected),
          f"max |difference| {float(np.max(np.abs(got['dev.logits'] - expected['dev.logits']))):.3e}")
    summary = json.load(open(os.path.join(base, "summary.json")))
    other = json.load(open(os.path.join(out, "stsb", "summary.json")))
    for where in ("pretrained", "train", "eval"):
        check_equal(f"{n} ranks: {where} dev metrics, as 1 rank's", other["stages"][where]["dev"],
                    summary["stages"][where]["dev"])


def mpmd(ranks, recipe, out, *contexts):
    """mpirun with one rank per (working directory, extra --set arguments) context."""
    command = [ranks.mpiexec, "--oversubscribe", "--bind-to", "none"]
    for i, (wdir, sets) in enumerate(contexts):
        command += ([":"] if i else []) + ["-n", "1", "-wdir", wdir, os.path.abspath(ranks.dsee), "run", recipe, "--set",
                                           f"run.out_dir={out}"] + sets
    return command


def expect_startup_error(command, env, label, patterns):
    start = time.monotonic()
    p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90, env=env)
    seconds = time.monotonic() - start
    print(p.stdout[-4000:])
    print(f"--- {label}: exit {p.returncode} after {seconds:.1f} s")
    if p.returncode == 0:
        pytest.fail(f"{label}: the job exited 0")
    if seconds > 60:
        pytest.fail(f"{label}: took {seconds:.1f} s to fail")
    lines = [l for l in p.stdout.splitlines() if "dsee: error: ranks disagree on the " in l]
    if not lines:
        pytest.fail(f"{label}: no rank printed a mismatch")
    for l in lines:
        for pattern in patterns:
            if not re.search(pattern, l):
                pytest.fail(f"{label}: the message does not match {pattern!r}: {l}")
    return lines[0]


def test_model_mismatch(ranks, tmp, recipe):
    import torch
    from safetensors.numpy import save_file
    from safetensors import safe_open
    from transformers import AutoConfig, BertForSequenceClassification
    # The demo's generated model, from a 1-process run of the omega stage.
    first = os.path.join(tmp, "first")
    rc, text, _ = run([ranks.dsee, "run", recipe, "--set", f"run.out_dir={first}", "--set", 'run.stages=["omega"]'], 120)
    if rc != 0:
        print(text)
        pytest.fail(f"1 process: exit {rc}")
    pretrained = os.path.join(first, "tiny", "data", "pretrained")
    dirs = {name: os.path.join(tmp, name) for name in ("same", "weight", "shape")}
    for name, d in dirs.items():
        shutil.copytree(pretrained, os.path.join(d, "model"))
    # One weight off by 1e-3: the same shapes, another hash.
    path = os.path.join(dirs["weight"], "model", "model.safetensors")
    with safe_open(path, "np") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = sorted(k for k in tensors if k.endswith("query.weight"))[0]
    tensors[name] = tensors[name].copy()
    tensors[name][0, 0] += 1e-3
    save_file(tensors, path, metadata=metadata)
    # Another intermediate size: the same config keys, other shapes.
    config = AutoConfig.from_pretrained(pretrained)
    config.intermediate_size += 4
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(os.path.join(dirs["shape"], "model"),
                                                           safe_serialization=True)
    out = os.path.join(tmp, "out")
    sets = ["--set", "model.path=model"]
    expect_startup_error(mpmd(ranks, recipe, out, (dirs["same"], sets), (dirs["weight"], sets)), None, "one weight changed",
                         [r"ranks disagree on the pretrained weights \(model\): rank 0 0x[0-9a-f]{16}, "
                          r"but rank 1 0x[0-9a-f]{16}"])
    expect_startup_error(mpmd(ranks, recipe, out, (dirs["same"], sets), (dirs["shape"], sets)), None, "another intermediate size",
                         [r"ranks disagree on the model's tensor shapes: rank 0 0x[0-9a-f]{16}, "
                          r"but rank 1 0x[0-9a-f]{16}",
                          r'rank 0 has "[^"]*intermediate[^"]*", rank 1 has "[^"]*intermediate[^"]*"'])


def test_versions_mismatch(ranks, tmp, recipe):
    out = os.path.join(tmp, "out")
    command = ranks.mpirun(2) + ["-x", "DSEE_TEST_PERTURB_RANK", ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}"]
    expect_startup_error(command, dict(os.environ, DSEE_TEST_PERTURB_RANK="1:versions"), "rank 1's versions",
                         [r"ranks disagree on the library versions: rank 0 0x[0-9a-f]{16}, but rank 1 0x[0-9a-f]{16}",
                          r'rank 0 has "<end>", rank 1 has "perturbed by DSEE_TEST_PERTURB_RANK"'])


def test_perturbed_rank(ranks, tmp, recipe):
    out = os.path.join(tmp, "out")
    command = ranks.mpirun(2) + ["-x", "DSEE_TEST_PERTURB_RANK", ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}",
                           "--set", "prune.kind=none", "--set", "dist.fingerprint_every=2"]
    start = time.monotonic()
    p = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90,
                       env=dict(os.environ, DSEE_TEST_PERTURB_RANK="1:3"))
    print(p.stdout[-4000:])
    print(f"--- rank 1 perturbed after step 3: exit {p.returncode} after {time.monotonic() - start:.1f} s")
    if p.returncode == 0:
        pytest.fail("the job exited 0")
    hook = re.search(r"DSEE_TEST_PERTURB_RANK: rank 1 adds 1 to tensor '([^']+)' after step 3", p.stdout)
    if not hook:
        pytest.fail("rank 1 did not log the perturbation")
    lines = [l for l in p.stdout.splitlines() if "dsee: error: ranks disagree on the trainable parameters" in l]
    if not lines:
        pytest.fail("no rank printed the mismatch")
    for l in lines:
        expected = (f"ranks disagree on the trainable parameters after step 4: tensor '{hook.group(1)}' differs "
                    f"(rank 0 0x")
        if expected not in l or not re.search(r"but rank 1 0x[0-9a-f]{16}\)", l) or "collective order" in l:
            pytest.fail(f"the message does not name step 4, the ranks and tensor '{hook.group(1)}': {l}")
        if "drifted apart while training" not in l or "Resume from the last checkpoint" not in l:
            pytest.fail(f"the message does not say what drift during training means and what to do: {l}")


BASELINES = {"adapter": 'method = "adapter"\nadapter_size = 8', "bitfit": 'method = "bitfit"',
             "prefix": 'method = "prefix"\nprefix_length = 4', "top_k": 'method = "top_k"\ntop_layers = 1'}


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_baseline_methods(method, dsee, ranks, tmp):
    text = tiny_recipe(prune='kind = "none"', dist="timeout_s = 30.0").replace(
        'method = "dsee"\nrank = 4', BASELINES[method])
    text = text[:text.index("[omega]")] + text[text.index("[train]"):]
    os.makedirs(os.path.join(tmp, "one"))
    base = os.path.join(one_process(dsee, os.path.join(tmp, "one"), text), "tiny")
    recipe = write_recipe(tmp, text)
    out = os.path.join(tmp, "out2")
    rc, output, seconds = run(ranks.mpirun(2) + [ranks.dsee, "run", recipe, "--set", f"run.out_dir={out}"], 120)
    print(f"--- {method}, 2 ranks: exit {rc} after {seconds:.1f} s")
    check(f"{method}, 2 ranks: dsee run exits 0", rc == 0, output if rc else "")
    other = os.path.join(out, "tiny")
    trained = load_file(os.path.join(base, "trainable-train.safetensors"))
    m = re.search(r"gradient sync: (\d+) trainable tensors, (\d+) values", output)
    check(f"{method}: the gradient-sync line", m, output)
    check_equal(f"{method}: the all-reduced tensors and values are the trainable ones",
                (int(m.group(1)), int(m.group(2))), (len(trained), sum(v.size for v in trained.values())))
    a, b = trained, load_file(os.path.join(other, "trainable-train.safetensors"))
    check(f"{method}: trainable names", a.keys() == b.keys(), f"{sorted(set(a) ^ set(b))}")
    # A key bias adds the same amount to every score of a query row, which the
    # softmax removes: its gradient is zero in exact arithmetic and rounding
    # noise in practice, and AdamW turns noise of any size into steps of
    # about lr. The model's function does not depend on it (the dev metrics
    # and losses below are compared).
    names = sorted(k for k in a if not k.endswith("attention.self.key.bias"))
    check_close(f"{method}, 2 ranks: trainable-train.safetensors (less the key biases)",
                np.concatenate([b[k].reshape(-1) for k in names]), np.concatenate([a[k].reshape(-1) for k in names]),
                abs=1e-6, reference="1 process")
    for stage in ("train", "eval"):
        x = json.load(open(os.path.join(base, "stages", f"{stage}.json")))
        y = json.load(open(os.path.join(other, "stages", f"{stage}.json")))
        check(f"{method}, 2 ranks: stages/{stage}.json dev metrics equal 1 process's", x["dev"] == y["dev"],
              f"{y['dev']} vs {x['dev']}")
    x = json.load(open(os.path.join(base, "stages", "train.json")))
    y = json.load(open(os.path.join(other, "stages", "train.json")))
    check_equal(f"{method}, 2 ranks: training steps", y["steps"], x["steps"])
    check_logged_losses(f"{method}, 2 ranks", base, other)
