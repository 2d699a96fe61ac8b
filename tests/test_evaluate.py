"""The metric: one confusion matrix over the split, against a brute-force computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.evaluate import LabelRangeError, confusion_matrix, metrics_from_confusion

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
