"""Parity: masks.h5 (core/sparsity/prune_plan.h) read and written by h5py + numpy.

1. Python makes masks (dense-zero ones → "bits", nearly-all-ones → "zero_indices",
   nearly-all-zeros → "one_indices", odd sizes for the padding) and head ids, prune_plan_tool writes masks.h5 from
   them, and h5py reads the file by the documented layout: bits unpacked with
   numpy.unpackbits (MSB first) and cut to numel, zero indices scattered into
   ones, one indices into zeros; compared exactly with the masks Python generated.
2. h5py writes a masks.h5 of its own (no creation order, every encoding) and
   prune_plan_tool reads it back; compared exactly.

usage: test_prune_plan_h5py.py path/to/prune_plan_tool
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

TOOL = sys.argv[1]
failures = []


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message)
    if not ok:
        failures.append(message)


def expected_masks():
    rng = np.random.default_rng(5)
    dense = (rng.random((37, 29)) >= 0.4).astype(np.uint8)      # ~40% zeros → bits
    sparse = np.ones((48, 50), np.uint8)                           # 3 zeros in 2400 → zero_indices
    sparse.flat[[0, 1234, 2399]] = 0
    all_ones = np.ones((3, 5), np.uint8)                            # no zeros → zero_indices, empty
    all_zeros = np.zeros((2, 3), np.uint8)                          # no ones → one_indices, empty
    few_ones = np.zeros((41, 30), np.uint8)                         # 2 ones in 1230 → one_indices
    few_ones.flat[[7, 1229]] = 1
    half = np.zeros((2, 3), np.uint8)                               # bits, 6 entries: padding
    half.flat[[0, 4, 5]] = 1
    return {"encoder.layer.0.attention.self.query": (dense, "bits"),
            "encoder.layer.0.attention.self.value": (sparse, "zero_indices"),
            "encoder.layer.1.attention.self.query": (all_ones, "zero_indices"),
            "h.0.attn.c_attn": (all_zeros, "one_indices"),
            "h.1.attn.c_attn": (few_ones, "one_indices"),
            "h.2.attn.c_attn": (half, "bits")}


def decode(dataset):
    rows, cols = (int(v) for v in dataset.attrs["shape"])
    numel = int(dataset.attrs["numel"])
    encoding = dataset.attrs["encoding"]
    encoding = encoding.decode() if isinstance(encoding, bytes) else encoding
    data = dataset[()]
    if encoding == "bits":
        assert data.dtype == np.uint8, data.dtype
        flat = np.unpackbits(data)[:numel]
    else:
        assert data.dtype == np.int64 and encoding in ("zero_indices", "one_indices"), (data.dtype, encoding)
        listed = 1 if encoding == "one_indices" else 0
        flat = np.full(numel, 1 - listed, np.uint8)
        flat[data] = listed
    return flat.reshape(rows, cols), encoding, numel


def dsee_writes_h5py_reads(folder):
    masks = expected_masks()
    heads = {0: [1, 3], 5: [0, 2, 11]}
    args = [TOOL, "write", os.path.join(folder, "masks.h5")]
    for name, (mask, _) in masks.items():
        raw = os.path.join(folder, name + ".in.raw")
        mask.tofile(raw)
        args.append(f"mask={name}:{mask.shape[0]}:{mask.shape[1]}:{raw}")
    for layer, ids in heads.items():
        args.append(f"heads={layer}:{','.join(map(str, ids))}")
    subprocess.run(args, check=True)

    with h5py.File(os.path.join(folder, "masks.h5"), "r") as f:
        check(int(f.attrs["format_version"]) == 1, "format_version is 1")
        kind = f.attrs["kind"]
        check((kind.decode() if isinstance(kind, bytes) else kind) == "unstructured+heads", f"kind: {kind}")
        check(sorted(f["masks"].keys()) == sorted(masks), "mask dataset names")
        for name, (mask, encoding) in masks.items():
            dataset = f["masks"][name]
            got, got_encoding, numel = decode(dataset)
            check(got_encoding == encoding, f"{name}: encoding {got_encoding}")
            check(numel == mask.size and list(dataset.attrs["shape"]) == list(mask.shape), f"{name}: shape/numel")
            # Empty datasets (no positions to list) stay contiguous: nothing to checksum.
            check(dataset.fletcher32 == (dataset.size > 0), f"{name}: Fletcher-32 on unless empty")
            check(np.array_equal(got, mask), f"{name}: unpacked mask equals the generated one")
        check(sorted(int(k) for k in f["heads"].keys()) == sorted(heads), "head layers")
        for layer, ids in heads.items():
            data = f["heads"][str(layer)][()]
            check(data.dtype == np.int64 and data.tolist() == ids, f"heads/{layer} = {data.tolist()}")


def h5py_writes_dsee_reads(folder):
    masks = expected_masks()
    path = os.path.join(folder, "from_h5py.h5")
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = np.int64(1)
        f.attrs["kind"] = "unstructured+heads"
        group = f.create_group("masks")
        for name, (mask, encoding) in masks.items():
            if encoding == "bits":
                data = np.packbits(mask.reshape(-1))
            else:
                listed = 1 if encoding == "one_indices" else 0
                data = np.flatnonzero(mask.reshape(-1) == listed).astype(np.int64)
            dataset = group.create_dataset(name, data=data)
            dataset.attrs["shape"] = np.array(mask.shape, np.int64)
            dataset.attrs["encoding"] = encoding
            dataset.attrs["numel"] = np.int64(mask.size)
        f.create_group("heads").create_dataset("3", data=np.array([0, 4], np.int64))
    out = subprocess.run([TOOL, "read", path, folder], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    read_names = [line.split()[1] for line in lines if line.startswith("mask ")]
    check(sorted(read_names) == sorted(masks), f"dsee read masks {read_names}")
    for name, (mask, _) in masks.items():
        got = np.fromfile(os.path.join(folder, name + ".raw"), np.uint8).reshape(mask.shape)
        check(np.array_equal(got, mask), f"{name}: dsee decoded h5py's file exactly")
    check("heads 3 0 4" in lines, "dsee read heads/3 = [0, 4]")


with tempfile.TemporaryDirectory() as folder:
    dsee_writes_h5py_reads(folder)
with tempfile.TemporaryDirectory() as folder:
    h5py_writes_dsee_reads(folder)

if failures:
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("all passed")
