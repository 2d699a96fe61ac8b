"""Class scores, PPC and PPD of the prototype head in one autograd op, on one (N, C*K) buffer.

Written with stock ops (`emb @ protos.T`, `.view(N, C, K).max(2)`, `ppc_loss`, `ppd_loss`), a
training step allocates five (N, C*K) tensors (similarities, log-softmax, and three gradients:
the max's and the gather's as zeros + scatter, the log-softmax's) and adds the gradients up. At
ADE20K's C*K = 1500 that is most of the head's cost beyond its two matmuls, and most of its extra
memory; on the CPU every fresh buffer of that size also costs page faults (glibc returns large
blocks to the OS). Here the similarities the head computed anyway become the log-softmax in
place, then, in the backward, the gradient in place: softmax scaled per row, plus scatters at
the PPC/PPD targets and at each class's best prototype. Values and gradients match the stock
ops (tests/methods/test_fused_ops.py).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

CPU_BLOCK_BYTES = 4 << 20  # row blocks of the in-place log-softmax on the CPU


def pixel_similarities(emb: Tensor, protos: Tensor) -> Tensor:
    """(B*P, C*K) similarities of pixel embeddings `emb` (B, D, P), channels first as a
    flattened NCHW map is (no transposing copy), to `protos` (C*K, D); rows in (b, p) order."""
    return torch.matmul(emb.transpose(1, 2), protos.t()).reshape(-1, protos.shape[0])


def scores_and_losses_(emb: Tensor, protos: Tensor, sims: Tensor, num_prototypes: int,
                       target: Tensor, ppc_tau: float = 1.0, ignore_index: int = -100
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """(scores, ppc, ppd) of pixel embeddings `emb` (B, D, P) against `protos` (C*K, D),
    grouped by class; differentiable in `emb` (its gradient comes back channels first, as
    contiguous as `emb`) and in `protos` if it requires grad.

    `sims` must be `pixel_similarities(emb, protos)` computed without grad (the caller needs it
    first, for the assignments); it is overwritten: do not use it afterwards. N = B*P pixels;
    scores (N, C): each class's best similarity; ppc: mean over pixels with a target (N,)
    (index among the C*K prototypes, `ignore_index` for none) of the cross-entropy of
    sims / ppc_tau; ppd: mean of (1 - sims[target])^2 over the same pixels; both unweighted,
    0 when no pixel has a target.
    Computed in float32 (or float64); cannot be differentiated twice.
    """
    if sims.requires_grad:
        raise ValueError("scores_and_losses_: compute sims under torch.no_grad(); it is consumed")
    return _ScoresAndLosses.apply(emb, protos, sims, num_prototypes, target, ppc_tau,
                                  ignore_index)


def log_softmax_(x: Tensor) -> Tensor:
    """Row-wise log-softmax of a 2-D float tensor, written into `x`."""
    if x.device.type == "cpu" and x.is_contiguous():
        # torch's CPU kernel finishes reading a row before it writes it: `out=x` is exact
        # (tests/methods/test_fused_ops.py) and saves a copy of the (N, C*K) buffer
        return torch.log_softmax(x, dim=1, out=x)
    rows = x.shape[0]
    if x.device.type == "cpu":  # small blocks: their temporaries are reused, not page-faulted
        rows = max(1, CPU_BLOCK_BYTES // max(1, x.shape[1] * x.element_size()))
    for start in range(0, x.shape[0], rows):
        block = x[start:start + rows]
        block.copy_(torch.log_softmax(block, dim=1))
    return x


class _ScoresAndLosses(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, emb: Tensor, protos: Tensor, sims: Tensor, k: int,
                target: Tensor, tau: float, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
        # exp and log over C*K columns want float32 (half precision under autocast is upcast)
        x = sims if sims.dtype in (torch.float32, torch.float64) else sims.float()
        n, ck = x.shape
        scores, best = x.view(n, ck // k, k).max(dim=2)
        valid = target != ignore_index
        index = torch.where(valid, target, 0)[:, None]
        count = valid.sum().clamp_min(1).to(x.dtype)
        own = x.gather(1, index).squeeze(1)  # each pixel's similarity to its target prototype
        if tau != 1.0:
            x.div_(tau)
        log_p = log_softmax_(x)
        ppc = -(log_p.gather(1, index).squeeze(1) * valid).sum() / count
        ppd = ((1.0 - own).pow(2) * valid).sum() / count
        best = best.to(torch.uint8) if k <= 256 else best  # 8x smaller while saved
        ctx.save_for_backward(emb, protos, log_p, best, index, valid, own, count)
        ctx.tau = tau
        ctx.mm_dtype = sims.dtype  # the matmuls' dtype (half under autocast), for the backward
        return scores, ppc, ppd

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_scores: Tensor | None, grad_ppc: Tensor | None,
                 grad_ppd: Tensor | None) -> tuple[Tensor | None, ...]:
        emb, protos, log_p, best, index, valid, own, count = ctx.saved_tensors
        n, c = best.shape
        grad = log_p  # the forward's buffer becomes d(outputs)/d(sims)
        at_target = torch.zeros_like(own)
        if grad_ppc is not None:  # d ppc / d sims = (softmax - one_hot(target)) / (tau * count)
            row = valid * (grad_ppc / (ctx.tau * count))
            grad.exp_().mul_(row[:, None])
            at_target -= row
        else:
            grad.zero_()
        if grad_ppd is not None:  # d ppd / d sims[target] = -2 (1 - own) / count
            at_target -= valid * (2.0 * grad_ppd / count) * (1.0 - own)
        grad.scatter_add_(1, index, at_target[:, None])
        if grad_scores is not None:  # the max passes each class's gradient to its best prototype
            grad.view(n, c, -1).scatter_add_(2, best.long()[..., None],
                                             grad_scores.to(grad.dtype)[..., None])
        # the gradient matmuls in the forward matmul's dtype, as autograd would run them
        dtype = ctx.mm_dtype
        per_image = grad.to(dtype).view(emb.shape[0], emb.shape[2], -1).transpose(1, 2)
        grad_emb = grad_protos = None
        if ctx.needs_input_grad[0]:  # (D, C*K) @ (C*K, P) per image: channels first, no copy
            grad_emb = torch.matmul(protos.to(dtype).t(), per_image).to(emb.dtype)
        if ctx.needs_input_grad[1]:
            grad_protos = torch.matmul(per_image, emb.to(dtype).transpose(1, 2)).sum(0)
            grad_protos = grad_protos.to(protos.dtype)
        return grad_emb, grad_protos, None, None, None, None, None
