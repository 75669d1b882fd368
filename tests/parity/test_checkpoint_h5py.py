"""Parity: a dsee checkpoint opened with h5py (and h5dump) by the schema
documented in README.md "Checkpoints", checked against values Python made.

Python writes the tensors (fp32, bf16, int64, bool masks, Ω indices) into a
safetensors file and a tiny model folder; checkpoint_tool writes a checkpoint
from them. Then, using only h5py / numpy / hashlib:
  - root attributes, the config text and its hash64 (reimplemented here from
    the documented algorithm), the model weights hash (same), versions;
  - every trainable / best / optimizer dataset by name, with its dtype attribute and
    HDF5 type, bit-exact (bf16 as uint16 raw bits), Fletcher-32 on;
  - Ω (int64 + shape), the prune-plan masks (numpy.unpackbits), heads;
  - the sidecar: SHA-256 of the file in `sha256sum` format, and `latest`;
  - h5dump lists the datasets.
Then the same reader opens a checkpoint that `dsee run` wrote (a tiny demo
DSEE run): the documented optimizer names (`<param>.exp_avg`,
`<param>.exp_avg_sq` fp32 of the parameter's shape, `<param>.step` int64
scalars equal to the checkpoint's step), exactly the documented /scheduler
keys, and /rng/cpu accepted by torch.set_rng_state.

usage: test_checkpoint_h5py.py path/to/checkpoint_tool path/to/dsee
"""
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
from safetensors.torch import save_file

TOOL = sys.argv[1]
DSEE = sys.argv[2]
failures = []
MASK64 = (1 << 64) - 1


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message)
    if not ok:
        failures.append(message)


def hash64(data: bytes) -> int:
    """dsee-hash64 as README.md "Checkpoints" documents it."""
    h = 0xcbf29ce484222325
    padded = data + b"\0" * (-len(data) % 8)
    for (word,) in struct.iter_unpack("<Q", padded):
        h = ((h ^ word) * 0x100000001b3) & MASK64
    h = ((h ^ len(data)) * 0x100000001b3) & MASK64
    h ^= h >> 30
    h = (h * 0xbf58476d1ce4e5b9) & MASK64
    h ^= h >> 27
    h = (h * 0x94d049bb133111eb) & MASK64
    h ^= h >> 31
    return h


def model_weights_hash(model_file):
    """The documented model hash, read from the safetensors header by hand."""
    import json
    with open(model_file, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    stream = b""
    for name in sorted(k for k in header if k != "__metadata__"):
        entry = header[name]
        begin, end = entry["data_offsets"]
        stream += name.encode() + b"\0" + entry["dtype"].encode() + b"\0"
        stream += b"".join(struct.pack("<q", d) for d in entry["shape"])
        stream += data[begin:end]
    return hash64(stream)


def text(value):
    return value.decode() if isinstance(value, bytes) else value


g = torch.Generator().manual_seed(11)
trainable = {
    "encoder.layer.0.attention.self.query.lora_A": torch.randn(4, 24, generator=g),
    "encoder.layer.0.attention.self.query.sparse_values": torch.randn(16, generator=g),
    "classifier.weight": torch.randn(2, 24, generator=g).to(torch.bfloat16),
    "classifier.bias": torch.randn(2, generator=g).double(),
    "step_counts": torch.randint(-5, 5, (3, 2), generator=g),
}
optimizer = {"exp_avg.classifier.weight": torch.randn(2, 24, generator=g)}
best = {"encoder.layer.0.attention.self.query.lora_A": torch.randn(4, 24, generator=g),
        "classifier.weight": torch.randn(2, 24, generator=g).to(torch.bfloat16)}
omega = {"bert.encoder.layer.0.attention.self.query.weight": (torch.tensor([3, 50, 575]), (24, 24))}
masks = {"encoder.layer.0.attention.self.query": torch.rand(24, 24, generator=g) > 0.4,
         "encoder.layer.0.attention.self.value": torch.ones(8, 40, dtype=torch.bool)}
masks["encoder.layer.0.attention.self.value"][1, 7] = False
CONFIG = '[model]\npath = "tiny"\n\n[train]\nlr = 0.0005\nbatch_size = 32\n'

folder = tempfile.mkdtemp(prefix="dsee-ckpt-parity-")
try:
    tensors = {"trainable." + k: v for k, v in trainable.items()}
    tensors.update({"optimizer." + k: v for k, v in optimizer.items()})
    tensors.update({"best." + k: v for k, v in best.items()})
    for name, (indices, shape) in omega.items():
        tensors["omega." + name] = indices
        tensors["omega_shape." + name] = torch.tensor(shape)
    tensors.update({"mask." + k: v for k, v in masks.items()})
    save_file(tensors, os.path.join(folder, "in.safetensors"))
    model_dir = os.path.join(folder, "model")
    os.makedirs(model_dir)
    save_file({"embeddings.word_embeddings.weight": torch.randn(10, 6, generator=g),
               "pooler.dense.bias": torch.randn(6, generator=g).to(torch.bfloat16)},
              os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.toml"), "w") as f:
        f.write(CONFIG)

    ckpt = os.path.join(folder, "ckpt")
    for step in (100, 200, 300):
        out = subprocess.run([TOOL, os.path.join(folder, "in.safetensors"), ckpt, os.path.join(folder, "config.toml"),
                              model_dir, str(step)], check=True, capture_output=True, text=True).stdout
    check(sorted(os.listdir(ckpt)) == ["latest", "step-200.h5", "step-200.h5.sum", "step-300.h5", "step-300.h5.sum"],
          f"keep_last 2: {sorted(os.listdir(ckpt))}")
    check(open(os.path.join(ckpt, "latest")).read() == "step-300.h5\n", "latest names step-300.h5")
    path = os.path.join(ckpt, "step-300.h5")

    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    check(open(path + ".sum").read() == f"{digest}  step-300.h5\n", "sidecar = hashlib SHA-256, sha256sum format")
    check(subprocess.run(["sha256sum", "-c", "step-300.h5.sum"], cwd=ckpt, capture_output=True).returncode == 0,
          "sha256sum -c accepts the sidecar")

    with h5py.File(path, "r") as f:
        a = f.attrs
        check(int(a["format_version"]) == 1 and text(a["kind"]) == "dsee-checkpoint", "format_version 1, kind")
        check((int(a["step"]), int(a["epoch"]), int(a["sample_index"])) == (300, 2, 4321), "step, epoch, sample_index")
        check(text(a["model_path"]) == model_dir, "model_path")
        expected_model_hash = model_weights_hash(os.path.join(model_dir, "model.safetensors"))
        check(a["model_weights_hash"].dtype == np.uint64 and int(a["model_weights_hash"]) == expected_model_hash,
              f"model_weights_hash {int(a['model_weights_hash']):016x} = Python's {expected_model_hash:016x}")
        check(f"model_weights_hash {expected_model_hash}" in out, "driver printed the same model hash")
        check(text(a["torch_version"]).startswith(torch.__version__.split("+")[0]), f"torch_version {text(a['torch_version'])}")
        check(text(a["hdf5_version"]) != "" and text(a["dsee_version"]) != "", "hdf5_version, dsee_version")

        config = f["config"].asstr()[()]
        check(config == CONFIG, "config text")
        check(int(f["config"].attrs["hash"]) == hash64(CONFIG.encode()), "config hash = Python hash64 of the text")

        for group, expected in (("trainable", trainable), ("best", best), ("optimizer", optimizer)):
            check(sorted(f[group].keys()) == sorted(expected), f"{group} names")
            for name, tensor in expected.items():
                dataset = f[group][name]
                dtype = text(dataset.attrs["dtype"])
                check(dtype == str(tensor.dtype).replace("torch.", ""), f"{group}/{name}: dtype {dtype}")
                check(dataset.fletcher32 and dataset.shape == tuple(tensor.shape), f"{group}/{name}: Fletcher-32, shape")
                if tensor.dtype == torch.bfloat16:
                    want = tensor.view(torch.int16).numpy().view(np.uint16)
                    check(dataset.dtype == np.uint16, f"{group}/{name}: bf16 stored as uint16 bits")
                else:
                    want = tensor.numpy()
                    check(dataset.dtype == want.dtype, f"{group}/{name}: HDF5 dtype {dataset.dtype}")
                check(np.array_equal(dataset[()], want), f"{group}/{name}: bit-exact")
        check(int(f["optimizer"].attrs["step"]) == 300, "optimizer step")
        check(dict(f["scheduler"].attrs) == {"last_epoch": 17.0, "base_lr": 0.0005}, "scheduler attributes")
        torch.manual_seed(1234)  # the driver seeded its CPU generator with 1234 before capturing it
        state = torch.get_rng_state().numpy()
        check(f["rng/cpu"].dtype == np.uint8 and np.array_equal(f["rng/cpu"][()], state),
              "rng/cpu = torch.get_rng_state() after torch.manual_seed(1234), byte for byte")

        o = f["omega"]
        check((text(o.attrs["method"]), int(o.attrs["seed"]), int(o.attrs["c"])) == ("grebsmo", 7, 2), "omega attributes")
        for name, (indices, shape) in omega.items():
            check(np.array_equal(o[name][()], indices.numpy()) and list(o[name].attrs["shape"]) == list(shape),
                  f"omega/{name}")
        p = f["plan"]
        check(text(p.attrs["kind"]) == "unstructured+heads", "plan kind")
        for name, mask in masks.items():
            d = p["masks"][name]
            numel = int(d.attrs["numel"])
            encoding = text(d.attrs["encoding"])
            if encoding == "bits":
                got = np.unpackbits(d[()])[:numel].astype(bool)
            else:
                got = np.full(numel, encoding == "zero_indices")
                got[d[()]] = encoding == "one_indices"
            check(np.array_equal(got.reshape(mask.shape), mask.numpy()), f"plan/masks/{name} ({text(d.attrs['encoding'])})")
        check(p["heads"]["3"][()].tolist() == [1, 2], "plan/heads/3")

    listing = subprocess.run(["h5dump", "-H", path], capture_output=True, text=True)
    check(listing.returncode == 0 and 'DATASET "classifier.weight"' in listing.stdout
          and 'ATTRIBUTE "model_weights_hash"' in listing.stdout, "h5dump -H lists datasets and attributes")
finally:
    shutil.rmtree(folder)


# The schema as `dsee run` writes it (README.md "Checkpoints"). The table's
# /scheduler row lists the keys; the run's trainer writes exactly those.
SCHEDULER_KEYS = {"step", "skipped_steps", "best_metric", "best_step", "evaluations_without_gain", "metrics_bytes"}
RUN_RECIPE = """
[run]
name = "ck"
device = "cpu"
[task]
name = "demo"
train_size = 32
dev_size = 16
[tuning]
method = "dsee"
rank = 2
[omega]
c = 4
variant = "tolerance"
max_rank = 2
[train]
epochs = 1
batch_size = 8
[ckpt]
every = 2
"""

folder = tempfile.mkdtemp()
try:
    recipe = os.path.join(folder, "r.toml")
    with open(recipe, "w") as f:
        f.write(RUN_RECIPE.replace('name = "ck"', f'name = "ck"\nout_dir = "{folder}/runs"'))
    subprocess.run([DSEE, "run", recipe], check=True, capture_output=True)
    run_dir = os.path.join(folder, "runs", "ck")
    path = os.path.join(run_dir, "ckpt", "step-2.h5")
    with h5py.File(path, "r") as f:
        step = int(f.attrs["step"])
        check(step == 2 and text(f.attrs["kind"]) == "dsee-checkpoint", f"dsee run: step-2.h5 has step {step}")
        trainable = {name: f["trainable"][name][()] for name in f["trainable"]}
        check(len(trainable) > 2, f"dsee run: {len(trainable)} trainable tensors")
        expected = set()
        for name, value in trainable.items():
            expected |= {f"{name}.exp_avg", f"{name}.exp_avg_sq", f"{name}.step"}
        optimizer = f["optimizer"]
        check(set(optimizer) == expected, f"dsee run: /optimizer names are <param>.exp_avg/.exp_avg_sq/.step "
                                          f"(extra {sorted(set(optimizer) - expected)[:3]}, missing {sorted(expected - set(optimizer))[:3]})")
        for name, value in trainable.items():
            for moment in ("exp_avg", "exp_avg_sq"):
                d = optimizer.get(f"{name}.{moment}")
                ok = d is not None and d.dtype == np.float32 and d.shape == value.shape and text(d.attrs["dtype"]) == "float32"
                check(ok, f"dsee run: /optimizer/{name}.{moment} float32 of shape {value.shape}")
            d = optimizer.get(f"{name}.step")
            check(d is not None and d.dtype == np.int64 and d.shape == () and int(d[()]) == step,
                  f"dsee run: /optimizer/{name}.step is an int64 scalar = {step}")
        check(bool((optimizer[next(iter(trainable)) + ".exp_avg_sq"][()] >= 0).all()), "dsee run: exp_avg_sq >= 0")
        scheduler = f["scheduler"]
        check(set(scheduler.attrs) == SCHEDULER_KEYS, f"dsee run: /scheduler keys {sorted(scheduler.attrs)}")
        check(all(np.asarray(scheduler.attrs[k]).dtype == np.float64 for k in scheduler.attrs),
              "dsee run: /scheduler values are float64")
        check(int(scheduler.attrs["step"]) == step, "dsee run: /scheduler step equals the checkpoint's")
        metrics_bytes = int(scheduler.attrs["metrics_bytes"])
        with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as m:
            metrics = m.read()
        check(0 < metrics_bytes <= len(metrics) and metrics[metrics_bytes - 1:metrics_bytes] == b"\n",
              f"dsee run: metrics_bytes {metrics_bytes} ends a line of metrics.jsonl")
        rng = torch.from_numpy(f["rng"]["cpu"][()].copy())
        saved = torch.get_rng_state()
        torch.set_rng_state(rng)
        torch.rand(3)
        torch.set_rng_state(saved)
        check(rng.dtype == torch.uint8, "dsee run: /rng/cpu is accepted by torch.set_rng_state")
finally:
    shutil.rmtree(folder)

if failures:
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("all passed")
