"""Sinkhorn-Knopp online clustering, batched over classes (docs/method.md#sinkhorn).

Each class c has its own transport problem between its N_c pixels and its K prototypes. Instead of
a Python loop over classes, all problems are solved at once on the flat (N, K) matrix: per-class
sums are `index_add` reductions keyed by the pixel's class, so cost is O(N K) for any C.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _across_processes() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: Tensor, op: "dist.ReduceOp.RedOpType" = dist.ReduceOp.SUM) -> Tensor:
    dist.all_reduce(t, op=op)
    return t


def sinkhorn_per_class(
    sims: Tensor, labels: Tensor, num_classes: int, eps: float = 0.05, iters: int = 3,
    all_processes: bool = False,
) -> Tensor:
    """Equipartition pixels of each class over that class's K prototypes.

    sims: (N, K) similarity of each pixel to the K prototypes of its own class.
    labels: (N,) class of each pixel, in [0, num_classes).
    Returns Q (N, K): per class, `exp(S/eps)` normalised to total mass 1, then `iters` rounds of
    (each prototype gets 1/K, each pixel gets 1/N_c), scaled by N_c so each pixel's row sums to 1.
    Computed in float32 whatever the input dtype (exp(S/eps) overflows half precision).
    `all_processes`: under torch.distributed, solve each class's problem over the pixels of all
    processes (per-class sums all-reduced; every rank must call); the released code solves it
    per process. Equal to one process holding every pixel.
    """
    n, k = sims.shape
    shared = all_processes and _across_processes()
    if n == 0 and not shared:
        return sims.new_zeros((0, k), dtype=torch.float32)
    sims = sims.detach().float()
    labels = labels.long()
    # Subtract each class's max before exp: a constant per problem cancels in the normalisation
    # and keeps exp() finite for any scale of similarities.
    class_max = sims.new_full((num_classes,), float("-inf")).scatter_reduce(
        0, labels, sims.amax(dim=1), reduce="amax"
    )
    if shared:
        class_max = _all_reduce(class_max, dist.ReduceOp.MAX)
    q = torch.exp((sims - class_max[labels, None]) / eps)
    tiny = torch.finfo(q.dtype).tiny
    class_counts = torch.bincount(labels, minlength=num_classes).to(q.dtype)
    if shared:
        class_counts = _all_reduce(class_counts)
    counts = class_counts[labels, None]  # N_c per pixel

    def per_class(values: Tensor) -> Tensor:  # (N, ...) -> (C, ...) sums over each class's pixels
        out = values.new_zeros((num_classes,) + tuple(values.shape[1:]))
        out.index_add_(0, labels, values)
        return _all_reduce(out) if shared else out

    q = q / per_class(q.sum(dim=1))[labels, None].clamp_min(tiny)
    for _ in range(iters):
        q = q / per_class(q)[labels].clamp_min(tiny) / k  # each prototype: mass 1/K
        q = q / q.sum(dim=1, keepdim=True).clamp_min(tiny) / counts  # each pixel: mass 1/N_c
    return q * counts
