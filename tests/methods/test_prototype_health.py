"""Prototype health statistics on constructed cases: collapsed, unused, balanced prototypes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.prototype_health import (AssignmentCounts, assignment_entropy, gumbel_disagreement,
                                      health, moved_from_init, pairwise_cosine)


def test_collapsed_prototypes_have_cosine_one_and_distinct_ones_less():
    collapsed = torch.tensor([1.0, 0.0, 0.0]).expand(2, 4, 3)
    assert pairwise_cosine(collapsed).tolist() == pytest.approx([1.0, 1.0])
    orthogonal = torch.eye(3).unsqueeze(0)  # one class, 3 orthogonal prototypes
    assert pairwise_cosine(orthogonal).item() == pytest.approx(0.0)
    # two prototypes at 60 degrees: cosine 0.5
    p = torch.tensor([[[1.0, 0.0], [0.5, math.sqrt(3) / 2]]])
    assert pairwise_cosine(p).item() == pytest.approx(0.5)


def test_moved_from_init():
    init = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert moved_from_init(init * 3, init).item() == pytest.approx(0.0)  # scale is not movement
    flipped = torch.tensor([[[-1.0, 0.0], [0.0, 1.0]]])
    assert moved_from_init(flipped, init).item() == pytest.approx(1.0)  # (2 + 0) / 2


def test_entropy_balanced_one_hot_and_unused():
    shares = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]],
                          dtype=torch.float64)
    assert assignment_entropy(shares).tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_counts_and_health_summary():
    c, k = 3, 4
    counts = AssignmentCounts.zeros(c, k)
    # class 0 balanced (2 pixels per prototype), class 1 all on prototype 2, class 2 no pixel
    target = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] + [k + 2] * 5)
    counts.add(target, torch.full((13,), 0.5))
    protos = F.normalize(torch.randn(c, k, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    h = health(counts, protos, protos)
    per = h["per_class"]
    assert per["share"][0] == pytest.approx([0.25] * 4)
    assert per["share"][1] == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert per["entropy"][:2] == pytest.approx([1.0, 0.0]) and math.isnan(per["entropy"][2])
    assert per["unused"][:2] == [0.0, 3.0] and math.isnan(per["unused"][2])
    assert per["gumbel_disagree"][:2] == pytest.approx([0.5, 0.5])
    assert per["moved"] == pytest.approx([0.0] * 3)
    s = h["summary"]
    assert s["classes_seen"] == 2 and s["entropy"] == pytest.approx(0.5)
    assert s["unused"] == pytest.approx(1.5)
    restored = AssignmentCounts.from_lists(counts.to_lists())
    assert torch.equal(restored.per_prototype, counts.per_prototype)
    twice = counts + restored  # a resume carries other processes' counts this way
    assert torch.equal(twice.per_prototype, 2 * counts.per_prototype)
    assert torch.equal((twice - counts).gumbel_disagree, counts.gumbel_disagree)


def test_gumbel_disagreement_is_the_released_draws_frequency():
    # Sinkhorn-like probabilities used as logits by gumbel_softmax: nearly uniform draws
    q = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.0, 1.0, 0.0, 0.0]])
    expected = gumbel_disagreement(q)
    soft = torch.softmax(q, dim=1)
    assert expected.tolist() == pytest.approx((1 - soft.max(dim=1).values).tolist())
    assert gumbel_disagreement(q * 1e4).tolist() == pytest.approx([0.0, 0.0])  # no overflow
    assert gumbel_disagreement(q[:0]).shape == (0,)  # a batch with no labelled pixel
    torch.manual_seed(0)
    draws = torch.stack([F.gumbel_softmax(q, tau=0.5, hard=True).argmax(dim=1)
                         for _ in range(4000)])
    observed = (draws != q.argmax(dim=1)).double().mean(dim=0)
    assert observed.tolist() == pytest.approx(expected.tolist(), abs=0.03)
