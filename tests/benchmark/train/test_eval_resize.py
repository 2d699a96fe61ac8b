"""Whole-image evaluation resize (`eval.logit_resize`, benchmark/train/evaluate.py): `direct`
is one bilinear resize to the label, `via_input` goes through the network input's size first
(MMSeg's; compared with MMSeg itself in tests/fidelity/test_training.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.train.evaluate import upsample_logits


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def test_direct_is_one_resize_to_the_label() -> None:
    logits = torch.randn(2, 3, 8, 11)
    assert torch.equal(upsample_logits(logits, (64, 85), (47, 63)), _bilinear(logits, (47, 63)))


def test_via_input_resizes_to_the_input_then_to_the_label() -> None:
    logits = torch.randn(1, 3, 8, 11)
    want = _bilinear(_bilinear(logits, (64, 85)), (47, 63))
    got = upsample_logits(logits, (64, 85), (47, 63), "via_input")
    assert torch.equal(got, want)
    assert not torch.equal(got, upsample_logits(logits, (64, 85), (47, 63)))


def test_via_input_changes_nothing_when_logits_are_already_at_the_input_size() -> None:
    logits = torch.randn(1, 3, 64, 85)  # sliding-window logits come at the input's size
    assert torch.equal(upsample_logits(logits, (64, 85), (47, 63), "via_input"),
                       upsample_logits(logits, (64, 85), (47, 63), "direct"))
    half = torch.randn(1, 3, 32, 40).half()
    assert upsample_logits(half, (32, 40), (32, 40), "via_input").dtype == torch.float32


def test_openseg_resizes_to_the_input_with_align_corners_true() -> None:
    """The released ProtoSeg code's ss_test: F.interpolate(..., align_corners=True) to the
    input's size; on Cityscapes the input is the label's size, so that is the prediction."""
    logits = torch.randn(1, 3, 16, 32)
    want = F.interpolate(logits, size=(64, 128), mode="bilinear", align_corners=True)
    got = upsample_logits(logits, (64, 128), (64, 128), "openseg")
    assert torch.equal(got, want)
    assert not torch.allclose(got, upsample_logits(logits, (64, 128), (64, 128), "direct"))
    # a label of another size: then bilinear (align_corners=False) from the input's size
    assert torch.equal(upsample_logits(logits, (64, 128), (32, 60), "openseg"),
                       _bilinear(want, (32, 60)))


def test_the_released_recipe_and_its_zoo_checkpoint_evaluate_as_openseg() -> None:
    from experiments import get_grid

    for grid in ("table2", "zoo", "discrepancies"):
        for cell in get_grid(grid).cells:
            released = cell.data.channel_order == "bgr"  # the released recipe's cells
            assert (cell.eval.logit_resize == "openseg") == released, (grid, cell.row)
