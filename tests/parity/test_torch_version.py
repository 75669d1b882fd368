"""The LibTorch dsee linked is the torch of the .venv interpreter: same
version, same CUDA runtime (two CUDA runtimes in one process break)."""
import json
import subprocess
import sys

import torch

dsee = sys.argv[1]
report = json.loads(subprocess.run([dsee, "env", "--json"], check=True, capture_output=True, text=True).stdout)[0]
python_version = torch.__version__.split("+")[0]
print(f"dsee links torch {report['torch']}, python has {torch.__version__}")
assert report["torch"] == python_version, f"dsee linked torch {report['torch']} but .venv has {python_version}"
python_cuda = torch.version.cuda or ""
print(f"CUDA runtime: dsee {report['cuda_runtime']!r}, python {python_cuda!r}")
assert report["cuda_runtime"] == python_cuda, "CUDA runtime of the linked LibTorch differs from python's"
assert report["cuda_available"] == torch.cuda.is_available()
print("1 passed, 0 failed")
