"""Prototype health during training (methods/prototype_health.py): each step's assignments are
counted, the counts travel in the checkpoint (exact resume), summaries go to the history and
TensorBoard at logged steps, and the per-class values into the record's metrics."""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator

from methods.prototype_health import AssignmentCounts, health


def prototype_buffer(model: torch.nn.Module) -> torch.Tensor | None:
    """The head's (C, K, D) prototypes, or None for heads without prototypes."""
    protos = getattr(getattr(model, "head", None), "prototypes", None)
    return protos if isinstance(protos, torch.Tensor) and protos.dim() == 3 else None


class HealthMonitor:
    """Counts assignments of a prototype head; inactive (a no-op) for other heads."""

    def __init__(self, model: torch.nn.Module) -> None:
        protos = prototype_buffer(model)
        self.initial = protos.detach().cpu().clone() if protos is not None else None
        self.counts = AssignmentCounts.zeros(*protos.shape[:2]) if protos is not None else None

    @property
    def active(self) -> bool:
        return self.counts is not None

    def observe(self, head_state: dict[str, torch.Tensor]) -> None:
        """Add one step's assignments (the head's training `state`)."""
        if self.active and "assignments" in head_state and "gumbel_disagree" in head_state:
            self.counts.add(head_state["assignments"], head_state["gumbel_disagree"])

    def summary(self, model: torch.nn.Module) -> dict[str, float]:
        """Finite class means of the statistics so far, as `health_<name>` scalars."""
        if not self.active:
            return {}
        stats = health(self.counts, prototype_buffer(model), self.initial)["summary"]
        return {f"health_{k}": float(v) for k, v in stats.items() if math.isfinite(float(v))}

    def final(self, model: torch.nn.Module, accelerator: Accelerator) -> dict[str, Any] | None:
        """Per-class statistics over the whole training, counts summed over processes."""
        if not self.active:
            return None
        counts = self.counts
        if accelerator.num_processes > 1:  # every process joins the reduction
            device = accelerator.device
            counts = AssignmentCounts(
                accelerator.reduce(counts.per_prototype.to(device), "sum").cpu(),
                accelerator.reduce(counts.gumbel_disagree.to(device), "sum").cpu())
        return health(counts, prototype_buffer(model), self.initial)

    def to_state(self) -> dict[str, list] | None:
        return self.counts.to_lists() if self.active else None

    def restore(self, saved: dict[str, list] | None) -> None:
        if self.active and saved is not None:
            self.counts = AssignmentCounts.from_lists(saved)
