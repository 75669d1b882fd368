"""omega.method = gradient under mpirun (recipes/omega_gradient.h): 2 and 3
ranks (3: unequal pieces of each global batch of 16) write the 1-process Ω
and its attributes. The tiny demo recipe with accumulation, clipping and
warm-up; 2 LoRA warm-up steps, then 3 gradient batches; run.stages = omega.
"""
import os

import h5py
import numpy as np
import pytest

from harness import check
from harness.runs import h5_datasets, run_command as run, tiny_recipe, write_recipe

RECIPE = tiny_recipe(prune='kind = "none"', dist="timeout_s = 30.0")
GRADIENT = ["--set", "omega.method=gradient", "--set", "omega.gradient_steps=3", "--set",
            "omega.gradient_warmup_steps=2", "--set", 'run.stages=["omega"]', "--set", "tuning.dropout=0.1"]


@pytest.fixture(scope="module")
def one_process(dsee, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("omega-gradient-1"))
    recipe = write_recipe(folder, RECIPE)
    out = os.path.join(folder, "out1")
    rc, text, seconds = run([dsee, "run", recipe, "--set", f"run.out_dir={out}", *GRADIENT], 120)
    print(f"--- 1 process: exit {rc} after {seconds:.1f} s")
    check("1 process: dsee run exits 0", rc == 0, text if rc else "")
    return os.path.join(out, "tiny", "omega.h5")


@pytest.mark.parametrize("n", [2, 3])
def test_omega_gradient_ranks(n, one_process, dsee, mpiexec, tmp_path):
    expected = h5_datasets(one_process)
    recipe = write_recipe(str(tmp_path), RECIPE)
    out = os.path.join(str(tmp_path), f"out{n}")
    command = [mpiexec, "-n", str(n), "--oversubscribe", "--bind-to", "none", dsee, "run", recipe, "--set",
               f"run.out_dir={out}", *GRADIENT]
    rc, text, seconds = run(command, 120)
    print(f"--- {n} ranks: exit {rc} after {seconds:.1f} s")
    check(f"{n} ranks: dsee run exits 0", rc == 0, text if rc else "")
    path = os.path.join(out, "tiny", "omega.h5")
    got = h5_datasets(path)
    differing = [k for k in expected if k not in got or not np.array_equal(got[k], expected[k])]
    check(f"{n} ranks: omega.h5 holds the 1-process Ω ({len(expected)} datasets)",
          got.keys() == expected.keys() and not differing, f"{differing}")
    with h5py.File(path, "r") as f, h5py.File(one_process, "r") as g:
        check(f"{n} ranks: omega.h5 file attributes equal the 1-process ones ({dict(g.attrs)})",
              dict(f.attrs).keys() == dict(g.attrs).keys() and
              all(np.array_equal(f.attrs[a], g.attrs[a]) for a in g.attrs))
