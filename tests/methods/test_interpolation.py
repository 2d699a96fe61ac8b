"""methods/interpolation.py: the CPU training swap (`matmul_backward_interpolation`) gives
torch's forward and gradient (float64, so equal means to 1e-12), takes torch's kernel where it
does not apply, and restores `F.interpolate`."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import methods.interpolation as interpolation
from methods.deterministic import deterministic_ops
from methods.interpolation import MATMUL_FORWARD_MAX_SIDE, matmul_backward_interpolation

# input sides on both sides of MATMUL_FORWARD_MAX_SIDE: the matmul forward and torch's
SIZES_IN = [(16, 16), (7, 13), (1, 5), (MATMUL_FORWARD_MAX_SIDE + 1, 20), (80, 96)]
SIZES_OUT = [(128, 128), (31, 17), (16, 16), (8, 8), (3, 200)]


def swapped_and_torch(x: torch.Tensor, **kwargs) -> tuple[torch.Tensor, ...]:
    """(output, gradient) of the swap and of torch's own F.interpolate, for one upstream grad."""
    ref = F.interpolate(x, **kwargs)
    with matmul_backward_interpolation():
        out = F.interpolate(x, **kwargs)
    grad = torch.randn_like(ref)
    return (out, ref, torch.autograd.grad(out, x, grad)[0],
            torch.autograd.grad(ref, x, grad)[0])


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_by_size_equals_torch_forward_and_backward(align_corners: bool) -> None:
    torch.manual_seed(0)
    for (h, w), (H, W) in itertools.product(SIZES_IN, SIZES_OUT):
        x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
        out, ref, grad, grad_ref = swapped_and_torch(x, size=(H, W), mode="bilinear",
                                                     align_corners=align_corners)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 4, 0.5, 1.5, (2, 3), 8])
@pytest.mark.parametrize("recompute", [None, True])
@pytest.mark.parametrize("side", [12, 70])  # the matmul forward and torch's
def test_bilinear_by_scale_factor_equals_torch(scale, recompute, side) -> None:
    x = torch.randn(1, 2, side, side - 2, dtype=torch.float64, requires_grad=True)
    for align_corners in (False, True):
        out, ref, grad, grad_ref = swapped_and_torch(
            x, scale_factor=scale, mode="bilinear", align_corners=align_corners,
            recompute_scale_factor=recompute)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)


def test_linear_and_float32_and_channels_last_inputs() -> None:
    x = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    out, ref, grad, grad_ref = swapped_and_torch(x, size=40, mode="linear", align_corners=False)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)
    for side in (16, 96):  # float32 (the engine's): equal to float rounding
        x32 = torch.randn(2, 8, side, side).contiguous(memory_format=torch.channels_last)
        x32.requires_grad_(True)
        out, ref, grad, grad_ref = swapped_and_torch(x32, size=(130, 140), mode="bilinear",
                                                     align_corners=False)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(grad, grad_ref)


def test_the_autograd_function_passes_gradcheck() -> None:
    for side in (5, MATMUL_FORWARD_MAX_SIDE + 3):
        x = torch.randn(1, 2, side, 4, dtype=torch.float64, requires_grad=True)
        with matmul_backward_interpolation():
            assert torch.autograd.gradcheck(
                lambda t: F.interpolate(t, size=(side + 3, 9), mode="bilinear"), (x,))


def test_the_forward_is_torchs_kernel_above_the_size_limit_and_matmuls_up_to_it(
        monkeypatch) -> None:
    calls, torch_interpolate = [], interpolation.TORCH_INTERPOLATE

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return torch_interpolate(*args, **kwargs)

    monkeypatch.setattr(interpolation, "TORCH_INTERPOLATE", counted)
    small = torch.randn(1, 2, MATMUL_FORWARD_MAX_SIDE, 8, requires_grad=True)
    large = torch.randn(1, 2, MATMUL_FORWARD_MAX_SIDE + 1, 8, requires_grad=True)
    with matmul_backward_interpolation():
        F.interpolate(small, scale_factor=2, mode="bilinear").sum().backward()
        assert calls == []
        out = F.interpolate(large, scale_factor=2, mode="bilinear")
    assert calls == [large.shape]
    assert torch.equal(out, F.interpolate(large, scale_factor=2, mode="bilinear"))  # bitwise


def test_what_the_swap_does_not_cover_runs_torchs_kernel_bitwise() -> None:
    """Nearest, antialiased, integer, half-precision, no-gradient (evaluation) inputs: the
    same call to torch's F.interpolate, so bitwise the same result."""
    x = torch.randn(1, 3, 10, 12)
    needs_grad = x.clone().requires_grad_(True)
    cases = [
        (x, dict(size=(20, 24), mode="bilinear", align_corners=False)),  # no gradient
        (needs_grad, dict(size=(20, 24), mode="nearest")),
        (needs_grad, dict(size=(5, 6), mode="bilinear", antialias=True)),
        (needs_grad.detach().bfloat16().requires_grad_(True), dict(size=(20, 24),
                                                                   mode="bilinear")),
        ((x * 50).clamp(0, 255).to(torch.uint8), dict(size=(20, 24), mode="bilinear")),
    ]
    for tensor, kwargs in cases:
        ref = F.interpolate(tensor, **kwargs)
        with matmul_backward_interpolation():
            out = F.interpolate(tensor, **kwargs)
            with torch.no_grad():
                no_grad = F.interpolate(needs_grad, size=(20, 24), mode="bilinear")
        assert torch.equal(out, ref) and out.grad_fn.__class__ == ref.grad_fn.__class__
        assert torch.equal(no_grad, F.interpolate(x, size=(20, 24), mode="bilinear"))


def test_the_swap_is_scoped_and_nests_with_the_deterministic_one() -> None:
    original = F.interpolate
    with matmul_backward_interpolation():
        assert F.interpolate is interpolation._training_interpolate
        with deterministic_ops():
            assert F.interpolate not in (original, interpolation._training_interpolate)
        assert F.interpolate is interpolation._training_interpolate
    assert F.interpolate is original
    with pytest.raises(RuntimeError), matmul_backward_interpolation():
        raise RuntimeError("a failing step")
    assert F.interpolate is original


@pytest.mark.parametrize("side", [10, MATMUL_FORWARD_MAX_SIDE + 6])  # both forwards
def test_an_axis_that_keeps_its_size_under_a_scale_factor_is_copied_as_torch_does(side) -> None:
    """floor(3 * 1.3) = 3: torch's CPU kernel copies that axis and scales the other."""
    from methods.interpolation import matmul_interpolate

    x = torch.randn(1, 2, side, 3, dtype=torch.float64, requires_grad=True)
    for align_corners in (False, True):
        out, ref, grad, grad_ref = swapped_and_torch(x, scale_factor=1.3, mode="bilinear",
                                                     align_corners=align_corners)
        assert out.shape[-1] == 3
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(matmul_interpolate(x, scale_factor=1.3,
                                                      align_corners=align_corners),
                                   ref, rtol=0, atol=1e-12)
    line = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    out, ref, grad, grad_ref = swapped_and_torch(line, scale_factor=1.3, mode="linear")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)


def test_unusual_arguments_get_torchs_checks_and_cpu_autocast_gets_torchs_kernel() -> None:
    """What torch refuses, the swap refuses with torch's error; numpy sizes work as in torch;
    under CPU autocast the call is torch's own (its dtypes, no mixed-dtype matmul)."""
    import numpy as np

    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    bad = [dict(scale_factor=(2, 2, 2)), dict(size=(16, 16), recompute_scale_factor=True),
           dict(size=(16, 16, 16)), dict(size=0), dict(size=(16, 16), scale_factor=2)]
    for kwargs in bad:
        with pytest.raises((ValueError, RuntimeError)) as theirs:
            F.interpolate(x, mode="bilinear", **kwargs)
        with matmul_backward_interpolation(), pytest.raises(type(theirs.value)) as ours:
            F.interpolate(x, mode="bilinear", **kwargs)
        assert str(ours.value) == str(theirs.value)
    for kwargs in (dict(size=(np.int64(16), np.int64(12))), dict(scale_factor=np.float32(1.5))):
        out, ref, grad, grad_ref = swapped_and_torch(x, mode="bilinear", **kwargs)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(grad, grad_ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.interpolate(x, size=(16, 16), mode="bilinear")
        with matmul_backward_interpolation():
            out = F.interpolate(x, size=(16, 16), mode="bilinear")
    assert out.dtype == ref.dtype and torch.equal(out, ref)
    out.float().sum().backward()
