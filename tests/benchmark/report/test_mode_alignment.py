"""Prototypes vs the generated data's appearance modes: the uncertainty coefficient on
hand-computed tables, and the pixel counting on a model whose embedding is the mode itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.report.mode_alignment import mode_prototype_counts, uncertainty_coefficient


def test_uncertainty_coefficient_on_hand_computed_tables() -> None:
    assert uncertainty_coefficient(torch.tensor([[50, 0], [0, 50]])) == pytest.approx(1.0)
    assert uncertainty_coefficient(torch.tensor([[25, 25], [25, 25]])) == pytest.approx(0.0)
    assert uncertainty_coefficient(torch.tensor([[30], [70]])) == pytest.approx(0.0)  # K = 1
    # two modes of equal mass, prototype 0 takes all of mode 0 and half of mode 1:
    # H(mode) = ln 2; I = H(mode) - H(mode | proto) = ln 2 - 3/4 * H(1/3, 2/3)
    h = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    want = (math.log(2) - 0.75 * h) / math.log(2)
    assert uncertainty_coefficient(torch.tensor([[40, 0], [20, 20]])) == pytest.approx(want)
    assert math.isnan(uncertainty_coefficient(torch.zeros(2, 3)))  # no pixels
    assert math.isnan(uncertainty_coefficient(torch.tensor([[10, 5], [0, 0]])))  # one mode


class _ModeHead:
    """Embeds a pixel as the one-hot of its mode; class c's prototype k is the one-hot of mode
    `order[k]` (None: a head without prototypes)."""

    def __init__(self, num_classes: int, order: list[int] | None, num_modes: int = 3) -> None:
        self.protos = None if order is None else torch.eye(num_modes)[order].expand(
            num_classes, len(order), num_modes).clone()
        self.num_modes = num_modes

    def prototype_vectors(self) -> torch.Tensor | None:
        return self.protos

    def pixel_embeddings(self, feats: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(feats[:, 0].long(), self.num_modes)
        return onehot.permute(0, 3, 1, 2).float()


class _ModeModel(nn.Module):
    """The image's first channel holds each pixel's mode; features keep every second pixel
    (a coarser feature map, like a backbone's)."""

    def __init__(self, num_classes: int, order: list[int] | None) -> None:
        super().__init__()
        self.head = _ModeHead(num_classes, order)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, :1, ::2, ::2]


class _Data:
    def __init__(self, n: int = 3, size: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(n):
            label = torch.randint(0, 2, (size, size), generator=g)
            mode = torch.randint(0, 3, (size, size), generator=g)
            label[0, 0] = 255  # an ignored pixel is not counted
            self.items.append((mode[None].float().repeat(3, 1, 1), label, mode))

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, i: int):
        return self.items[i]


def test_counts_follow_the_nearest_prototype_of_the_true_class() -> None:
    data = _Data()
    counts = mode_prototype_counts(_ModeModel(2, [2, 0, 1]), data, num_modes=3)
    assert counts.shape == (2, 3, 3)
    labelled = sum(int((it[1][::2, ::2] != 255).sum()) for it in data.items)
    assert int(counts.sum()) == labelled
    # mode m is embedded as e_m and prototype k is e_order[k]: mode 2 -> k 0, 0 -> 1, 1 -> 2
    for c in range(2):
        assert counts[c].count_nonzero() == (counts[c][[2, 0, 1], [0, 1, 2]] > 0).sum()
        assert uncertainty_coefficient(counts[c]) == pytest.approx(1.0)
    # one prototype per class: the assignment says nothing about the mode
    one = mode_prototype_counts(_ModeModel(2, [0]), data, num_modes=3)
    assert one.shape == (2, 3, 1) and int(one.sum()) == labelled
    assert uncertainty_coefficient(one[0]) == pytest.approx(0.0)


def test_a_head_without_prototypes_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a prototype head"):
        mode_prototype_counts(_ModeModel(2, None), _Data(), num_modes=3)
