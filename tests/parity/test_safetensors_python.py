"""dsee's safetensors reader and writer against the Python safetensors library
(the reference, 0.8.0 in .venv):

- dsee reads files Python wrote bit-exactly: every dtype, NaN/inf/-0/subnormal
  fp16 and bf16, empty and 0-d tensors, names that need JSON escapes;
- a file dsee rewrites (read, then safetensors_save) is byte-identical to
  Python's, and Python's load_file reads it back bit-exactly;
- sharded checkpoints written by huggingface_hub read the same as one file;
- files Python rejects, dsee rejects too (and the two deliberate differences
  stay as documented in core/io/safetensors_header.cpp).
"""
import json
import os
import struct

import pytest
import torch
from huggingface_hub import save_torch_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from harness import check, check_equal


def fnv1a(tensor):
    data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return str(h)


DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}


def same_bits(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def check_described(described, tensors, what):
    """dsee's description (safetensors-describe) names, dtypes, shapes and bytes equal `tensors`'."""
    check_equal(f"{what}: names", sorted(described), sorted(tensors))
    for name, tensor in tensors.items():
        got = described[name]
        check_equal(f"{what}: {name!r} dtype", got["dtype"], DTYPE_NAMES[tensor.dtype])
        check_equal(f"{what}: {name!r} shape", got["shape"], list(tensor.shape))
        check_equal(f"{what}: {name!r} bytes (FNV-1a)", got["fnv1a"], fnv1a(tensor))


def test_every_dtype_both_ways(parity, tmp_path):
    torch.manual_seed(0)
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, 6e-8, 65504.0, 3.0e38, -2.5])
    tensors = {
        "f32": torch.randn(7, 3),
        "f16": torch.cat([torch.randn(5), special]).half(),
        "bf16": torch.cat([torch.randn(5), special]).bfloat16(),
        "f32_special": special,
        "f64": torch.randn(2, 2, dtype=torch.float64),
        "i64": torch.randint(-2**62, 2**62, (3,), dtype=torch.int64),
        "i32": torch.randint(-2**31, 2**31 - 1, (4, 1), dtype=torch.int32),
        "i16": torch.randint(-2**15, 2**15 - 1, (5,), dtype=torch.int16),
        "i8": torch.randint(-128, 127, (3,), dtype=torch.int8),
        "u8": torch.randint(0, 255, (3, 3), dtype=torch.uint8),
        "bool": torch.rand(11) > 0.5,
        "empty": torch.zeros(0, 4),
        "empty_i64": torch.zeros(3, 0, dtype=torch.int64),
        "scalar": torch.tensor(3.25),
        "bert.encoder.layer.0.attention.self.query.weight": torch.randn(6, 6),
        'naïve "quoted"\tname\\': torch.ones(2, dtype=torch.bfloat16),
    }
    python_file = os.path.join(tmp_path, "python.safetensors")
    save_file(tensors, python_file, metadata={"format": "pt"})
    check_described(parity("safetensors-describe", {"in": python_file}).json, tensors, "dsee reads Python's file")

    dsee_file = parity("safetensors-copy", {"in": python_file}, out=True).out_path
    with open(python_file, "rb") as a, open(dsee_file, "rb") as b:
        check("dsee's rewrite is byte-identical to Python's file", a.read() == b.read())
    reloaded = load_file(dsee_file)
    check_equal("Python reads every name from dsee's file", sorted(reloaded), sorted(tensors))
    for name, tensor in tensors.items():
        check(f"Python reads {name!r} from dsee bit-exactly", same_bits(reloaded[name], tensor))


def test_metadata_round_trip(parity, tmp_path):
    # Two metadata keys: Python's order depends on a hash map, so only the
    # content is compared.
    metadata = {"format": "pt", "note": "two keys, any order"}
    python_file = os.path.join(tmp_path, "python.safetensors")
    save_file({"x": torch.arange(5)}, python_file, metadata=metadata)
    dsee_file = parity("safetensors-copy", {"in": python_file}, out=True).out_path
    with safe_open(dsee_file, framework="pt") as f:
        check_equal("metadata after a round trip", f.metadata(), metadata)
        check("tensor x after a metadata round trip", torch.equal(f.get_tensor("x"), torch.arange(5)))


def test_sharded_checkpoint(parity, tmp_path):
    sharded = os.path.join(tmp_path, "sharded")
    shard_tensors = {f"layer.{i}.weight": torch.randn(16, 16) for i in range(6)}
    shard_tensors["layer.0.bias"] = torch.randn(16).bfloat16()
    os.makedirs(sharded)
    save_torch_state_dict(shard_tensors, sharded, max_shard_size=2500)
    shards = sorted(p for p in os.listdir(sharded) if p.endswith(".safetensors"))
    check("huggingface_hub wrote shards and an index",
          len(shards) > 1 and os.path.exists(os.path.join(sharded, "model.safetensors.index.json")),
          f"{os.listdir(sharded)}")
    check_described(parity("safetensors-describe", {"in": sharded}).json, shard_tensors,
                    "dsee reads huggingface_hub's shards")
    os.remove(os.path.join(sharded, shards[-1]))
    described = parity.run("safetensors-describe", {"in": sharded})
    check("a missing shard is refused", described.returncode == 1 and "is missing" in described.stderr,
          described.stderr.strip())


# ------------------------------------------------------------ bad files
def raw_file(folder, name, header, data=b"", length=None):
    path = os.path.join(folder, name)
    header = header.encode() if isinstance(header, str) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def short_file(folder, name, data):
    """A file of `data` alone, shorter than the 8-byte header length."""
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def python_accepts(path):
    try:
        load_file(path)
        return True
    except SafetensorError:
        return False


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


BAD_FILES = {
    "truncated below the length": lambda d: short_file(d, "short.safetensors", b"\x05\0\0"),
    "header length past the file": lambda d: raw_file(d, "long.safetensors", "{}", length=64),
    "data truncated": lambda d: raw_file(d, "cut.safetensors", json.dumps({"a": entry("F32", [2], 0, 8)}), b"\0" * 6),
    "overlapping offsets": lambda d: raw_file(d, "overlap.safetensors", json.dumps(
        {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}), b"\0" * 12),
    "byte size not numel x dtype size": lambda d: raw_file(d, "size.safetensors",
                                                           json.dumps({"a": entry("F32", [3], 0, 8)}), b"\0" * 8),
    "unknown dtype": lambda d: raw_file(d, "dtype.safetensors", json.dumps({"a": entry("F33", [2], 0, 8)}), b"\0" * 8),
    "negative shape": lambda d: raw_file(d, "neg.safetensors", json.dumps({"a": entry("F32", [-2], 0, 8)}), b"\0" * 8),
    "not JSON": lambda d: raw_file(d, "json.safetensors", "{\"a\":", b""),
    "metadata value not a string": lambda d: raw_file(d, "meta.safetensors", json.dumps({"__metadata__": {"k": 1}}),
                                                      b""),
}


def test_well_formed_file_read_by_both(parity, tmp_path):
    good = raw_file(tmp_path, "good.safetensors", json.dumps({"a": entry("F32", [2], 0, 8)}), b"\0" * 8)
    check("both read the well-formed file",
          python_accepts(good) and parity.run("safetensors-describe", {"in": good}).returncode == 0)


@pytest.mark.parametrize("what", BAD_FILES)
def test_bad_file_rejected_by_both(what, parity, tmp_path):
    path = BAD_FILES[what](str(tmp_path))
    result = parity.run("safetensors-describe", {"in": path})
    check(f"Python rejects: {what}", not python_accepts(path))
    check(f"dsee rejects, naming the file: {what}",
          result.returncode == 1 and os.path.basename(path) in result.stderr,
          f"rc {result.returncode}, {result.stderr.strip()}")


def test_deliberate_differences(parity, tmp_path):
    # Note [What the header may say] in core/io/safetensors_header.cpp.
    duplicate = raw_file(tmp_path, "dup.safetensors", '{"a":' + json.dumps(entry("U8", [1], 0, 1)) + ',"a":'
                         + json.dumps(entry("U8", [1], 0, 1)) + "}", b"x")
    check("a duplicate name: Python keeps one silently, dsee rejects it",
          python_accepts(duplicate) and parity.run("safetensors-describe", {"in": duplicate}).returncode == 1)
    gap = raw_file(tmp_path, "gap.safetensors", json.dumps({"a": entry("U8", [1], 1, 2)}), b"xy")
    check("a gap before a tensor: Python rejects, dsee reads it",
          not python_accepts(gap) and parity.run("safetensors-describe", {"in": gap}).returncode == 0)
