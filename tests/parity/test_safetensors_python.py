"""dsee's safetensors reader and writer against the Python safetensors library
(the reference, 0.8.0 in .venv):

- dsee reads files Python wrote bit-exactly: every dtype, NaN/inf/-0/subnormal
  fp16 and bf16, empty and 0-d tensors, names that need JSON escapes;
- a file dsee rewrites (read, then safetensors_save) is byte-identical to
  Python's, and Python's load_file reads it back bit-exactly;
- sharded checkpoints written by huggingface_hub read the same as one file;
- files Python rejects, dsee rejects too (and the two deliberate differences
  stay as documented in core/io/safetensors_header.cpp).

usage: test_safetensors_python.py SAFETENSORS_TOOL WORKDIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import torch
from huggingface_hub import save_torch_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

tool, workdir = sys.argv[1], sys.argv[2]
shutil.rmtree(workdir, ignore_errors=True)
os.makedirs(workdir)
failures = []
passed = 0


def check(condition, what):
    global passed
    if condition:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL: {what}")


def run_tool(*args):
    return subprocess.run([tool, *args], capture_output=True, text=True)


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


def expect_same_tensors(dsee_json, tensors, what):
    check(sorted(dsee_json) == sorted(tensors), f"{what}: names {sorted(dsee_json)} != {sorted(tensors)}")
    for name, tensor in tensors.items():
        got = dsee_json.get(name)
        if got is None:
            continue
        check(got["dtype"] == DTYPE_NAMES[tensor.dtype], f"{what}: {name!r} dtype {got['dtype']}")
        check(got["shape"] == list(tensor.shape), f"{what}: {name!r} shape {got['shape']} != {list(tensor.shape)}")
        check(got["fnv1a"] == fnv1a(tensor), f"{what}: {name!r} bytes differ")


# ------------------------------------------------------------ every dtype
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
python_file = os.path.join(workdir, "python.safetensors")
save_file(tensors, python_file, metadata={"format": "pt"})

described = run_tool("describe", python_file)
check(described.returncode == 0, f"describe python.safetensors: {described.stderr}")
if described.returncode == 0:
    expect_same_tensors(json.loads(described.stdout), tensors, "dsee reads Python's file")

dsee_file = os.path.join(workdir, "dsee.safetensors")
copied = run_tool("copy", python_file, dsee_file)
check(copied.returncode == 0, f"copy: {copied.stderr}")
if copied.returncode == 0:
    with open(python_file, "rb") as a, open(dsee_file, "rb") as b:
        check(a.read() == b.read(), "dsee's rewrite is byte-identical to Python's file")
    reloaded = load_file(dsee_file)
    check(sorted(reloaded) == sorted(tensors), "Python reads every name from dsee's file")
    for name, tensor in tensors.items():
        check(name in reloaded and same_bits(reloaded[name], tensor), f"Python reads {name!r} from dsee bit-exactly")

# Two metadata keys: Python's order depends on a hash map, so only the
# content is compared.
metadata = {"format": "pt", "note": "two keys, any order"}
save_file({"x": torch.arange(5)}, python_file, metadata=metadata)
copied = run_tool("copy", python_file, dsee_file)
check(copied.returncode == 0, f"copy with metadata: {copied.stderr}")
from safetensors import safe_open  # noqa: E402

with safe_open(dsee_file, framework="pt") as f:
    check(f.metadata() == metadata, f"metadata {f.metadata()} != {metadata}")
    check(torch.equal(f.get_tensor("x"), torch.arange(5)), "tensor x after a metadata round trip")

# ------------------------------------------------------------ sharded
sharded = os.path.join(workdir, "sharded")
shard_tensors = {f"layer.{i}.weight": torch.randn(16, 16) for i in range(6)}
shard_tensors["layer.0.bias"] = torch.randn(16).bfloat16()
os.makedirs(sharded)
save_torch_state_dict(shard_tensors, sharded, max_shard_size=2500)
shards = sorted(p for p in os.listdir(sharded) if p.endswith(".safetensors"))
check(len(shards) > 1 and os.path.exists(os.path.join(sharded, "model.safetensors.index.json")),
      f"huggingface_hub wrote shards and an index: {os.listdir(sharded)}")
described = run_tool("describe", sharded)
check(described.returncode == 0, f"describe sharded: {described.stderr}")
if described.returncode == 0:
    expect_same_tensors(json.loads(described.stdout), shard_tensors, "dsee reads huggingface_hub's shards")
os.remove(os.path.join(sharded, shards[-1]))
described = run_tool("describe", sharded)
check(described.returncode == 1 and "is missing" in described.stderr, f"missing shard: {described.stderr}")


# ------------------------------------------------------------ bad files
def raw_file(name, header, data=b"", length=None):
    path = os.path.join(workdir, name)
    header = header.encode() if isinstance(header, str) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def python_accepts(path):
    try:
        load_file(path)
        return True
    except SafetensorError:
        return False


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


good = raw_file("good.safetensors", json.dumps({"a": entry("F32", [2], 0, 8)}), b"\0" * 8)
bad_files = {
    "truncated below the length": os.path.join(workdir, "short.safetensors"),
    "header length past the file": raw_file("long.safetensors", "{}", length=64),
    "data truncated": raw_file("cut.safetensors", json.dumps({"a": entry("F32", [2], 0, 8)}), b"\0" * 6),
    "overlapping offsets": raw_file("overlap.safetensors", json.dumps(
        {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}), b"\0" * 12),
    "byte size not numel x dtype size": raw_file("size.safetensors", json.dumps({"a": entry("F32", [3], 0, 8)}),
                                                 b"\0" * 8),
    "unknown dtype": raw_file("dtype.safetensors", json.dumps({"a": entry("F33", [2], 0, 8)}), b"\0" * 8),
    "negative shape": raw_file("neg.safetensors", json.dumps({"a": entry("F32", [-2], 0, 8)}), b"\0" * 8),
    "not JSON": raw_file("json.safetensors", "{\"a\":", b""),
    "metadata value not a string": raw_file("meta.safetensors", json.dumps({"__metadata__": {"k": 1}}), b""),
}
with open(bad_files["truncated below the length"], "wb") as f:
    f.write(b"\x05\0\0")
check(python_accepts(good) and run_tool("describe", good).returncode == 0, "both read the well-formed file")
for what, path in bad_files.items():
    result = run_tool("describe", path)
    check(not python_accepts(path), f"Python rejects: {what}")
    check(result.returncode == 1 and os.path.basename(path) in result.stderr,
          f"dsee rejects, naming the file: {what} (rc {result.returncode}, {result.stderr.strip()})")

# Deliberate differences (Note [What the header may say]).
duplicate = raw_file("dup.safetensors", '{"a":' + json.dumps(entry("U8", [1], 0, 1)) + ',"a":'
                     + json.dumps(entry("U8", [1], 0, 1)) + "}", b"x")
check(python_accepts(duplicate) and run_tool("describe", duplicate).returncode == 1,
      "a duplicate name: Python keeps one silently, dsee rejects it")
gap = raw_file("gap.safetensors", json.dumps({"a": entry("U8", [1], 1, 2)}), b"xy")
check(not python_accepts(gap) and run_tool("describe", gap).returncode == 0,
      "a gap before a tensor: Python rejects, dsee reads it")

print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
