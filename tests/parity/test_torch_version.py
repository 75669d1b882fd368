"""The LibTorch dsee linked is the torch of the .venv interpreter: same
version, same CUDA runtime (two CUDA runtimes in one process break)."""
import json
import subprocess

import torch

from harness import check_equal


def test_dsee_links_the_venv_torch(dsee):
    report = json.loads(subprocess.run([dsee, "env", "--json"], check=True, capture_output=True, text=True).stdout)[0]
    check_equal("torch version: dsee's LibTorch vs .venv", report["torch"], torch.__version__.split("+")[0])
    check_equal("CUDA runtime: dsee's LibTorch vs .venv", report["cuda_runtime"], torch.version.cuda or "")
    check_equal("CUDA available: dsee vs .venv torch", report["cuda_available"], torch.cuda.is_available())
