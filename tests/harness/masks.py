"""masks.h5 (core/sparsity/prune_plan.h; docs/checkpoints.md, 'masks.h5') read
with h5py + numpy by its documented layout: bits unpacked MSB first and cut
to numel, zero indices scattered into ones, one indices into zeros."""
import h5py
import numpy as np
import torch


def masks_h5(path):
    """({module: bool keep-mask [out, in] (torch)}, {layer: [removed head ids]}) of a masks.h5."""
    masks, heads = {}, {}
    with h5py.File(path, "r") as f:
        for name, data in f.get("masks", {}).items():
            rows, cols = (int(v) for v in data.attrs["shape"])
            encoding = data.attrs["encoding"]
            encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
            if encoding == "bits":
                flat = np.unpackbits(data[()])[: rows * cols]
            else:
                listed = 1 if encoding == "one_indices" else 0
                flat = np.full(rows * cols, 1 - listed, dtype=np.uint8)
                flat[data[()]] = listed
            masks[name] = torch.from_numpy(flat.reshape(rows, cols).astype(bool))
        for layer, ids in f.get("heads", {}).items():
            heads[int(layer)] = [int(h) for h in ids[()]]
    return masks, heads
