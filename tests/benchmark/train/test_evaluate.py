"""The metric: one confusion matrix over the split, against a brute-force computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmark.train.evaluate import (LabelRangeError, confusion_matrix, metrics_from_confusion,
                                       predicted_classes, slide_logits)

IGNORE = 255


def brute_force_iou(pred: np.ndarray, label: np.ndarray, num_classes: int) -> list[float]:
    valid = label != IGNORE
    ious = []
    for c in range(num_classes):
        inter = np.sum((pred == c) & (label == c) & valid)
        union = np.sum(((pred == c) | (label == c)) & valid)
        ious.append(inter / union if union else math.nan)
    return ious


def test_miou_equals_brute_force_with_ignore_and_absent_class() -> None:
    g = torch.Generator().manual_seed(0)
    c = 6
    label = torch.randint(0, c - 1, (4, 32, 32), generator=g)  # class 5 never in labels
    pred = torch.randint(0, c - 1, (4, 32, 32), generator=g)  # ... nor in predictions
    label[torch.rand(label.shape, generator=g) < 0.2] = IGNORE
    pred[label == IGNORE] = 5  # predictions on ignored pixels must not count
    cm = sum(confusion_matrix(pred[i], label[i], c, IGNORE) for i in range(4))  # per-image sums
    m = metrics_from_confusion(cm)
    expected = brute_force_iou(pred.numpy(), label.numpy(), c)
    assert math.isnan(expected[5]) and m["per_class_iou"]["5"] is not None
    assert math.isnan(m["per_class_iou"]["5"])
    for k in range(5):
        assert m["per_class_iou"][str(k)] == pytest.approx(expected[k] * 100)
    assert m["miou"] == pytest.approx(np.nanmean(expected) * 100)
    valid = label != IGNORE
    assert m["aacc"] == pytest.approx((pred[valid] == label[valid]).float().mean().item() * 100)
    assert m["pixels"] == int(valid.sum())


def test_split_level_matrix_is_not_a_mean_of_image_ious() -> None:
    # image 1: class 0 perfectly; image 2: class 0 always wrong; split IoU uses summed counts
    label = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1]])
    pred = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])
    cm = confusion_matrix(pred, label, 2, IGNORE)
    assert cm.tolist() == [[4, 1], [0, 3]]
    m = metrics_from_confusion(cm, ["a", "b"])
    assert m["per_class_iou"] == {"a": pytest.approx(80.0), "b": pytest.approx(75.0)}


def test_label_out_of_range_is_a_clear_error() -> None:
    with pytest.raises(LabelRangeError, match="label value 7 is outside \\[0, 3\\)"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, IGNORE]), 3, IGNORE)


@pytest.mark.parametrize("bad,pred", [(3, 0), (3, 2), (-1, 2), (250, 1)])
def test_every_out_of_range_label_is_caught(bad, pred) -> None:
    # label C with prediction 0 lands on the spare bin of the ignored pixels: still an error
    label = torch.tensor([0, 1, bad, IGNORE, 2])
    with pytest.raises(LabelRangeError, match=f"label value {bad} is outside"):
        confusion_matrix(torch.full((5,), pred), label, 3, IGNORE)


def test_matrix_equals_the_gathered_bincount_for_any_ignore_value() -> None:
    g = torch.Generator().manual_seed(1)
    for ignore in (IGNORE, -1):
        label = torch.randint(0, 7, (3, 20, 20), generator=g)
        label[torch.rand(label.shape, generator=g) < 0.3] = ignore
        pred = torch.randint(0, 7, (3, 20, 20), generator=g)
        valid = label != ignore
        expected = torch.bincount(label[valid] * 7 + pred[valid], minlength=49).reshape(7, 7)
        assert torch.equal(confusion_matrix(pred, label, 7, ignore), expected)
    assert confusion_matrix(pred, torch.full_like(label, IGNORE), 7, IGNORE).sum() == 0


class _Pointwise(torch.nn.Module):
    """A 1x1 convolution: each pixel's logits ignore its context, so windows cannot change them."""

    def __init__(self, context: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.context, self.calls = context, []

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        self.calls.append(tuple(x.shape[-2:]))
        logits = self.conv(x)
        if self.context:  # plus the window's mean: depends on where the window is
            logits = logits + x.mean(dim=(1, 2, 3))[:, None, None, None]
        return SimpleNamespace(logits=logits)


def test_slide_inference_tiles_the_image_like_mmseg() -> None:
    images = torch.randn(2, 3, 13, 17)
    model = _Pointwise()
    whole = model(images).logits
    model.calls.clear()
    slid = slide_logits(model, images, 4, window=(5, 7), stride=(3, 4))
    assert len(model.calls) == 4 * 4 and set(model.calls) == {(5, 7)}  # rows/cols ceil + 1
    torch.testing.assert_close(slid, whole)  # averaging equal logits changes nothing
    big = slide_logits(model, images, 4, window=(64, 64), stride=(32, 32))  # clipped: one call
    torch.testing.assert_close(big, whole)
    shifted = _Pointwise(context=True)
    assert not torch.allclose(slide_logits(shifted, images, 4, (5, 7), (3, 4)),
                              shifted(images).logits)


def test_slide_mode_is_validated_and_used_by_the_cityscapes_transformer_recipe() -> None:
    from benchmark.config import Cell, ConfigError, EvalSpec
    from benchmark.validation import validate
    from benchmark.train.engine import eval_windows
    from experiments import get_grid

    with pytest.raises(ConfigError, match="slide mode needs"):
        validate(Cell("g", "x", eval=EvalSpec(mode="slide", window_h=8, window_w=8)))
    segformer = [c for c in get_grid("table2").cells if c.model.backbone == "mit_b4"][0]
    assert eval_windows(segformer) == {"window": (1024, 1024), "stride": (768, 768)}
    assert eval_windows(Cell("g", "x")) == {"window": None, "stride": None}


@pytest.mark.parametrize("kind", ["random", "ties", "nan_and_inf"])
def test_predicted_classes_are_the_argmax_ties_and_nans_included(kind) -> None:
    """The CPU's `max(1).indices` picks the index `argmax(1)` picks: the first of tied maxima,
    a NaN's where one is there, an inf over finite values."""
    g = torch.Generator().manual_seed(3)
    if kind == "random":
        logits = torch.randn(2, 150, 33, 47, generator=g)
    elif kind == "ties":
        logits = torch.randint(0, 3, (2, 150, 33, 47), generator=g).float()
    else:
        logits = torch.randn(2, 19, 33, 47, generator=g)
        logits[0, 5, :3], logits[0, 9, :2] = float("nan"), float("nan")
        logits[1, :, 7], logits[1, 3, 8] = 1.0, float("inf")
    pred = predicted_classes(logits)
    assert pred.dtype == torch.int64 and pred.shape == (2, 33, 47)
    assert torch.equal(pred, logits.argmax(1))
    assert torch.equal(predicted_classes(logits.contiguous(memory_format=torch.channels_last)),
                       logits.argmax(1))
