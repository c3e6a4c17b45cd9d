"""Helpers the golden scripts share (each script imports this from its own folder)."""
import json

import torch
from safetensors.torch import save


def perturb(model: torch.nn.Module, chosen) -> None:
    """Adds 0.2·randn to every parameter whose name `chosen(name)` picks. Norm weights start at 1
    and biases at 0, which would hide a loader that skips them; perturbed, each one changes the
    output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if chosen(name):
                p.add_(0.2 * torch.randn_like(p))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|, the measure the C++ tests use."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max()).item()


def save_deterministic(tensors: dict, metadata: dict, path: str) -> None:
    """safetensors' save_file, but with the metadata in sorted order: safetensors writes
    __metadata__ from a Rust HashMap, whose order changes from run to run. The tensor entries and
    the data bytes are kept as written."""
    blob = save(tensors, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n], object_pairs_hook=dict)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + blob[8 + n :])
