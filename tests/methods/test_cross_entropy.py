"""methods/cross_entropy.py: the CPU training swap gives torch's cross-entropy loss bit for bit
and its gradient to float rounding (float64: 1e-12), takes torch's for every other call, refuses
a second backward, and restores `F.cross_entropy`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import methods.cross_entropy as cross_entropy
from methods.cross_entropy import fused_cross_entropy, fused_cross_entropy_loss


def loss_and_grad(fn, x: torch.Tensor, *args, upstream: float = 1.7, **kwargs):
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kwargs)
    (loss * upstream).backward()
    return loss.detach(), x.grad


def labels(shape: tuple[int, ...], classes: int, ignore: int, share: float, seed: int = 0
           ) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, shape, generator=gen)
    return target.masked_fill(torch.rand(shape, generator=gen) < share, ignore)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(2, 7, 5, 6), (9, 4), (2, 3, 4, 5, 2)])
def test_equals_torch_loss_bitwise_and_gradient(reduction, weighted, shape) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64) * 3
    target = labels((shape[0], *shape[2:]), shape[1], 255, 0.3)
    weight = torch.rand(shape[1], dtype=torch.float64) + 0.5 if weighted else None
    ref, grad_ref = loss_and_grad(F.cross_entropy, x, target, weight, ignore_index=255,
                                  reduction=reduction)
    out, grad = loss_and_grad(fused_cross_entropy, x, target, weight, ignore_index=255,
                              reduction=reduction)
    assert torch.equal(out, ref)  # the same log_softmax and nll_loss
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)
    assert grad.abs().sum() > 0


def test_float32_channels_last_and_default_ignore_index() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 11, 8, 9).to(memory_format=torch.channels_last)
    target = labels((2, 8, 9), 11, -100, 0.2)
    ref, grad_ref = loss_and_grad(F.cross_entropy, x, target)
    out, grad = loss_and_grad(fused_cross_entropy, x, target)
    assert torch.equal(out, ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nothing_labelled_gives_torchs_loss_and_a_zero_gradient(reduction) -> None:
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    target = torch.full((2, 3, 3), 255)
    for weight in (None, torch.rand(5, dtype=torch.float64)):
        ref, grad_ref = loss_and_grad(F.cross_entropy, x, target, weight, ignore_index=255,
                                      reduction=reduction)
        out, grad = loss_and_grad(fused_cross_entropy, x, target, weight, ignore_index=255,
                                  reduction=reduction)
        torch.testing.assert_close(out, ref, equal_nan=True)  # mean: nan (0 / 0), as torch
        assert torch.equal(grad, grad_ref) and not grad.any()


@pytest.mark.parametrize("ignored", [False, True])
def test_zero_or_infinite_class_weights_give_torchs_nans_where_torch_has_them(ignored) -> None:
    """Labelled weights summing to 0: nan on the labelled pixels, 0 on ignored ones; an infinite
    weight of an ignored pixel's stand-in class (0) does not reach it."""
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    if ignored:
        target[0, 0] = 255
    for weight in ([0.0, 1.0, 2.0], [float("inf"), 1.0, 2.0]):
        weight = torch.tensor(weight, dtype=torch.float64)
        ref, grad_ref = loss_and_grad(F.cross_entropy, x, target, weight, ignore_index=255)
        out, grad = loss_and_grad(fused_cross_entropy, x, target, weight, ignore_index=255)
        torch.testing.assert_close(out, ref, equal_nan=True)
        assert torch.equal(grad.isnan(), grad_ref.isnan())
        torch.testing.assert_close(grad.nan_to_num(), grad_ref.nan_to_num(), rtol=0, atol=1e-12)
        assert grad.isnan().any() and (not ignored or not grad[0, :, 0].isnan().any())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_the_target_dtypes_torch_takes(dtype) -> None:
    """uint8 and int64 class indices, as torch takes them (int32: torch's error, below)."""
    x = torch.randn(12, 5, dtype=torch.float64)
    target = labels((12,), 5, 4, 0.25).to(dtype)  # class 4 stands for "ignored" here
    weight = torch.rand(5, dtype=torch.float64) + 0.5
    with pytest.raises(RuntimeError, match="target dtype"):
        fused_cross_entropy(x.requires_grad_(True), target.int())
    ref, grad_ref = loss_and_grad(F.cross_entropy, x, target, weight, ignore_index=4)
    out, grad = loss_and_grad(fused_cross_entropy, x, target, weight, ignore_index=4)
    assert torch.equal(out, ref)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)


def test_a_target_out_of_range_raises_as_torch() -> None:
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 3)
    with pytest.raises((IndexError, RuntimeError)):
        F.cross_entropy(x, target)
    with pytest.raises((IndexError, RuntimeError)):
        fused_cross_entropy(x, target)


def test_a_second_backward_raises_instead_of_using_the_consumed_buffer() -> None:
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = fused_cross_entropy(x, torch.zeros(1, 2, 2, dtype=torch.long))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        loss.backward()


def test_the_swap_covers_training_losses_only_and_restores_torchs(monkeypatch) -> None:
    calls = []
    fused = cross_entropy._FusedCrossEntropy.apply
    monkeypatch.setattr(cross_entropy._FusedCrossEntropy, "apply",
                        lambda *a: calls.append(a[-1]) or fused(*a))
    x = torch.randn(2, 16, 256, 256, requires_grad=True)
    assert x.numel() == cross_entropy.FUSED_MIN_NUMEL  # the smallest fused loss
    assert x.shape[1] == cross_entropy.FUSED_MIN_CLASSES
    target = labels((2, 256, 256), 16, 255, 0.2)
    original = F.cross_entropy
    with fused_cross_entropy_loss():
        assert getattr(F.cross_entropy, "fused", False)
        F.cross_entropy(x, target, ignore_index=255)
        torch.nn.CrossEntropyLoss(ignore_index=255, reduction="sum")(x, target)
        assert calls == ["mean", "sum"]
        F.cross_entropy(x[:, :, 1:], target[:, 1:], ignore_index=255)  # small: torch's
        few = torch.randn(2, 15, 512, 512, requires_grad=True)  # 15 classes: torch's
        F.cross_entropy(few, labels((2, 512, 512), 15, 255, 0.2), ignore_index=255)
        F.cross_entropy(x, target, ignore_index=255, reduction="none")  # torch's
        F.cross_entropy(x, target, label_smoothing=0.1, ignore_index=255)
        F.cross_entropy(x.softmax(1), x.detach().softmax(1))  # probabilities as targets
        F.cross_entropy(x.detach(), target, ignore_index=255)  # no gradient wanted
        with torch.no_grad():
            F.cross_entropy(x, target, ignore_index=255)
        F.cross_entropy(x.bfloat16(), target, ignore_index=255)  # torch's for half types
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.cross_entropy(x, target, ignore_index=255)
        with pytest.raises(RuntimeError, match="weight"):  # torch's own error
            F.cross_entropy(x, target, torch.ones(16, requires_grad=True), ignore_index=255)
        assert calls == ["mean", "sum"]
        seen = []

        class Traced(torch.Tensor):  # a subclass's __torch_function__ sees the loss call first
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                seen.append(getattr(func, "__name__", ""))
                return super().__torch_function__(func, types, args, kwargs or {})

        F.cross_entropy(x.as_subclass(Traced), target, ignore_index=255)
        assert seen[0] == "cross_entropy"  # before the swap looks at the tensor
    assert F.cross_entropy is original


def test_the_swap_falls_back_to_what_was_there_before(monkeypatch) -> None:
    """Another swap or a wrapper already in place keeps the calls the fused loss leaves."""
    seen = []
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy",
                        lambda *a, **k: seen.append(k["reduction"]) or real(*a, **k))
    with fused_cross_entropy_loss():
        F.cross_entropy(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1]),
                        reduction="sum")
    assert seen == ["sum"] and F.cross_entropy is not real
