"""dsee under a real Slurm: Debian's munged, slurmctld and slurmd, started by
this script on this machine and stopped again (by pid) however the scenario
ends. The cluster is private: its own slurm.conf (SLURM_CONF), ports, munge
key and socket, spool, state and log directories under a temporary folder,
one node with this machine's CPUs (`slurmd -C`), no cgroups
(proctrack/linuxproc, task/none), AuthInfo cred_expire=10 (a requeued job
waits cred_expire + 1 s before it starts again; Slurm's default is 120 s) and
two partitions on the node: `main` (the default) and `urgent`, whose jobs
pre-empt main's (PreemptType=preempt/partition_prio, PreemptMode=REQUEUE,
GraceTime 60 s on main).

One pytest test per scenario (ctest: slurm_<scenario>), each on a cluster of
its own (the `cluster` fixture):
  ranks       `sbatch launch/slurm.sbatch` with 2 ranks (srun --mpi=pmix): the
              trained tensors, dev metrics and metrics.jsonl equal a 1-process
              run's (harness.runs.compare_runs: the mpi tests' bounds).
  time_limit  a 2-rank job with --time=1 --signal=USR1@25 and slowed steps
              (DSEE_TEST_STEP_PAUSE_S): Slurm sends USR1 to the ranks at its
              first time-limit check that is within 25 s (+ its 30 s check
              period) of the limit; both ranks print "stopped by SIGUSR1 at
              step k", ckpt/step-k.h5 exists, the script requeues the job, the
              next start resumes from step k and ends where a straight run
              ends (tensors, dev metrics, every metrics.jsonl record).
  preempt     real pre-emption: a job in `urgent` pre-empts the 2-rank job in
              `main`; Slurm sends the ranks SIGTERM, they stop with the
              checkpoint at that step, the script sees PreemptTime and
              requeues; after the urgent job the dsee job resumes and ends as
              the straight run. Then `scancel --signal=USR1` (a stop by hand)
              the same way, and `scancel --signal=TERM`: the checkpoint, exit
              143, no requeue.
  killed_rank rank 1 killed with SIGKILL mid-training: --kill-on-bad-exit ends
              the job (FAILED, non-zero) within dist.timeout_s + 5 s of the
              kill, no requeue, no process of the job left.
  sweep       `dsee sweep --slurm` of 3 runs: an array of 3 tasks, 1 rank each;
              task 1 stopped by `scancel --signal=USR1 JOB_1` mid-training
              checkpoints, is requeued, resumes and ends as a straight run of
              its recipe; every run's summary.json, `dsee report` lists the 3
              runs; the whole array requeued afterwards: every task says its
              run is finished and leaves summary.json untouched.

Skipped with the reason (ctest: Skipped) when Slurm cannot run here: not
root, or the Debian packages missing (launch/setup installs them as root).
"""
import ctypes
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness.runs import compare_runs, tiny_recipe, write_recipe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SBATCH_SCRIPT = os.path.join(REPO, "launch", "slurm.sbatch")
DSEE = None  # the dsee binary, set by the cluster fixture


def fail(message):
    pytest.fail(message, pytrace=False)


DEADLINE_S = 270  # ctest's TIMEOUT is 300
# tiny_recipe's training: 2 epochs of 7 optimizer steps, no pruning (so no re-tuning), then evaluation.
RECIPE = tiny_recipe(prune='kind = "none"', dist="timeout_s = 30.0")
STAGES = ("train", "eval")
TRAIN_STEPS = 14


def skip(reason):
    pytest.skip(reason)


def free_ports(n):
    """n distinct unused TCP ports in 26000-29999 (Slurm's defaults are 6817 and 6818)."""
    ports = []
    for port in random.sample(range(26000, 30000), 200):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    fail("no free ports in 26000-29999")


def die_with_parent():
    """preexec_fn: the daemon gets SIGTERM should this script die before it stops them."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Slurm:
    """A private single-node Slurm. start() launches munged, slurmctld and slurmd
    in the foreground as children of this process and waits for the node to be
    idle; stop() cancels every job, stops the daemons by pid and kills whatever
    still runs with this cluster's SLURM_CONF in its environment (job steps)."""

    def __init__(self, root):
        self.root = root
        self.conf = os.path.join(root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.daemons = []  # (name, Popen)
        self.log = os.path.join(root, "log")

    def write_config(self):
        host = socket.gethostname().split(".")[0]
        node = subprocess.run(["slurmd", "-C"], stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()[0]
        node = re.sub(r"^NodeName=\S+", f"NodeName={host} NodeAddr=127.0.0.1", node)
        for d in ("munge", "state", "spool", "log", "tmp"):
            os.makedirs(os.path.join(self.root, d))
        # munged wants its socket's folder (and the folders above) searchable by all, not writable.
        os.chmod(os.path.join(self.root, "munge"), 0o755)
        self.munge_key = os.path.join(self.root, "munge", "munge.key")
        with open(self.munge_key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(self.munge_key, 0o400)
        self.munge_socket = os.path.join(self.root, "munge", "socket")
        r = self.root
        ctld_port, slurmd_port = free_ports(2)
        with open(os.path.join(r, "plugstack.conf"), "w"):
            pass
        config = f"""ClusterName=dseetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
TmpFS={r}/tmp
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldDebug=debug2
PlugStackConfig={r}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
ReturnToService=2
MinJobAge=600
FirstJobId={random.randint(100, 899) * 1000}
{node} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes={host} MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
"""
        with open(self.conf, "w") as f:
            f.write(config)
        self.host = host

    def daemon(self, name, argv):
        out = open(os.path.join(self.log, f"{name}.out"), "w")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, preexec_fn=die_with_parent)
        self.daemons.append((name, p))
        return p

    def start(self):
        started = time.monotonic()
        self.write_config()
        self.daemon("munged", ["munged", "--foreground", f"--key-file={self.munge_key}",
                               f"--socket={self.munge_socket}", f"--pid-file={self.root}/munge/pid",
                               f"--log-file={self.log}/munged.log", f"--seed-file={self.root}/munge/seed"])
        self.wait_for(lambda: os.path.exists(self.munge_socket), 10, "munged's socket")
        self.daemon("slurmctld", ["slurmctld", "-D", "-i"])
        self.wait_for(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, 20, "slurmctld to answer")
        self.daemon("slurmd", ["slurmd", "-D", "-N", self.host])
        self.wait_for(lambda: self.run(["sinfo", "-h", "-n", self.host, "-o", "%T"], check=False).stdout.strip()
                      == "idle", 30, "the node to be idle")
        mpi = self.run(["srun", "--mpi=list"], check=False)
        if "pmix" not in mpi.stdout + mpi.stderr:
            fail(f"srun has no PMIx plugin (`srun --mpi=list`: {mpi.stdout + mpi.stderr})")
        version = self.run(["sinfo", "--version"]).stdout.strip()
        print(f"--- {version}: munged, slurmctld and slurmd up, node {self.host} idle after "
              f"{time.monotonic() - started:.1f} s")

    def wait_for(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.daemons:
                if p.poll() is not None:
                    fail(f"{name} exited with {p.returncode} while waiting for {what}")
            if ready():
                return
            time.sleep(0.2)
        fail(f"timed out after {timeout} s waiting for {what}")

    def print_logs(self):
        for name in sorted(os.listdir(self.log)):
            text = open(os.path.join(self.log, name), errors="replace").read()
            print(f"--- {name} (last 3000 characters)\n{text[-3000:]}")

    def run(self, argv, check=True, env=None):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(self.env, **(env or {})), timeout=60)
        if check and p.returncode != 0:
            fail(f"{' '.join(argv)}: exit {p.returncode}: {p.stdout}{p.stderr}")
        return p

    def sbatch(self, options, script=None, arguments=(), cwd=None, env=None):
        """sbatch OPTIONS [SCRIPT ARGUMENTS] (no script: --wrap in the options); the job id."""
        argv = ["sbatch", "--parsable"] + options + ([script] + list(arguments) if script else [])
        p = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=dict(self.env, **(env or {})), cwd=cwd, timeout=60)
        if p.returncode != 0:
            fail(f"{' '.join(argv)}: exit {p.returncode}: {p.stdout}{p.stderr}")
        return int(p.stdout.strip().split(";")[0])

    def jobs(self, job):
        """`scontrol show job -o JOB` as one dict per job (an array: per task)."""
        out = self.run(["scontrol", "show", "job", "-o", str(job)]).stdout
        return [dict(re.findall(r"(?:^|\s)([A-Za-z]+)=(\S*)", line)) for line in out.splitlines() if line.strip()]

    def job(self, job):
        return self.jobs(job)[0]

    def wait_job(self, job, until, timeout, what, watch=None):
        """Polls the job until until(record) holds; watch(record) runs on every poll. The last record."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.job(job)
            if watch:
                watch(record)
            if until(record):
                return record
            if time.monotonic() > deadline:
                fail(f"job {job} did not reach {what} within {timeout} s: {record.get('JobState')} "
                     f"{record.get('Reason')}")
            time.sleep(0.2)

    def processes(self, *needles):
        """Pids of the processes (not this one) whose environment has SLURM_CONF=ours and every needle."""
        mine = f"SLURM_CONF={self.conf}".encode()
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if mine in environ and all(n.encode() in environ for n in needles):
                found.append(int(pid))
        return found

    def stop(self):
        if any(name == "slurmctld" and p.poll() is None for name, p in self.daemons):
            jobs = self.run(["squeue", "-h", "-o", "%A"], check=False).stdout.split()
            if jobs:
                self.run(["scancel", "--signal=KILL", "--full"] + jobs, check=False)
                self.run(["scancel"] + jobs, check=False)
        for name, p in reversed(self.daemons):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # What the daemons started and left behind (slurmstepd, job scripts, ranks).
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
                print(f"--- killed process {pid}, left over from the cluster")
            except ProcessLookupError:
                pass


class Output:
    """A job's output file, read as it grows; records when each line first appeared."""

    def __init__(self, path):
        self.path = path
        self.seen = []  # (monotonic time, line)
        self.offset = 0

    def poll(self, _record=None):
        if not os.path.exists(self.path):
            return
        with open(self.path, errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
        complete = text[:text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        now = time.monotonic()
        self.seen += [(now, line) for line in complete.splitlines()]

    def first(self, pattern):
        return next(((t, line) for t, line in self.seen if re.search(pattern, line)), None)

    def text(self):
        self.poll()
        return "\n".join(line for _, line in self.seen)


def submit(s, tmp, recipe, minutes, name="job", sets=(), options=(), pause_s=0):
    """`sbatch launch/slurm.sbatch RECIPE --set run.out_dir=TMP/NAME SETS…` with 2 ranks, --time=MINUTES
    and OPTIONS, training steps slowed by pause_s; (job id, run directory, its Output in TMP/NAME.out).
    Submitted from TMP/work, where build/bin/dsee (which the script runs) is the dsee under test."""
    work = os.path.join(tmp, "work")
    if not os.path.exists(work):
        os.makedirs(os.path.join(work, "build", "bin"))
        os.symlink(DSEE, os.path.join(work, "build", "bin", "dsee"))
    out = os.path.join(tmp, name)
    output = Output(os.path.join(tmp, f"{name}.out"))
    job = s.sbatch(["--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", f"--time={minutes}",
                    f"--output={output.path}"] + list(options), SBATCH_SCRIPT,
                   [recipe, "--set", f"run.out_dir={out}"] + list(sets), cwd=work,
                   env={"DSEE_TEST_STEP_PAUSE_S": str(pause_s)} if pause_s else None)
    return job, os.path.join(out, "tiny"), output


def straight_run(tmp, recipe, extra):
    """Starts the uninterrupted 1-process run that the Slurm jobs are compared with (beside the job: it
    takes about 2 s); returns a function that waits for it and returns its run directory."""
    out = os.path.join(tmp, "straight")
    p = subprocess.Popen([DSEE, "run", recipe, "--set", f"run.out_dir={out}"] + extra, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)

    def finish():
        text = p.communicate(timeout=300)[0]
        if p.returncode != 0:
            print(text)
            fail(f"straight run: exit {p.returncode}")
        return os.path.join(out, "tiny")

    return finish


def finished(record):
    return record["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def expect_completed(s, job, output, restarts):
    record = s.job(job)
    if record["JobState"] != "COMPLETED" or record["ExitCode"] != "0:0" or record["Restarts"] != str(restarts):
        print(output.text())
        fail(f"job {job}: {record['JobState']}, exit code {record['ExitCode']}, {record['Restarts']} restarts; "
             f"expected COMPLETED, 0:0 and {restarts}")


def train_records(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    return sum(1 for line in open(path) if '"kind":"train"' in line.replace(" ", ""))


def expect_stop(output, signal_name, run_dir, label, ranks=2):
    """Every rank printed "stopped by <signal> at step k of n; checkpoint …" for the same k, mid-training,
    and ckpt/step-k.h5 exists. Returns k."""
    text = output.text()
    stops = re.findall(rf"dsee: stopped by {signal_name} at step (\d+) of (\d+); checkpoint (\S+);", text)
    if len(stops) < ranks or len({s[0] for s in stops[-ranks:]}) != 1:
        print(text)
        fail(f"{label}: expected {ranks} rank(s) to print 'stopped by {signal_name}' at the same step, got {stops}")
    step, total = int(stops[-1][0]), int(stops[-1][1])
    if not 0 < step < total:
        fail(f"{label}: stopped at step {step} of {total}: not mid-training")
    if not os.path.exists(os.path.join(run_dir, "ckpt", f"step-{step}.h5")):
        fail(f"{label}: no ckpt/step-{step}.h5 after the stop")
    # srun's words for a rank ended by a signal, or for SIGKILL forwarded to every rank.
    if re.search(r"tasks? [\d,-]+: (Killed|Terminated)|forcing job termination", text):
        print(text)
        fail(f"{label}: a rank was killed instead of stopping")
    return step


def expect_resumed(output, step, label):
    if not output.first(rf"resuming train from ckpt/step-{step}\.h5"):
        print(output.text())
        fail(f"{label}: the requeued job did not resume from ckpt/step-{step}.h5")


def ranks(s, tmp, recipe):
    start = time.monotonic()
    job, run_dir, output = submit(s, tmp, recipe, 5)
    straight = straight_run(tmp, recipe, [])
    s.wait_job(job, finished, 240, "its end", output.poll)
    print(output.text())
    print(f"--- job {job}: {time.monotonic() - start:.1f} s from sbatch to its end")
    expect_completed(s, job, output, 0)
    if not output.first(r"dsee run on 2 ranks"):
        fail("the job did not run on 2 ranks")
    compare_runs(straight(), run_dir, "2 ranks under sbatch + srun --mpi=pmix", STAGES)


def time_limit(s, tmp, recipe):
    pause_s = 2.5
    # slurmctld checks time limits every 30 s, the first time 30 s after it
    # started. A job that starts within 25 s of that is within 25 s (+ the 30 s
    # period) of its 60 s limit at that first check: USR1 comes then, about 27 s
    # into the job, while the 14 slowed steps (35 s) are under way, and the
    # limit itself no earlier than the check after next.
    job, run_dir, output = submit(s, tmp, recipe, 1, options=["--signal=USR1@25"], pause_s=pause_s)
    submitted = time.monotonic()
    straight = straight_run(tmp, recipe, [])
    running = []

    def watch(record):
        output.poll()
        if record["JobState"] == "RUNNING" and not running:
            running.append(time.monotonic())

    record = s.wait_job(job, lambda r: r["Restarts"] == "1" or finished(r), 120, "its requeue", watch)
    if finished(record):
        print(output.text())
        fail(f"job {job} ended ({record['JobState']}) instead of being requeued")
    stopped = output.first(r"dsee: stopped by SIGUSR1")
    step = expect_stop(output, "SIGUSR1", run_dir, "time limit")
    if not output.first(rf"requeueing job {job}"):
        fail("the batch script did not requeue the job")
    print(f"--- USR1 from Slurm's --signal: the ranks stopped at step {step} of {TRAIN_STEPS}, "
          f"{stopped[0] - running[0]:.1f} s after the job started (time limit 60 s)")
    # The requeued start gets time to finish (a second USR1 would be this same path again).
    s.run(["scontrol", "update", f"JobId={job}", "TimeLimit=5"])
    s.wait_job(job, finished, 180, "its end", output.poll)
    print(output.text())
    print(f"--- job {job}: {time.monotonic() - submitted:.1f} s from sbatch to its end, one requeue")
    expect_completed(s, job, output, 1)
    expect_resumed(output, step, "time limit")
    compare_runs(straight(), run_dir, "stopped by the time limit's USR1 at step {}, requeued".format(step), STAGES)


def train_started(run_dir, records):
    return lambda _record: train_records(run_dir) >= records


def preempt(s, tmp, recipe):
    start = time.monotonic()
    job, run_dir, output = submit(s, tmp, recipe, 5, pause_s=0.5)
    straight = straight_run(tmp, recipe, [])

    # 1. Pre-emption: a job in the urgent partition needs the node's CPUs.
    s.wait_job(job, train_started(run_dir, 2), 120, "training", output.poll)
    urgent = s.sbatch(["--partition=urgent", f"--ntasks={os.cpu_count()}", "--time=1",
                       f"--output={tmp}/urgent.out", "--wrap=sleep 1"])
    record = s.wait_job(job, lambda r: r["Restarts"] == "1" or finished(r), 60, "its requeue", output.poll)
    if finished(record):
        print(output.text())
        fail(f"job {job} ended ({record['JobState']}) instead of being requeued")
    step = expect_stop(output, "SIGTERM", run_dir, "pre-emption")
    if not output.first(rf"stopped on a signal \(exit 143\): requeueing job {job}"):
        print(output.text())
        fail("the batch script did not requeue the pre-empted job after exit 143")
    print(f"--- pre-empted by job {urgent}: the ranks stopped on SIGTERM at step {step}, the job was requeued")

    # 2. By hand: scancel --signal=USR1 (the job's steps only): the same stop and requeue.
    s.wait_job(job, lambda r: output.first(rf"resuming train from ckpt/step-{step}\.h5") is not None and
               train_records(run_dir) >= step + 2, 120, "its resumed training", output.poll)
    s.run(["scancel", "--signal=USR1", str(job)])
    record = s.wait_job(job, lambda r: r["Restarts"] == "2" or finished(r), 60, "its second requeue", output.poll)
    if finished(record):
        print(output.text())
        fail(f"job {job} ended ({record['JobState']}) after scancel --signal=USR1 instead of being requeued")
    step2 = expect_stop(output, "SIGUSR1", run_dir, "scancel --signal=USR1")
    print(f"--- scancel --signal=USR1: stopped at step {step2}, requeued")
    s.wait_job(job, finished, 120, "its end", output.poll)
    print(output.text())
    print(f"--- job {job}: {time.monotonic() - start:.1f} s from sbatch to its end, two requeues")
    expect_completed(s, job, output, 2)
    expect_resumed(output, step2, "scancel --signal=USR1")
    compare_runs(straight(), run_dir, f"pre-empted at step {step}, stopped by hand at step {step2}", STAGES)

    # 3. scancel --signal=TERM by hand: the same stop and checkpoint, but no requeue (no PreemptTime).
    job3, run_dir3, output3 = submit(s, tmp, recipe, 5, name="job3", pause_s=0.5)
    s.wait_job(job3, train_started(run_dir3, 2), 120, "training", output3.poll)
    s.run(["scancel", "--signal=TERM", str(job3)])
    record = s.wait_job(job3, finished, 60, "its end", output3.poll)
    step3 = expect_stop(output3, "SIGTERM", run_dir3, "scancel --signal=TERM")
    if record["JobState"] != "FAILED" or record["ExitCode"] != "143:0" or record["Restarts"] != "0":
        print(output3.text())
        fail(f"scancel --signal=TERM: job {record['JobState']}, exit code {record['ExitCode']}, "
             f"{record['Restarts']} restarts; expected FAILED, 143:0, no requeue")
    print(f"--- scancel --signal=TERM: stopped at step {step3} with its checkpoint, job FAILED 143, not requeued")


def killed_rank(s, tmp, recipe):
    timeout_s = 10
    job, run_dir, output = submit(s, tmp, recipe, 5, sets=["--set", "train.max_steps=100000", "--set",
                                                            f"dist.timeout_s={timeout_s}"], pause_s=0.2)
    s.wait_job(job, train_started(run_dir, 3), 120, "training", output.poll)
    victims = [pid for pid in s.processes(f"SLURM_JOB_ID={job}", "SLURM_PROCID=1")
               if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "dsee"]
    if len(victims) != 1:
        fail(f"expected one dsee process of rank 1, found {victims}")
    os.kill(victims[0], signal.SIGKILL)
    killed = time.monotonic()
    bound_s = timeout_s + 5
    record = s.wait_job(job, finished, bound_s + 60, "its end", output.poll)
    seconds = time.monotonic() - killed
    print(output.text())
    print(f"--- rank 1 killed: job {record['JobState']}, exit code {record['ExitCode']}, {seconds:.1f} s after the "
          f"kill (bound {bound_s} s)")
    if record["JobState"] != "FAILED" or record["ExitCode"] == "0:0" or record["Restarts"] != "0":
        fail(f"expected FAILED with a non-zero exit code and no requeue, got {record['JobState']} "
             f"{record['ExitCode']}, {record['Restarts']} restarts")
    if seconds > bound_s:
        fail(f"the job ended {seconds:.1f} s after the kill, more than {bound_s} s")
    left = s.processes(f"SLURM_JOB_ID={job}")
    if left:
        fail(f"processes of job {job} still running: {left}")


def sweep(s, tmp, recipe):
    with open(os.path.join(tmp, "sweep.toml"), "w") as f:
        f.write(f'recipe = "{recipe}"\nname = "seeds"\nout_dir = "{tmp}/runs"\n[zip]\n"run.seed" = [1, 2, 3]\n')
    start = time.monotonic()
    p = s.run([DSEE, "sweep", "--slurm", os.path.join(tmp, "sweep.toml"), "--sbatch-arg=--ntasks=1",
               "--sbatch-arg=--time=5", "--sbatch-arg=--parsable"], env={"DSEE_TEST_STEP_PAUSE_S": "0.3"})
    job = int(p.stdout.strip().splitlines()[-1].split(";")[0])
    print(f"--- dsee sweep --slurm: array job {job}")
    straight = straight_run(tmp, recipe, ["--set", "run.seed=2"])
    sweep_dir = os.path.join(tmp, "runs", "seeds")
    runs = [line.split("\t")[2] for line in open(os.path.join(sweep_dir, "sweep.tsv")).read().splitlines()[1:]]
    summaries = [os.path.join(r, "summary.json") for r in runs]
    outputs = [Output(os.path.join(sweep_dir, f"slurm-{job}_{i}.out")) for i in range(3)]

    def tasks_ended(restarts):
        def test(_record):
            records = s.jobs(job)
            return len(records) == 3 and all(finished(r) and r["Restarts"] == restarts[r["ArrayTaskId"]]
                                             for r in records)
        return test

    def all_text():
        return "\n".join(o.text() for o in outputs)

    # Task 1 stopped by hand mid-training (scancel --signal=USR1 JOB_1): it checkpoints, is requeued, resumes.
    s.wait_job(job, train_started(runs[1], 3), 120, "training in task 1", outputs[1].poll)
    s.run(["scancel", "--signal=USR1", f"{job}_1"])
    s.wait_job(f"{job}_1", lambda r: r["Restarts"] == "1" or finished(r), 60, "its requeue", outputs[1].poll)
    step = expect_stop(outputs[1], "SIGUSR1", runs[1], "array task 1", ranks=1)
    if not outputs[1].first(rf"requeueing array task {job}_1 "):
        fail(f"the array script did not requeue task {job}_1")
    s.wait_job(job, tasks_ended({"0": "0", "1": "1", "2": "0"}), 240, "the end of its 3 tasks (task 1 requeued once)",
               outputs[1].poll)
    tasks = s.jobs(job)
    print(outputs[1].text())
    print(f"--- array job {job}: {len(tasks)} tasks ended {time.monotonic() - start:.1f} s after sbatch")
    if sorted(r["ArrayTaskId"] for r in tasks) != ["0", "1", "2"] or \
            any(r["JobState"] != "COMPLETED" or r["ExitCode"] != "0:0" for r in tasks):
        fail(f"expected array tasks 0-2 COMPLETED with 0:0: {[(r['ArrayTaskId'], r['JobState']) for r in tasks]}")
    expect_resumed(outputs[1], step, "array task 1")
    compare_runs(straight(), runs[1], f"array task 1, stopped at step {step} and requeued", STAGES)
    missing = [p for p in summaries if not os.path.exists(p)]
    if missing:
        fail(f"summary.json missing: {missing}")
    report = s.run([DSEE, "report", sweep_dir, "--format", "tsv"]).stdout
    rows = [row.split("\t")[:2] for row in report.strip().splitlines()]
    print("--- dsee report:", rows)
    if sorted(row[0] for row in rows[1:]) != sorted(os.path.basename(r) for r in runs):
        fail(f"dsee report lists {rows[1:]}, expected the 3 runs")

    # The whole array requeued: every task finds its run finished and leaves it alone.
    mtimes = [os.stat(p).st_mtime_ns for p in summaries]
    s.run(["scontrol", "requeue", str(job)])
    requeued = time.monotonic()
    s.wait_job(job, tasks_ended({"0": "1", "1": "2", "2": "1"}), 120, "the end of its 3 requeued tasks")
    print(f"--- array requeued: 3 tasks ended again {time.monotonic() - requeued:.1f} s later")
    for r in runs:
        if f"{r} is finished (summary.json), skipped" not in all_text():
            print(all_text())
            fail(f"no requeued task said {r} is finished")
    if [os.stat(p).st_mtime_ns for p in summaries] != mtimes:
        fail("a requeued task rewrote a finished run's summary.json")
    if any(r["JobState"] != "COMPLETED" for r in s.jobs(job)):
        fail(f"requeued tasks: {[(r['ArrayTaskId'], r['JobState']) for r in s.jobs(job)]}")


@pytest.fixture
def cluster(dsee, request):
    """A private Slurm for one scenario: (the cluster, a folder, the tiny recipe); stopped afterwards, its logs
    printed when the scenario failed."""
    global DSEE
    DSEE = os.path.abspath(dsee)
    if os.geteuid() != 0:
        skip("the Slurm daemons need root here (munged, slurmctld and slurmd run as root with a private "
             "configuration); run ./launch/test as root")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol") if not shutil.which(t)]
    if missing:
        skip(f"not installed: {', '.join(missing)} (launch/setup installs slurmctld, slurmd, slurm-client and munge "
             f"as root)")
    tmp = tempfile.mkdtemp(prefix=f"dsee-slurm-{request.node.name}-")
    os.chmod(tmp, 0o755)  # munged: every folder above its socket searchable by all
    slurm = Slurm(os.path.join(tmp, "slurm"))
    # SIGTERM, or this test's own deadline (before ctest's TIMEOUT of 300 s, whose kill would leave the jobs'
    # processes behind: slurmstepd is no child of this process): stop the cluster on the way out.
    signal.signal(signal.SIGTERM, lambda *_: fail("terminated"))
    signal.signal(signal.SIGALRM, lambda *_: fail(f"{request.node.name} did not finish within {DEADLINE_S} s"))
    signal.alarm(DEADLINE_S)
    ok = False
    try:
        os.makedirs(slurm.root)
        slurm.start()
        yield slurm, tmp, write_recipe(tmp, RECIPE)
        ok = True
    finally:
        signal.alarm(0)
        if not ok or getattr(request.node, "call_failed", False):
            slurm.print_logs()
        slurm.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ranks(cluster):
    ranks(*cluster)


def test_time_limit(cluster):
    time_limit(*cluster)


def test_preempt(cluster):
    preempt(*cluster)


def test_killed_rank(cluster):
    killed_rank(*cluster)


def test_sweep(cluster):
    sweep(*cluster)
