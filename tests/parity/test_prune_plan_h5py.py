"""Parity: masks.h5 (core/sparsity/prune_plan.h) read and written by h5py + numpy.

1. Python makes masks (dense-zero ones → "bits", nearly-all-ones →
   "zero_indices", nearly-all-zeros → "one_indices", odd sizes for the
   padding) and head ids, dsee_parity's prune-plan-write writes masks.h5 from
   them, and h5py reads the file by the documented layout
   (docs/checkpoints.md, 'masks.h5'): bits unpacked with numpy.unpackbits (MSB
   first) and cut to numel, zero indices scattered into ones, one indices
   into zeros; compared exactly with the masks Python generated.
2. h5py writes a masks.h5 of its own (no creation order, every encoding) and
   prune-plan-read reads it back; compared exactly.
"""
import os

import h5py
import numpy as np

from harness import check, check_equal


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


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def decode(dataset):
    rows, cols = (int(v) for v in dataset.attrs["shape"])
    numel = int(dataset.attrs["numel"])
    encoding = text(dataset.attrs["encoding"])
    data = dataset[()]
    if encoding == "bits":
        check_equal(f"{dataset.name}: bits stored as", str(data.dtype), "uint8")
        flat = np.unpackbits(data)[:numel]
    else:
        check(f"{dataset.name}: indices stored as int64", data.dtype == np.int64, f"{data.dtype} {encoding}")
        check(f"{dataset.name}: a known encoding", encoding in ("zero_indices", "one_indices"), encoding)
        listed = 1 if encoding == "one_indices" else 0
        flat = np.full(numel, 1 - listed, np.uint8)
        flat[data] = listed
    return flat.reshape(rows, cols), encoding, numel


def test_dsee_writes_h5py_reads(parity, tmp_path):
    masks = expected_masks()
    heads = {0: [1, 3], 5: [0, 2, 11]}
    path = os.path.join(tmp_path, "masks.h5")
    parity("prune-plan-write", {"plan": path, "heads": {str(k): v for k, v in heads.items()}},
           {"mask." + name: mask for name, (mask, _) in masks.items()})

    with h5py.File(path, "r") as f:
        check_equal("format_version", int(f.attrs["format_version"]), 1)
        check_equal("kind", text(f.attrs["kind"]), "unstructured+heads")
        check_equal("mask dataset names", sorted(f["masks"].keys()), sorted(masks))
        for name, (mask, encoding) in masks.items():
            dataset = f["masks"][name]
            got, got_encoding, numel = decode(dataset)
            check_equal(f"{name}: encoding", got_encoding, encoding)
            check(f"{name}: shape/numel", numel == mask.size and list(dataset.attrs["shape"]) == list(mask.shape))
            # Empty datasets (no positions to list) stay contiguous: nothing to checksum.
            check(f"{name}: Fletcher-32 on unless empty", dataset.fletcher32 == (dataset.size > 0))
            check_equal(f"{name}: unpacked mask equals the generated one", got, mask)
        check_equal("head layers", sorted(int(k) for k in f["heads"].keys()), sorted(heads))
        for layer, ids in heads.items():
            data = f["heads"][str(layer)][()]
            check(f"heads/{layer} is int64", data.dtype == np.int64, f"{data.dtype}")
            check_equal(f"heads/{layer}", data.tolist(), ids)


def test_h5py_writes_dsee_reads(parity, tmp_path):
    masks = expected_masks()
    path = os.path.join(tmp_path, "from_h5py.h5")
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
    result = parity("prune-plan-read", {"plan": path}, out=True)
    read = result.arrays
    check_equal("dsee read masks", sorted(name for name, _, _ in result.json["masks"]), sorted(masks))
    for name, (mask, _) in masks.items():
        check_equal(f"{name}: dsee decoded h5py's file exactly", read["mask." + name], mask)
    check_equal("dsee read heads", result.json["heads"], {"3": [0, 4]})
