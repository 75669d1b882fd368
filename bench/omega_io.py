"""Hands matrices to bench_omega (raw float32 + a JSON manifest) and reads back
its report and Ω file, for bench/grebsmo.py."""
import json
import os
import subprocess

import h5py


def write_manifest(folder, matrices):
    """matrices: list of (name, W out x in, float32). Returns the manifest path."""
    manifest = {"data": "weights.bin", "matrices": []}
    offset = 0
    with open(os.path.join(folder, "weights.bin"), "wb") as f:
        for name, W in matrices:
            data = W.contiguous().numpy().astype("<f4").tobytes()
            f.write(data)
            manifest["matrices"].append({"name": name, "rows": W.shape[0], "cols": W.shape[1], "offset": offset})
            offset += len(data)
    path = os.path.join(folder, "manifest.json")
    with open(path, "w") as f:
        json.dump(manifest, f)
    return path


def run_driver(driver, folder, matrices, args):
    """Runs bench_omega on matrices; returns (Ω file path, report dict)."""
    out = os.path.join(folder, "omega.h5")
    report = os.path.join(folder, "report.json")
    cmd = [driver, "--input", write_manifest(folder, matrices), "--out", out, "--report", report] + args
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_omega failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    with open(report) as f:
        return out, json.load(f)


def read_indices(path):
    """{dataset name: list of flat indices} of an Ω file."""
    with h5py.File(path, "r") as h:
        return {name: h[name][:].tolist() for name in h.keys()}
