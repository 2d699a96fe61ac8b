"""methods/deterministic.py: the matmul interpolation and the atomics-free cross-entropy
reductions equal torch's ops (float64, so equal means to 1e-12), and the swap is scoped."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from methods.deterministic import deterministic_ops
from methods.interpolation import interpolation_matrix, matmul_interpolate

SIZES_IN = [(16, 16), (7, 13), (64, 32), (1, 5)]
SIZES_OUT = [(128, 128), (31, 17), (16, 16), (8, 8), (3, 200)]


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_by_size_equals_torch_forward_and_backward(align_corners: bool) -> None:
    torch.manual_seed(0)
    for (h, w), (H, W) in itertools.product(SIZES_IN, SIZES_OUT):
        x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
        ref = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=align_corners)
        out = matmul_interpolate(x, size=(H, W), align_corners=align_corners)
        grad = torch.randn_like(ref)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0],
                                   torch.autograd.grad(ref, x, grad)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 4, 0.5, 1.5, (2, 3), 8])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("recompute", [None, True])
def test_bilinear_by_scale_factor_equals_torch(scale, align_corners, recompute) -> None:
    x = torch.randn(1, 2, 10, 12, dtype=torch.float64)
    kwargs = dict(scale_factor=scale, mode="bilinear", align_corners=align_corners,
                  recompute_scale_factor=recompute)
    ref = F.interpolate(x, **kwargs)
    with deterministic_ops():
        out = F.interpolate(x, **kwargs)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_linear_1d_and_float32_and_same_size() -> None:
    x = torch.randn(2, 4, 9, dtype=torch.float64)
    for align_corners in (False, True):
        ref = F.interpolate(x, size=20, mode="linear", align_corners=align_corners)
        torch.testing.assert_close(matmul_interpolate(x, size=20, align_corners=align_corners),
                                   ref, rtol=0, atol=1e-12)
    x32 = torch.randn(1, 3, 16, 16)
    ref32 = F.interpolate(x32, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(matmul_interpolate(x32, size=(64, 64)), ref32)  # float rounding
    same = matmul_interpolate(x32, size=(16, 16))
    assert torch.equal(same, x32) and same is not x32  # a copy, as torch returns
    rows = interpolation_matrix(5, 11, align_corners=False)
    torch.testing.assert_close(rows.sum(1), torch.ones(11))  # weights of each output sum to 1


def test_modules_and_other_modes_go_through_or_around_the_swap() -> None:
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    up = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    ref_nearest = F.interpolate(x, scale_factor=2, mode="nearest")
    original = F.interpolate
    with deterministic_ops():
        assert F.interpolate is not original
        torch.testing.assert_close(up(x), original(x, scale_factor=2, mode="bilinear",
                                                   align_corners=False), rtol=0, atol=1e-12)
        assert torch.equal(F.interpolate(x, scale_factor=2, mode="nearest"), ref_nearest)
        image = torch.randint(0, 256, (1, 3, 5, 7), dtype=torch.uint8)  # torch's own rounding
        assert torch.equal(F.interpolate(image, size=(9, 4), mode="bilinear"),
                           original(image, size=(9, 4), mode="bilinear"))
    assert F.interpolate is original
    with deterministic_ops():
        with deterministic_ops():
            pass
        assert F.interpolate is not original  # a nested block restores what it found
    with pytest.raises(RuntimeError), deterministic_ops():
        raise RuntimeError("restored on the way out")
    assert F.interpolate is original and F.cross_entropy.__module__ == "torch.nn.functional"


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_nll_equal_torch(weighted: bool, reduction: str) -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 7, 9, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (2, 7, 9))
    labels[0, :3] = 255
    weight = torch.rand(5, dtype=torch.float64) + 0.5 if weighted else None
    ref = F.cross_entropy(logits, labels, weight=weight, ignore_index=255, reduction=reduction)
    ref_nll = F.nll_loss(logits.log_softmax(1), labels, weight=weight, ignore_index=255,
                         reduction=reduction)
    with deterministic_ops():
        out = F.cross_entropy(logits, labels, weight=weight, ignore_index=255,
                              reduction=reduction)
        out_nll = F.nll_loss(logits.log_softmax(1), labels, weight, None, 255, None, reduction)
        module = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=255,
                                           reduction=reduction)(logits, labels)
    for value in (out, out_nll, module):
        torch.testing.assert_close(value, ref if value is not out_nll else ref_nll,
                                   rtol=0, atol=1e-12)
    grad = torch.ones_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, logits, grad)[0],
                               torch.autograd.grad(ref, logits, grad)[0], rtol=0, atol=1e-12)


def test_cross_entropy_edge_cases_match_torch() -> None:
    logits = torch.randn(3, 4, dtype=torch.float64)
    ignored = torch.full((3,), -100)
    smoothing = dict(label_smoothing=0.1)
    probabilities = torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    refs = [F.cross_entropy(logits, ignored), F.cross_entropy(logits, torch.tensor([0, 1, 2]),
                                                             **smoothing),
            F.cross_entropy(logits, probabilities)]
    with deterministic_ops():
        outs = [F.cross_entropy(logits, ignored), F.cross_entropy(logits, torch.tensor([0, 1, 2]),
                                                                 **smoothing),
                F.cross_entropy(logits, probabilities)]
    assert torch.isnan(refs[0]) and torch.isnan(outs[0])  # every item ignored: 0 / 0, as torch
    torch.testing.assert_close(outs[1:], refs[1:], rtol=0, atol=1e-12)


def test_half_precision_input_rounds_once_as_torch_does() -> None:
    """bf16 in, bf16 out, computed in float32 (as torch's kernel): at most one bf16 rounding
    step from the float32 result, at a ratio whose weights bf16 cannot hold exactly."""
    x = torch.randn(1, 4, 7, 9).to(torch.bfloat16)
    exact = F.interpolate(x.float(), size=(23, 31), mode="bilinear", align_corners=False)
    ours = matmul_interpolate(x, size=(23, 31))
    assert ours.dtype == torch.bfloat16
    ulp = exact.abs().clamp(min=1e-3) * 2.0 ** -7
    assert ((ours.float() - exact).abs() <= ulp).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert matmul_interpolate(x.float(), size=(23, 31)).dtype == torch.float32


def test_attention_runs_on_its_math_backend_in_the_block(monkeypatch) -> None:
    """On a GPU, scaled-dot-product attention picks the memory-efficient kernel, whose backward
    adds with atomics (torch only warns under warn_only); the block allows only the math
    backend, and the MiT backbone (transformers' SegFormer, sdpa attention) runs in it."""
    from methods.backbones import mit_b0

    cuda = torch.backends.cuda
    backends = (cuda.flash_sdp_enabled, cuda.mem_efficient_sdp_enabled, cuda.math_sdp_enabled)
    calls = []  # the backends each attention call could choose from
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(
        [enabled() for enabled in backends]) or sdpa(*a, **k))
    before = [enabled() for enabled in backends]
    backbone = mit_b0().eval()  # no stochastic depth: the two forwards must agree
    x = torch.randn(1, 3, 64, 64)
    ref = [f.detach() for f in backbone(x)]
    assert len(calls) == 8  # MiT-B0's 8 blocks, one attention each
    with deterministic_ops():
        out = backbone(x)
        sum(f.sum() for f in out).backward()
    assert calls[8:] == [[False, False, True]] * 8
    assert [enabled() for enabled in backends] == before
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-5)
