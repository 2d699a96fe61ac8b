"""Prototype health is recorded by a real (tiny) run: per-class values in the metrics, class
means in the history; other heads record none. Resume keeps it exact (test_resume.py compares
the metrics, health included)."""

from __future__ import annotations

import pytest

from benchmark.overrides import apply_overrides
from benchmark.train.engine import train_and_evaluate
from experiments.smoke import smoke

TINY = ["train.iters=6", "train.batch_size=4", "data.train_images=8", "data.val_images=2",
        "data.image_size=32", "train.log_every=2"]


def test_a_prototype_run_records_its_health() -> None:
    cell = apply_overrides(smoke().cells[-1], TINY)  # prototype head, K = 5
    result = train_and_evaluate(cell, seed=0, progress=False)
    health = result.metrics.prototype_health
    c, k = cell.data.num_classes, cell.model.head.num_prototypes
    shares = health["per_class"]["share"]
    assert len(shares) == c and all(len(row) == k for row in shares)
    seen = [i for i, row in enumerate(shares) if sum(row) > 0]
    assert seen and all(sum(shares[i]) == pytest.approx(1.0) for i in seen)
    summary = health["summary"]
    assert summary["classes_seen"] == len(seen)
    assert 0 < summary["moved"] < 2 and -1 <= summary["pairwise_cosine"] <= 1
    assert 0 <= summary["entropy"] <= 1 and 0 <= summary["gumbel_disagree"] <= (k - 1) / k
    logged = [e for e in result.history if "health_entropy" in e]
    assert [e["step"] for e in logged] == [0, 2, 4, 5]
    assert logged[-1]["health_moved"] == pytest.approx(summary["moved"])


def test_other_heads_record_no_health() -> None:
    cell = apply_overrides(smoke().cells[0], TINY)  # softmax
    result = train_and_evaluate(cell, seed=0, progress=False)
    assert result.metrics.prototype_health is None
    assert not any("health_entropy" in e for e in result.history)


def test_each_step_is_counted_once_though_counted_a_step_late() -> None:
    """The monitor counts a step's assignments at its next call (a GPU's copy to the host runs
    behind the step): summaries, checkpoints and the final statistics include every step, and
    a head that overwrites its assignment buffer after the step changes nothing."""
    import torch

    from benchmark.train.telemetry import HealthMonitor
    from methods import build_model
    from methods.prototype_health import AssignmentCounts

    cell = apply_overrides(smoke().cells[-1], TINY)
    model = build_model(cell.model, cell.data.num_classes, cell.data.ignore_index)
    c, k = model.head.prototypes.shape[:2]
    gen = torch.Generator().manual_seed(0)
    steps = [(torch.randint(0, c * k, (40,), generator=gen),
              torch.rand(40, generator=gen, dtype=torch.float64)) for _ in range(3)]
    expected = AssignmentCounts.zeros(c, k)
    monitor = HealthMonitor(model)
    buffer = torch.empty(40, dtype=torch.long)  # one buffer, reused by the "head" every step
    for target, disagree in steps:
        expected.add(target, disagree)
        buffer.copy_(target)
        monitor.observe({"assignments": buffer, "gumbel_disagree": disagree})
        buffer.fill_(0)  # the next step's work begins in the same memory
        saved = monitor.to_state()
        assert saved["per_prototype"] == expected.to_lists()["per_prototype"]
    assert monitor.summary(model)  # counts nothing twice: the pending step is gone
    assert monitor.counts.per_prototype.sum() == 3 * 40
    assert torch.equal(monitor.counts.gumbel_disagree, expected.gumbel_disagree)
