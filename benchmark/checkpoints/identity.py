"""A model's identity: the SHA-256 of its state dict, recorded by every run and checked before
figures are drawn from a run's final weights."""

from __future__ import annotations

import hashlib

import torch


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (name, dtype, shape, raw bytes): equal iff bitwise
    equal."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
