"""Parity: a dsee checkpoint opened with h5py (and h5dump) by the schema
docs/checkpoints.md documents, checked against values Python made.

Python writes the tensors (fp32, bf16, int64, bool masks, Ω indices) and a
tiny model folder; dsee_parity's checkpoint mode writes a checkpoint from
them. Then, using only h5py / numpy / hashlib:
  - root attributes, the config text and its hash64 (reimplemented here from
    the documented algorithm, docs/checkpoints.md 'Hashes'), the model
    weights hash (same), versions;
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
"""
import hashlib
import json
import os
import struct
import subprocess

import h5py
import numpy as np
import torch
from safetensors.torch import save_file

from harness import check, check_equal
from harness.runs import write_recipe

MASK64 = (1 << 64) - 1


def hash64(data: bytes) -> int:
    """dsee-hash64 as docs/checkpoints.md ('Hashes') documents it."""
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


CONFIG = '[model]\npath = "tiny"\n\n[train]\nlr = 0.0005\nbatch_size = 32\n'


def test_checkpoint_read_by_h5py(parity, tmp_path):
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

    tensors = {"trainable." + k: v for k, v in trainable.items()}
    tensors.update({"optimizer." + k: v for k, v in optimizer.items()})
    tensors.update({"best." + k: v for k, v in best.items()})
    for name, (indices, shape) in omega.items():
        tensors["omega." + name] = indices
        tensors["omega_shape." + name] = torch.tensor(shape)
    tensors.update({"mask." + k: v for k, v in masks.items()})
    model_dir = os.path.join(tmp_path, "model")
    os.makedirs(model_dir)
    save_file({"embeddings.word_embeddings.weight": torch.randn(10, 6, generator=g),
               "pooler.dense.bias": torch.randn(6, generator=g).to(torch.bfloat16)},
              os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})

    ckpt = os.path.join(tmp_path, "ckpt")
    for step in (100, 200, 300):
        written = parity("checkpoint", {"checkpoint_dir": ckpt, "step": step, "config_text": CONFIG,
                                        "model": model_dir}, tensors).json
    check_equal("keep_last 2", sorted(os.listdir(ckpt)),
                ["latest", "step-200.h5", "step-200.h5.sum", "step-300.h5", "step-300.h5.sum"])
    check_equal("latest names step-300.h5", open(os.path.join(ckpt, "latest")).read(), "step-300.h5\n")
    path = os.path.join(ckpt, "step-300.h5")
    check_equal("the driver's checkpoint path", written["path"], path)

    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    check_equal("sidecar = hashlib SHA-256, sha256sum format", open(path + ".sum").read(),
                f"{digest}  step-300.h5\n")
    check("sha256sum -c accepts the sidecar",
          subprocess.run(["sha256sum", "-c", "step-300.h5.sum"], cwd=ckpt, capture_output=True).returncode == 0)

    with h5py.File(path, "r") as f:
        a = f.attrs
        check("format_version 1, kind", int(a["format_version"]) == 1 and text(a["kind"]) == "dsee-checkpoint")
        check_equal("step, epoch, sample_index", (int(a["step"]), int(a["epoch"]), int(a["sample_index"])),
                    (300, 2, 4321))
        check_equal("model_path", text(a["model_path"]), model_dir)
        expected_model_hash = model_weights_hash(os.path.join(model_dir, "model.safetensors"))
        check(f"model_weights_hash {int(a['model_weights_hash']):016x} = Python's {expected_model_hash:016x}",
              a["model_weights_hash"].dtype == np.uint64 and int(a["model_weights_hash"]) == expected_model_hash)
        check_equal("the driver reported the same model hash", written["model_weights_hash"], expected_model_hash)
        check(f"torch_version {text(a['torch_version'])}",
              text(a["torch_version"]).startswith(torch.__version__.split("+")[0]))
        check("hdf5_version, dsee_version", text(a["hdf5_version"]) != "" and text(a["dsee_version"]) != "")

        check_equal("config text", f["config"].asstr()[()], CONFIG)
        check_equal("config hash = Python hash64 of the text", int(f["config"].attrs["hash"]), hash64(CONFIG.encode()))

        for group, expected in (("trainable", trainable), ("best", best), ("optimizer", optimizer)):
            check_equal(f"{group} names", sorted(f[group].keys()), sorted(expected))
            for name, tensor in expected.items():
                dataset = f[group][name]
                check_equal(f"{group}/{name}: dtype attribute", text(dataset.attrs["dtype"]),
                            str(tensor.dtype).replace("torch.", ""))
                check(f"{group}/{name}: Fletcher-32, shape",
                      dataset.fletcher32 and dataset.shape == tuple(tensor.shape))
                if tensor.dtype == torch.bfloat16:
                    want = tensor.view(torch.int16).numpy().view(np.uint16)
                    check(f"{group}/{name}: bf16 stored as uint16 bits", dataset.dtype == np.uint16)
                else:
                    want = tensor.numpy()
                    check(f"{group}/{name}: HDF5 dtype {dataset.dtype}", dataset.dtype == want.dtype)
                check(f"{group}/{name}: bit-exact", np.array_equal(dataset[()], want))
        check_equal("optimizer step", int(f["optimizer"].attrs["step"]), 300)
        check_equal("scheduler attributes", dict(f["scheduler"].attrs), {"last_epoch": 17.0, "base_lr": 0.0005})
        torch.manual_seed(1234)  # the driver seeded its CPU generator with 1234 before capturing it
        state = torch.get_rng_state().numpy()
        check("rng/cpu = torch.get_rng_state() after torch.manual_seed(1234), byte for byte",
              f["rng/cpu"].dtype == np.uint8 and np.array_equal(f["rng/cpu"][()], state))

        o = f["omega"]
        check_equal("omega attributes", (text(o.attrs["method"]), int(o.attrs["seed"]), int(o.attrs["c"])),
                    ("grebsmo", 7, 2))
        for name, (indices, shape) in omega.items():
            check(f"omega/{name}",
                  np.array_equal(o[name][()], indices.numpy()) and list(o[name].attrs["shape"]) == list(shape))
        p = f["plan"]
        check_equal("plan kind", text(p.attrs["kind"]), "unstructured+heads")
        for name, mask in masks.items():
            d = p["masks"][name]
            numel = int(d.attrs["numel"])
            encoding = text(d.attrs["encoding"])
            if encoding == "bits":
                got = np.unpackbits(d[()])[:numel].astype(bool)
            else:
                got = np.full(numel, encoding == "zero_indices")
                got[d[()]] = encoding == "one_indices"
            check(f"plan/masks/{name} ({encoding})", np.array_equal(got.reshape(mask.shape), mask.numpy()))
        check_equal("plan/heads/3", p["heads"]["3"][()].tolist(), [1, 2])

    listing = subprocess.run(["h5dump", "-H", path], capture_output=True, text=True)
    check("h5dump -H lists datasets and attributes",
          listing.returncode == 0 and 'DATASET "classifier.weight"' in listing.stdout
          and 'ATTRIBUTE "model_weights_hash"' in listing.stdout)


# The schema as `dsee run` writes it (docs/checkpoints.md 'Schema'). The
# table's /scheduler row lists the keys; the run's trainer writes exactly those.
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


def test_dsee_run_checkpoint_read_by_h5py(dsee, tmp_path):
    recipe = write_recipe(tmp_path, RUN_RECIPE.replace('name = "ck"', f'name = "ck"\nout_dir = "{tmp_path}/runs"'),
                          "r.toml")
    subprocess.run([dsee, "run", recipe], check=True, capture_output=True)
    run_dir = os.path.join(tmp_path, "runs", "ck")
    path = os.path.join(run_dir, "ckpt", "step-2.h5")
    with h5py.File(path, "r") as f:
        step = int(f.attrs["step"])
        check(f"dsee run: step-2.h5 has step {step}", step == 2 and text(f.attrs["kind"]) == "dsee-checkpoint")
        trainable = {name: f["trainable"][name][()] for name in f["trainable"]}
        check(f"dsee run: {len(trainable)} trainable tensors", len(trainable) > 2)
        expected = set()
        for name in trainable:
            expected |= {f"{name}.exp_avg", f"{name}.exp_avg_sq", f"{name}.step"}
        optimizer = f["optimizer"]
        check_equal("dsee run: /optimizer names are <param>.exp_avg/.exp_avg_sq/.step", sorted(optimizer),
                    sorted(expected))
        for name, value in trainable.items():
            for moment in ("exp_avg", "exp_avg_sq"):
                d = optimizer.get(f"{name}.{moment}")
                ok = d is not None and d.dtype == np.float32 and d.shape == value.shape and \
                    text(d.attrs["dtype"]) == "float32"
                check(f"dsee run: /optimizer/{name}.{moment} float32 of shape {value.shape}", ok)
            d = optimizer.get(f"{name}.step")
            check(f"dsee run: /optimizer/{name}.step is an int64 scalar = {step}",
                  d is not None and d.dtype == np.int64 and d.shape == () and int(d[()]) == step)
        check("dsee run: exp_avg_sq >= 0", bool((optimizer[next(iter(trainable)) + ".exp_avg_sq"][()] >= 0).all()))
        scheduler = f["scheduler"]
        check_equal("dsee run: /scheduler keys", set(scheduler.attrs), SCHEDULER_KEYS)
        check("dsee run: /scheduler values are float64",
              all(np.asarray(scheduler.attrs[k]).dtype == np.float64 for k in scheduler.attrs))
        check_equal("dsee run: /scheduler step equals the checkpoint's", int(scheduler.attrs["step"]), step)
        metrics_bytes = int(scheduler.attrs["metrics_bytes"])
        with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as m:
            metrics = m.read()
        check(f"dsee run: metrics_bytes {metrics_bytes} ends a line of metrics.jsonl",
              0 < metrics_bytes <= len(metrics) and metrics[metrics_bytes - 1:metrics_bytes] == b"\n")
        rng = torch.from_numpy(f["rng"]["cpu"][()].copy())
        saved = torch.get_rng_state()
        torch.set_rng_state(rng)
        torch.rand(3)
        torch.set_rng_state(saved)
        check("dsee run: /rng/cpu is accepted by torch.set_rng_state", rng.dtype == torch.uint8)
