"""Cross-entropy normalisation (benchmark/train/optim.py): `labelled` is torch's mean over
labelled pixels, `all_pixels` divides the same sum by every pixel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.train.optim import labelled_share, rescale_aux_loss, seg_cross_entropy

IGNORE = 255


def _batch(ignored: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 9, 11, generator=g)
    labels = torch.randint(0, 5, (2, 9, 11), generator=g)
    labels[torch.rand(2, 9, 11, generator=g) < ignored] = IGNORE
    return logits, labels


def test_labelled_is_torchs_ignore_index_mean() -> None:
    logits, labels = _batch(0.3)
    assert torch.equal(seg_cross_entropy(logits, labels, IGNORE),
                       F.cross_entropy(logits, labels, ignore_index=IGNORE))


@pytest.mark.parametrize("ignored", [0.0, 0.1, 0.4])
def test_all_pixels_is_the_labelled_mean_times_the_labelled_share(ignored: float) -> None:
    logits, labels = _batch(ignored)
    labelled = seg_cross_entropy(logits, labels, IGNORE, "labelled")
    every = seg_cross_entropy(logits, labels, IGNORE, "all_pixels")
    share = labelled_share(labels, IGNORE)
    assert every.item() == pytest.approx((labelled * share).item(), rel=1e-6)
    per_pixel = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    assert every.item() == pytest.approx(per_pixel.mean().item(), rel=1e-6)
    if ignored:
        assert every < labelled


def test_all_pixels_with_nothing_labelled_is_zero_with_a_gradient() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), IGNORE)
    loss = seg_cross_entropy(logits, labels, IGNORE, "all_pixels")
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_aux_loss_is_rescaled_only_for_all_pixels() -> None:
    _, labels = _batch(0.25)
    share = labelled_share(labels, IGNORE)
    losses = {"aux": torch.tensor(2.0), "ppc": torch.tensor(1.0)}
    rescale_aux_loss(losses, labels, IGNORE, "labelled")
    assert losses["aux"].item() == 2.0
    rescale_aux_loss(losses, labels, IGNORE, "all_pixels")
    assert losses["aux"].item() == pytest.approx(2.0 * share.item())
    assert losses["ppc"].item() == 1.0  # the head's own terms are not cross-entropies


def test_unknown_average_is_refused() -> None:
    logits, labels = _batch(0.1)
    with pytest.raises(ValueError, match="ce_average"):
        seg_cross_entropy(logits, labels, IGNORE, "mean")


def test_class_weights_follow_the_released_configs_weighted_mean() -> None:
    """`protoseg_cityscapes`: sum of w_y * loss / sum of w_y over labelled pixels (the released
    code's weighted nn.CrossEntropyLoss), computed here by hand."""
    import torch

    from benchmark.train.optim import CLASS_WEIGHTS, seg_cross_entropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 19, 3, 4, generator=g)
    labels = torch.randint(0, 19, (2, 3, 4), generator=g)
    labels[0, 0] = 255
    w = torch.tensor(CLASS_WEIGHTS["protoseg_cityscapes"])
    nll = -torch.log_softmax(logits, 1).gather(1, labels.clamp(max=18)[:, None])[:, 0]
    keep = labels != 255
    weighted = w[labels.clamp(max=18)] * nll
    expected = weighted[keep].sum() / w[labels[keep]].sum()
    got = seg_cross_entropy(logits, labels, 255, "labelled", "protoseg_cityscapes")
    assert torch.allclose(got, expected, atol=1e-6)
    all_pixels = seg_cross_entropy(logits, labels, 255, "all_pixels", "protoseg_cityscapes")
    assert torch.allclose(all_pixels, weighted[keep].sum() / labels.numel(), atol=1e-6)
    assert not torch.allclose(got, seg_cross_entropy(logits, labels, 255, "labelled"))
    try:
        seg_cross_entropy(logits[:, :11], labels.clamp(max=10), 255, "labelled",
                          "protoseg_cityscapes")
    except ValueError as err:
        assert "19 classes, the model 11" in str(err)
    else:
        raise AssertionError("weights of another data set must be refused")


def test_bf16_logits_are_upsampled_in_float32(monkeypatch) -> None:
    """Under bf16 autocast (train.amp on a GPU; the CPU's autocast here) the head's logits are
    bf16; the training step upsamples them in float32, so the loss sees no second rounding."""
    import benchmark.train.engine as engine
    from experiments.smoke import smoke
    from methods import build_model

    torch.manual_seed(0)
    model = build_model(smoke().cells[0].model, 4, 255)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    seen = []
    real = engine.seg_cross_entropy
    monkeypatch.setattr(engine, "seg_cross_entropy",
                        lambda logits, *a: seen.append(logits) or real(logits, *a))
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    out = engine.training_step(model, optimizer, images, labels, 255, autocast=bf16).out
    assert out.logits.dtype == torch.bfloat16 and seen[0].dtype == torch.float32
    expected = F.interpolate(out.logits.float(), size=(32, 32), mode="bilinear",
                             align_corners=False)
    assert torch.equal(seen[0].detach(), expected.detach())
