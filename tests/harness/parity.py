"""Runs tests/parity/dsee_parity, the one C++ driver of the parity tests.

The I/O convention (tests/parity/parity_request.h): `dsee_parity MODE
REQUEST.json`. The request is one JSON object: "in" names a safetensors file
of the mode's input tensors, "out" the safetensors file the mode writes its
output tensors to, every other key is one of the mode's parameters. The
driver prints one line, a JSON object (the mode's result, {} when it has
none), and exits 0; 1 with "dsee_parity: error: ..." on stderr when the
request is wrong or dsee refuses it; 2 for an unknown mode or no request.
"""
import json
import os
import subprocess


class ParityResult:
    """What one call returned: `json` (the stdout line) and the output
    tensors, loaded on first use (`tensors` as torch, `arrays` as numpy)."""

    def __init__(self, json_result, out_path):
        self.json = json_result
        self.out_path = out_path

    @property
    def tensors(self):
        from safetensors.torch import load_file
        return load_file(self.out_path)

    @property
    def arrays(self):
        from safetensors.numpy import load_file
        return load_file(self.out_path)


class ParityDriver:
    """`driver(mode, request, tensors)` writes the request (and the input
    tensors, torch or numpy, as "in") into `folder`, asks for "out" when
    `out` is set, runs the mode and returns a ParityResult; a failed run fails
    the test with the driver's stderr. `driver.run(mode, request)` runs it
    without judging (for the checks that dsee refuses something)."""

    def __init__(self, binary, folder):
        self.binary = binary
        self.folder = folder
        self.calls = 0

    def _request_file(self, mode, request, tensors, out):
        self.calls += 1
        stem = os.path.join(self.folder, f"{self.calls:03d}-{mode}")
        request = dict(request or {})
        if tensors is not None:
            request["in"] = stem + "-in.safetensors"
            values = list(tensors.values())
            if values and hasattr(values[0], "detach"):
                from safetensors.torch import save_file
                save_file({k: v.contiguous() for k, v in tensors.items()}, request["in"])
            else:
                from safetensors.numpy import save_file
                save_file(tensors, request["in"])
        if out:
            request["out"] = stem + "-out.safetensors"
        path = stem + ".json"
        with open(path, "w") as f:
            json.dump(request, f)
        return path, request

    def run(self, mode, request=None, tensors=None, out=False):
        """The finished process (stdout, stderr, returncode), not judged."""
        path, _ = self._request_file(mode, request, tensors, out)
        return subprocess.run([self.binary, mode, path], capture_output=True, text=True)

    def __call__(self, mode, request=None, tensors=None, out=False):
        path, request = self._request_file(mode, request, tensors, out)
        done = subprocess.run([self.binary, mode, path], capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"dsee_parity {mode} {path} exited {done.returncode}:\n{done.stderr.strip()}")
        lines = done.stdout.strip().splitlines()
        return ParityResult(json.loads(lines[-1]) if lines else {}, request.get("out"))
