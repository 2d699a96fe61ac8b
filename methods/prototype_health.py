"""Prototype health: are a class's K prototypes used, distinct and moving?
(docs/method.md#momentum-update)

Users of the released code report that a class's prototypes end up almost identical; these
statistics measure that per class from counts the trainer accumulates (`AssignmentCounts`) and
the prototype buffer before and after training. All functions are pure and work on CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class AssignmentCounts:
    """Running per-class sums over training steps: pixels per prototype (C, K) and the expected
    number of pixels whose released-code Gumbel draw differs from the argmax assignment (C)."""

    per_prototype: Tensor
    gumbel_disagree: Tensor

    @classmethod
    def zeros(cls, num_classes: int, num_prototypes: int) -> "AssignmentCounts":
        return cls(torch.zeros(num_classes, num_prototypes, dtype=torch.float64),
                   torch.zeros(num_classes, dtype=torch.float64))

    def add(self, target: Tensor, disagree: Tensor) -> None:
        """Add one step: `target` = class * K + prototype of each assigned pixel, `disagree` its
        probability that the Gumbel draw picks another prototype."""
        c, k = self.per_prototype.shape
        target = target.detach().to("cpu", torch.long)
        flat = torch.bincount(target, minlength=c * k).to(torch.float64)
        self.per_prototype += flat.view(c, k)
        self.gumbel_disagree.index_add_(0, target // k, disagree.detach().to("cpu", torch.float64))

    def __add__(self, other: "AssignmentCounts") -> "AssignmentCounts":
        return AssignmentCounts(self.per_prototype + other.per_prototype,
                                self.gumbel_disagree + other.gumbel_disagree)

    def __sub__(self, other: "AssignmentCounts") -> "AssignmentCounts":
        return AssignmentCounts(self.per_prototype - other.per_prototype,
                                self.gumbel_disagree - other.gumbel_disagree)

    def to_lists(self) -> dict[str, list]:
        return {"per_prototype": self.per_prototype.tolist(),
                "gumbel_disagree": self.gumbel_disagree.tolist()}

    @classmethod
    def from_lists(cls, d: dict[str, list]) -> "AssignmentCounts":
        return cls(torch.tensor(d["per_prototype"], dtype=torch.float64),
                   torch.tensor(d["gumbel_disagree"], dtype=torch.float64))


def gumbel_disagreement(q: Tensor) -> Tensor:
    """Per pixel, the probability that the released code's draw
    `gumbel_softmax(q, tau, hard=True).argmax()` differs from `q.argmax()`.

    gumbel_softmax treats q as logits, and the hard sample is argmax(q + Gumbel noise) whatever
    tau is: a draw from softmax(q). So the disagreement is exactly 1 - softmax(q)[argmax q];
    with Sinkhorn probabilities (values in [0, 1]) as logits it is close to (K-1)/K.
    softmax(q)[argmax q] = 1 / sum_j exp(q_j - max q): no softmax buffer, argmax or gather
    (a tenth of their time: it runs every training step).
    """
    q = q.float()
    return 1.0 - (q - q.amax(dim=1, keepdim=True)).exp_().sum(dim=1).reciprocal_()


def _unit(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x.double(), dim=-1)


def pairwise_cosine(prototypes: Tensor) -> Tensor:
    """Mean cosine between distinct prototypes of each class (C,): 1 = collapsed."""
    c, k, _ = prototypes.shape
    if k < 2:
        return torch.full((c,), float("nan"), dtype=torch.float64)
    p = _unit(prototypes)
    gram = p @ p.transpose(1, 2)  # (C, K, K)
    off = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return off / (k * (k - 1))


def moved_from_init(prototypes: Tensor, initial: Tensor) -> Tensor:
    """Mean Euclidean distance of each class's unit prototypes from their initial ones (C,)
    (0 = never moved, 2 = opposite)."""
    return (_unit(prototypes) - _unit(initial)).norm(dim=-1).mean(dim=1)


def assignment_entropy(shares: Tensor) -> Tensor:
    """Entropy of each class's assignment shares divided by log K (C,): 1 = all prototypes
    used equally, 0 = one prototype takes every pixel; NaN for a class without pixels."""
    k = shares.shape[1]
    logs = torch.where(shares > 0, shares.log(), torch.zeros_like(shares))
    h = -(shares * logs).sum(dim=1)
    return h / torch.log(torch.tensor(float(k), dtype=h.dtype)) if k > 1 else torch.zeros_like(h)


def health(counts: AssignmentCounts, prototypes: Tensor, initial: Tensor) -> dict[str, object]:
    """Per-class statistics and their means over classes that received pixels.

    Returns lists per class (`share` is C x K) and scalar summaries for logs and tables."""
    per = counts.per_prototype
    totals = per.sum(dim=1)
    seen = totals > 0
    shares = per / totals.clamp(min=1)[:, None]
    entropy = assignment_entropy(shares).masked_fill(~seen, float("nan"))
    unused = (per == 0).sum(dim=1).to(torch.float64).masked_fill(~seen, float("nan"))
    disagree = (counts.gumbel_disagree / totals.clamp(min=1)).masked_fill(~seen, float("nan"))
    cosine = pairwise_cosine(prototypes.cpu())
    moved = moved_from_init(prototypes.cpu(), initial.cpu())

    def mean_seen(x: Tensor) -> float:
        return float(x[seen].mean()) if bool(seen.any()) else float("nan")

    return {
        "per_class": {"share": shares.tolist(), "entropy": entropy.tolist(),
                      "unused": unused.tolist(), "pairwise_cosine": cosine.tolist(),
                      "moved": moved.tolist(), "gumbel_disagree": disagree.tolist()},
        "summary": {"entropy": mean_seen(entropy), "unused": mean_seen(unused),
                    "pairwise_cosine": mean_seen(cosine), "moved": mean_seen(moved),
                    "gumbel_disagree": mean_seen(disagree),
                    "classes_seen": int(seen.sum())},
    }
