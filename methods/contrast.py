"""Pixel-to-pixel contrast of ContrastiveSeg (ICCV 2021, docs/method.md#pixel-contrast-head):
anchor sampling, the memory-bank entries of a batch, the FIFO queue write and the cross-process
gather.

Everything is vectorised over (image, class) groups, so no Python loop runs per class; random
choices draw from torch's global generator (seeded and checkpointed by the engine), so a run is
deterministic and resumes exactly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from methods.heads.base import l2_normalize


def _valid(labels: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Pixels with a real class label (not the ignore value, inside [0, C))."""
    return (labels != ignore_index) & (labels >= 0) & (labels < num_classes)


def _random_rank_in_group(group: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Pixels ordered by group, in random order inside each group, and each one's rank there.

    Returns (order, rank): `order` indexes `group`, `rank[i]` is the position of pixel
    `order[i]` among its group's pixels (0 = drawn first). One randperm over all pixels.
    """
    perm = torch.randperm(group.numel(), device=group.device)
    order = perm[torch.sort(group[perm], stable=True).indices]
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    sorted_group = group[order]
    rank = torch.arange(group.numel(), device=group.device) - starts[sorted_group]
    return order, rank


def sample_anchors(labels: Tensor, pred: Tensor, num_classes: int, ignore_index: int,
                   max_anchors: int = 1024, max_views: int = 100,
                   min_class_pixels: int = 100) -> Tensor:
    """Indices into the flattened (B*N) pixels of the anchors of one batch (released sampling).

    labels, pred: (B, N) label and predicted class of each pixel at embedding resolution. An
    (image, class) group takes part if it has more than `min_class_pixels` labelled pixels;
    each takes `n = min(max_anchors // groups, max_views)` anchors, half hard (labelled c,
    predicted otherwise) and half easy (predicted c), the other pool filling a shortfall. When
    there are more groups than `max_anchors`, a random `max_anchors` of them take one anchor.
    Anchors come out ordered by image, then class, then hard before easy.
    """
    b, n_pix = labels.shape
    device = labels.device
    flat_labels, flat_pred = labels.reshape(-1), pred.reshape(-1)
    valid = _valid(flat_labels, num_classes, ignore_index)
    pixel = valid.nonzero()[:, 0]
    group = torch.div(pixel, n_pix, rounding_mode="floor") * num_classes + flat_labels[pixel]
    counts = torch.bincount(group, minlength=b * num_classes)
    eligible = counts > min_class_pixels
    total = int(eligible.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    n_view = min(max_anchors // total, max_views)
    if n_view == 0:  # more groups than anchors: a random max_anchors groups, one anchor each
        keep = eligible.nonzero()[:, 0]
        keep = keep[torch.randperm(keep.numel(), device=device)[:max_anchors]]
        eligible = torch.zeros_like(eligible).index_fill_(0, keep, True)
        n_view = 1
    in_group = eligible[group]
    pixel, group = pixel[in_group], group[in_group]
    easy = (flat_pred[pixel] == flat_labels[pixel]).long()
    num_easy = torch.bincount(group[easy.bool()], minlength=b * num_classes)
    num_hard = counts - num_easy
    # released quotas: n // 2 hard and the rest easy, the other pool filling a shortfall
    hard_keep = torch.minimum(num_hard, torch.clamp(n_view - num_easy, min=n_view // 2))
    easy_keep = torch.minimum(num_easy, n_view - hard_keep)
    sub = group * 2 + easy  # subgroup: (image, class, hard=0 / easy=1)
    order, rank = _random_rank_in_group(sub, 2 * b * num_classes)
    quota = torch.stack([hard_keep, easy_keep], dim=1).reshape(-1)
    chosen = order[rank < quota[sub[order]]]
    return pixel[chosen]


def queue_entries(emb: Tensor, labels: Tensor, num_classes: int, ignore_index: int,
                  pixels_per_class: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What one batch enqueues: per image and class present, the normalised mean embedding
    (segment queue) and up to `pixels_per_class` random pixel embeddings of that class (pixel
    queue); every real class including 0, never the ignore label.

    emb (B, N, D) unit embeddings, labels (B, N) at the same resolution. Returns (segment
    vectors, their classes, pixel vectors, their classes), ordered by image, then class.
    """
    b, n_pix, d = emb.shape
    flat_labels = labels.reshape(-1)
    flat_emb = emb.reshape(-1, d)
    pixel = _valid(flat_labels, num_classes, ignore_index).nonzero()[:, 0]
    group = torch.div(pixel, n_pix, rounding_mode="floor") * num_classes + flat_labels[pixel]
    counts = torch.bincount(group, minlength=b * num_classes)
    present = (counts > 0).nonzero()[:, 0]
    sums = flat_emb.new_zeros(b * num_classes, d).index_add_(0, group, flat_emb[pixel])
    segments = l2_normalize(sums[present] / counts[present, None].to(sums.dtype))
    order, rank = _random_rank_in_group(group, b * num_classes)
    picked = pixel[order[rank < pixels_per_class]]
    pixels = l2_normalize(flat_emb[picked])
    return segments, present % num_classes, pixels, flat_labels[picked]


@torch.no_grad()
def fifo_write(queue: Tensor, ptr: Tensor, filled: Tensor, vectors: Tensor,
               classes: Tensor) -> None:
    """Append `vectors` (n, D) to the per-class FIFO `queue` (C, S, D) in place, in row order.

    `ptr[c]` is the next slot of class c (its oldest entry once full), `filled[c]` how many
    slots hold data. The pointer advances by the number written and wraps, so writes overwrite
    the oldest entries; of more than S new rows of one class only the newest S are kept.
    """
    size = queue.shape[1]
    num_classes = queue.shape[0]
    if classes.numel() == 0:
        return
    order = torch.sort(classes, stable=True).indices
    cls = classes[order]
    counts = torch.bincount(cls, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    j = torch.arange(cls.numel(), device=cls.device) - starts[cls]  # index among its class
    keep = j >= counts[cls] - size  # only the newest `size` rows of each class
    cls, j, rows = cls[keep], j[keep], vectors[order][keep]
    slot = (ptr[cls] + j) % size
    queue[cls, slot] = rows.to(queue.dtype)
    ptr.copy_((ptr + counts) % size)
    filled.copy_(torch.clamp(filled + counts, max=size))


def queue_contents(queue: Tensor, ptr: Tensor, filled: Tensor, cls: int) -> Tensor:
    """The entries of class `cls`, oldest first (for inspection and tests)."""
    size = queue.shape[1]
    n = int(filled[cls])
    start = int(ptr[cls]) if n == size else 0
    return queue[cls, (start + torch.arange(n, device=queue.device)) % size]


def all_gather_rows(x: Tensor) -> Tensor:
    """The rows of `x` from every process, concatenated in rank order (`x` when not distributed).

    Processes may hold different row counts: each pads to the longest before the all-gather.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    lengths = [int(s) for s in sizes]
    longest = max(lengths)
    if longest == 0:
        return x
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:k] for p, k in zip(parts, lengths)])


__all__ = ["all_gather_rows", "fifo_write", "queue_contents", "queue_entries", "sample_anchors"]
