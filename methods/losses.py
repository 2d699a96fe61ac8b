"""Pixel-prototype losses of ProtoSeg (METHOD-SPEC §3), unweighted."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def ppc_loss(sims: Tensor, target: Tensor, tau: float = 1.0) -> Tensor:
    """Pixel-prototype contrast: cross-entropy over all C*K prototype similarities / tau.

    sims (N, C*K) cosine similarities, target (N,) index of each pixel's assigned prototype; the
    other K-1 prototypes of the pixel's own class are negatives too.
    """
    return F.cross_entropy(sims / tau, target)


def ppd_loss(sims: Tensor, target: Tensor) -> Tensor:
    """Pixel-prototype distance: mean of (1 - cos(pixel, assigned prototype))^2."""
    return (1.0 - sims.gather(1, target[:, None])).pow(2).mean()
