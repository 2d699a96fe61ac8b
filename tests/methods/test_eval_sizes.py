"""Every paper model evaluates at input sizes not divisible by 32, whole-image and sliding-window.

The real Table-1 networks (random weights, 150 classes) at small inputs: ADE20K's test-time
resize gives sizes such as 683x512 (HRNet crashed there: fuse layers upsampled by a fixed
factor, docs/fidelity.md), scaled down here to keep the file cheap on two CPU cores. Evaluation
runs through the engine's `predict_confusion` (whole, or MMSeg's slide mode from the EvalSpec).
"""

from __future__ import annotations

import math
import pytest
import torch

from benchmark.config import EvalSpec
from benchmark.train.evaluate import predict_confusion
from experiments.paper_models import PAPER_MODELS
from methods import build_model

NUM_CLASSES = 150
BASELINES = {pm.pair: pm for pm in PAPER_MODELS}  # the Table-1 baselines
OUTPUT_STRIDE = {"fcn": 8, "hrnet": 4, "swin": 4, "segformer": 4}  # of the decoder's output


@pytest.fixture(scope="module", params=sorted(BASELINES))
def paper_model(request):
    torch.manual_seed(0)
    return request.param, build_model(BASELINES[request.param].model, NUM_CLASSES).eval()


def _samples(h: int, w: int, n: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(h * w)
    return [(torch.randn(3, h, w, generator=gen),
             torch.randint(0, NUM_CLASSES, (h, w), generator=gen)) for _ in range(n)]


def _evaluate(model, data, mode: EvalSpec) -> torch.Tensor:
    slide = mode.mode == "slide"
    return predict_confusion(
        model, data, NUM_CLASSES, ignore_index=255, batch_size=mode.batch_size, progress=False,
        window=(mode.window_h, mode.window_w) if slide else None,
        stride=(mode.stride_h, mode.stride_w) if slide else None,
    )


def test_whole_image_logits_cover_an_input_not_divisible_by_32(paper_model) -> None:
    pair, model = paper_model
    h, w = 50, 67  # 683x512 (ADE20K's test size of a 4:3 image) scaled down
    with torch.no_grad():
        logits = model(torch.randn(1, 3, h, w)).logits
    s = OUTPUT_STRIDE[pair]
    assert logits.shape == (1, NUM_CLASSES, math.ceil(h / s), math.ceil(w / s))
    assert torch.isfinite(logits).all()
    cm = _evaluate(model, _samples(h, w), EvalSpec(batch_size=1, mode="whole"))
    assert cm.sum() == h * w  # every pixel predicted: logits upsampled to the input's size


def test_sliding_window_evaluation_at_a_size_not_divisible_by_32(paper_model) -> None:
    _, model = paper_model
    h, w = 62, 83  # 500x375 (an ADE20K original) scaled down by 6; 2 x 3 overlapping windows
    slide = EvalSpec(batch_size=1, mode="slide", window_h=48, window_w=48, stride_h=32,
                     stride_w=32)
    cm = _evaluate(model, _samples(h, w), slide)
    assert cm.sum() == h * w


def test_hrnet_whole_image_at_ade20k_size_683x512() -> None:
    """The size of the original crash report: branches 128x171, 64x86, 32x43, 16x22."""
    torch.manual_seed(0)
    model = build_model(BASELINES["hrnet"].model, NUM_CLASSES).eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 512, 683))
        logits = model.head(model.decoder(feats)).logits
    assert [tuple(f.shape[-2:]) for f in feats] == [(128, 171), (64, 86), (32, 43), (16, 22)]
    assert logits.shape == (1, NUM_CLASSES, 128, 171)
