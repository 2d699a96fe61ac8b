"""LayerNorm then L2 normalisation over the channels of a (B, D, ...) map, as one autograd op.

The prototype head embeds pixels with `normalize(LayerNorm_D(x))`. With stock ops that needs
the map channels-last (a transposing copy each way, and a channels-last gradient that slows the
decoder's backward) and autograd's F.normalize backward, about seven passes over the map. Here
both normalisations reduce over dim 1 in place, forward and backward written out: same values
and gradients as `F.normalize(F.layer_norm(x.movedim(1, -1), ...), dim=-1).movedim(-1, 1)`
(tests/methods/test_fused_ops.py checks them, gradcheck included).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

L2_EPS = 1e-12  # F.normalize's default


def layer_norm_l2(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """`normalize(weight * (x - mean) / sqrt(var + eps) + bias)`, mean, biased variance and the
    L2 norm all over dim 1 of `x` (B, D, ...); weight and bias (D,)."""
    return _LayerNormL2.apply(x, weight, bias, eps)


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)


class _LayerNormL2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor,
                eps: float) -> Tensor:
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        if x.dtype in (torch.float16, torch.bfloat16):  # as autocast runs layer_norm: float32
            x = x.float()
        weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        shape = _channel_shape(x)
        xhat = x - x.mean(dim=1, keepdim=True)
        rstd = xhat.square().mean(dim=1, keepdim=True).add_(eps).rsqrt_()
        xhat.mul_(rstd)
        y = torch.addcmul(bias.view(shape), xhat, weight.view(shape))
        norm = (y * y).sum(dim=1, keepdim=True).sqrt_()  # 7x faster than vector_norm over dim 1
        inv = norm.clamp_min(L2_EPS).reciprocal_()
        e = y.mul_(inv)
        ctx.save_for_backward(xhat, e, rstd, inv, norm >= L2_EPS, weight)
        return e

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        xhat, e, rstd, inv, unclamped, weight = ctx.saved_tensors
        grad = grad.to(e.dtype)
        shape = _channel_shape(xhat)
        others = [d for d in range(xhat.dim()) if d != 1]
        # L2: d e / d y = (I - e e^T) / |y|; a clamped norm is a constant (plain division)
        along = (grad * e).sum(dim=1, keepdim=True).mul_(unclamped)
        grad_y = torch.addcmul(grad, e, along, value=-1.0).mul_(inv)
        prod = grad_y * xhat  # serves the weight's gradient and the LayerNorm's
        grad_w = prod.sum(dim=others) if ctx.needs_input_grad[1] else None
        grad_b = grad_y.sum(dim=others) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:  # LayerNorm: rstd (g - mean(g) - xhat mean(g xhat))
            g = grad_y.mul_(weight.view(shape))  # g = grad_y * weight
            mean_g = g.mean(dim=1, keepdim=True)
            # mean over channels of g * xhat = weight . prod / D: a matmul, no third product
            mean_gx = torch.matmul(weight[None] / weight.numel(), prod.flatten(2))
            grad_x = g.sub_(mean_g).addcmul_(xhat, mean_gx.view_as(mean_g), value=-1.0)
            grad_x.mul_(rstd)
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        return (None if grad_x is None else grad_x.to(x_dtype),
                None if grad_w is None else grad_w.to(w_dtype),
                None if grad_b is None else grad_b.to(b_dtype), None)
