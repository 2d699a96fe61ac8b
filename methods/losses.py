"""Pixel-prototype losses of ProtoSeg and ContrastiveSeg's pixel contrast, unweighted
(docs/method.md#losses, docs/method.md#pixel-contrast-head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ppc_loss(sims: Tensor, target: Tensor, tau: float = 1.0, ignore_index: int = -100) -> Tensor:
    """Pixel-prototype contrast: cross-entropy over all C*K prototype similarities / tau.

    sims (N, C*K) cosine similarities, target (N,) index of each pixel's assigned prototype
    (`ignore_index` for pixels without one, left out of the mean); the other K-1 prototypes of
    the pixel's own class are negatives too.
    """
    return F.cross_entropy(sims if tau == 1.0 else sims / tau, target, ignore_index=ignore_index)


def ppd_loss(sims: Tensor, target: Tensor, ignore_index: int = -100) -> Tensor:
    """Pixel-prototype distance: mean of (1 - cos(pixel, assigned prototype))^2 over the pixels
    whose target is not `ignore_index`."""
    valid = target != ignore_index
    own = sims.gather(1, torch.where(valid, target, 0)[:, None]).squeeze(1)
    return ((1.0 - own).pow(2) * valid).sum() / valid.sum().clamp_min(1)


def pixel_contrast_loss(anchors: Tensor, labels: Tensor, contrast: Tensor | None = None,
                        contrast_labels: Tensor | None = None, tau: float = 0.1,
                        base_tau: float = 0.07) -> Tensor:
    """ContrastiveSeg's supervised contrast of unit pixel embeddings
    (docs/method.md#pixel-contrast-head).

    anchors (N, D) with labels (N,); without `contrast` the anchors contrast with each other
    (in-batch: positives = the other anchors of the same class), else with the memory entries
    `contrast` (M, D) of `contrast_labels` (M,). Per anchor i and positive j:
    `log p_ij = s_ij - log(exp(s_ij) + sum_{k negative} exp(s_ik))` with `s = <a, c> / tau`;
    the loss is `-(tau / base_tau)` times the mean over anchors of the mean over their
    positives. Anchors without any positive are left out (the released code divides by zero).
    """
    in_batch = contrast is None
    if in_batch:
        contrast, contrast_labels = anchors, labels
    logits = anchors @ contrast.t() / tau
    logits = logits - logits.amax(dim=1, keepdim=True).detach()  # stability only
    pos = labels[:, None] == contrast_labels[None, :]
    neg = ~pos
    if in_batch:
        pos = pos & ~torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
    exp = logits.exp()
    neg_sum = (exp * neg).sum(dim=1, keepdim=True)
    # clamped: a far negative's term may underflow to 0 at a tiny tau; no log(0) in any row
    log_prob = logits - torch.log((exp + neg_sum).clamp_min(torch.finfo(exp.dtype).tiny))
    num_pos = pos.sum(dim=1)
    has_pos = num_pos > 0
    if not bool(has_pos.any()):
        return anchors.sum() * 0.0 + 0.0  # a zero (never -0.0) that keeps the graph
    mean_pos = (log_prob * pos).sum(dim=1)[has_pos] / num_pos[has_pos]
    return -(tau / base_tau) * mean_pos.mean()
