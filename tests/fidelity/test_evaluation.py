"""Evaluation against the sources' own code: the metric vs MMSegmentation's IoUMetric and the
Cityscapes scripts, sliding-window inference vs MMSegmentation's `slide_inference`.

The oracle packages come from the `fidelity` extra (the `mmseg` fixture, tests/fidelity/conftest.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from benchmark.datasets.cityscapes import ID_TO_TRAIN_ID
from benchmark.train.evaluate import confusion_matrix, metrics_from_confusion, slide_logits

IGNORE = 255


def _pairs(num_classes: int, n: int = 4, h: int = 37, w: int = 53, seed: int = 0):
    """Random predictions and labels with ignored pixels and one class absent from both."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        label = torch.randint(0, num_classes - 1, (h, w), generator=g)
        label[torch.rand(h, w, generator=g) < 0.15] = IGNORE
        pred = torch.where(torch.rand(h, w, generator=g) < 0.6, label.clamp(max=num_classes - 2),
                           torch.randint(0, num_classes - 1, (h, w), generator=g))
        pairs.append((pred, label))
    return pairs


def _ours(pairs, num_classes: int) -> dict:
    cm = sum(confusion_matrix(p, l, num_classes, IGNORE) for p, l in pairs)
    return metrics_from_confusion(cm)


def test_metric_equals_mmseg_iou_metric(mmseg):
    from mmseg.evaluation.metrics import IoUMetric

    c = 7
    pairs = _pairs(c)
    results = [IoUMetric.intersect_and_union(p, l, c, IGNORE) for p, l in pairs]
    totals = [sum(r[i] for r in results) for i in range(4)]
    theirs = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"], nan_to_num=None)
    ours = _ours(pairs, c)
    their_iou = theirs["IoU"]
    # IoUMetric counts pixels with float32 histograms (torch.histc): equal to ~1e-6 relative
    tol = 1e-5
    assert math.isnan(their_iou[-1]) and math.isnan(ours["per_class_iou"][str(c - 1)])
    assert ours["miou"] == pytest.approx(float(np.nanmean(their_iou)) * 100, abs=tol)
    assert [v for v in ours["per_class_iou"].values() if not math.isnan(v)] == pytest.approx(
        [float(v) * 100 for v in their_iou if not math.isnan(v)], abs=tol)
    assert ours["aacc"] == pytest.approx(float(theirs["aAcc"]) * 100, abs=tol)


def test_metric_equals_cityscapes_scripts(mmseg, tmp_path):  # mmseg: the extra is there
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import trainId2label

    train_to_id = {t: i for i, t in ID_TO_TRAIN_ID.items()}
    pairs = _pairs(19, n=3, seed=1)
    pred_files, gt_files = [], []
    for i, (pred, label) in enumerate(pairs):
        gt_ids = np.vectorize(lambda t: train_to_id.get(int(t), 0))(label.numpy()).astype(np.uint8)
        pred_ids = np.vectorize(lambda t: trainId2label[int(t)].id)(pred.numpy()).astype(np.uint8)
        gt_files.append(str(tmp_path / f"gt{i}_gtFine_labelIds.png"))
        pred_files.append(str(tmp_path / f"pred{i}.png"))
        Image.fromarray(gt_ids).save(gt_files[-1])
        Image.fromarray(pred_ids).save(pred_files[-1])
    args = cs.CArgs()
    for key, value in vars(cs.args).items():
        setattr(args, key, value)
    args.evalInstLevelScore, args.quiet, args.JSONOutput = False, True, False
    result = cs.evaluateImgLists(pred_files, gt_files, args)
    ours = _ours(pairs, 19)
    for train_id in range(19):
        name = trainId2label[train_id].name
        theirs = result["classScores"][name]
        mine = ours["per_class_iou"][str(train_id)]
        assert (math.isnan(theirs) and math.isnan(mine)) or mine == pytest.approx(theirs * 100,
                                                                                 abs=1e-9)
    their_mean = np.nanmean([result["classScores"][trainId2label[t].name] for t in range(19)])
    assert ours["miou"] == pytest.approx(their_mean * 100, abs=1e-9)


class _TinySegmentor(nn.Module):
    """Logits at a quarter of the input (stride 4), like the suite's models."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 5, stride=4, padding=2)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.conv(x))


@pytest.mark.parametrize("size,window,stride", [((75, 101), (32, 48), (21, 32)),
                                                ((64, 64), (96, 96), (64, 64))])
def test_slide_inference_equals_mmseg(mmseg, size, window, stride):
    from mmseg.models.segmentors import EncoderDecoder

    model = _TinySegmentor()
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))

    def encode_decode(crop: torch.Tensor, metas: list) -> torch.Tensor:
        # MMSeg's decode head resizes its logits to the crop's input size (bilinear)
        return F.interpolate(model(crop).logits, size=crop.shape[-2:], mode="bilinear",
                             align_corners=False)

    fake = SimpleNamespace(test_cfg=SimpleNamespace(stride=stride, crop_size=window),
                           out_channels=5, encode_decode=encode_decode)
    metas = [dict(img_shape=size, pad_shape=size, ori_shape=size)]
    with torch.no_grad():
        theirs = EncoderDecoder.slide_inference(fake, images, metas)
        ours = slide_logits(model, images, 5, window, stride)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
