"""The prototype head's hand-written autograd ops equal the stock-op definitions they replace."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from methods.channel_norm import layer_norm_l2
from methods.heads import PrototypeHead
from methods.heads.base import downsample_labels
from methods.heads.prototype import IGNORE
from methods.losses import ppc_loss, ppd_loss
from methods.proto_scores import log_softmax_, pixel_similarities, scores_and_losses_
from methods.sinkhorn import sinkhorn_per_class


def reference_layer_norm_l2(x, weight, bias, eps=1e-5):
    normed = F.layer_norm(x.movedim(1, -1), (x.shape[1],), weight, bias, eps)
    return F.normalize(normed, dim=-1).movedim(-1, 1)


def test_layer_norm_l2_matches_stock_ops_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.double, requires_grad=True)
    w = torch.randn(6, generator=g, dtype=torch.double, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(layer_norm_l2, (x, w, b, 1e-5))
    grad = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.double)
    ours = torch.autograd.grad(layer_norm_l2(x, w, b), (x, w, b), grad)
    ref = torch.autograd.grad(reference_layer_norm_l2(x, w, b), (x, w, b), grad)
    torch.testing.assert_close(layer_norm_l2(x, w, b), reference_layer_norm_l2(x, w, b))
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r)


def test_layer_norm_l2_of_a_tiny_vector_divides_like_f_normalize() -> None:
    """A constant pixel gives y = bias; below 1e-12 the norm is clamped, as in F.normalize."""
    x = torch.ones(1, 4, 1, 2, dtype=torch.double, requires_grad=True)
    w = torch.ones(4, dtype=torch.double, requires_grad=True)
    b = torch.tensor([1e-13, -2e-13, 3e-13, 0.0], dtype=torch.double, requires_grad=True)
    grad = torch.arange(8, dtype=torch.double).reshape(1, 4, 1, 2)
    ours = torch.autograd.grad(layer_norm_l2(x, w, b), (x, w, b), grad)
    ref = torch.autograd.grad(reference_layer_norm_l2(x, w, b), (x, w, b), grad)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize(("k", "tau"), [(3, 1.0), (1, 1.0), (2, 0.1)])
def test_scores_and_losses_match_stock_ops(k: int, tau: float) -> None:
    g = torch.Generator().manual_seed(k)
    c, d, n_img, pixels = 4, 5, 2, 6
    emb = F.normalize(torch.randn(n_img, d, pixels, generator=g, dtype=torch.double), dim=1)
    emb.requires_grad_(True)
    protos = F.normalize(torch.randn(c * k, d, generator=g, dtype=torch.double), dim=1)
    protos.requires_grad_(True)
    target = torch.randint(0, c * k, (n_img * pixels,), generator=g)
    target[::4] = IGNORE
    with torch.no_grad():
        sims = pixel_similarities(emb, protos)
    scores, ppc, ppd = scores_and_losses_(emb, protos, sims, k, target, tau, IGNORE)

    ref_sims = emb.transpose(1, 2).reshape(-1, d) @ protos.t()
    ref_scores = ref_sims.view(-1, c, k).max(dim=2).values
    torch.testing.assert_close(scores, ref_scores)
    torch.testing.assert_close(ppc, ppc_loss(ref_sims, target, tau, IGNORE))
    torch.testing.assert_close(ppd, ppd_loss(ref_sims, target, IGNORE))

    weights = torch.randn(n_img * pixels, c, generator=g, dtype=torch.double)
    def total(s, a, b):  # noqa: E306 - every output takes part in the gradient
        return (s * weights).sum() + 0.7 * a + 1.3 * b
    ours = torch.autograd.grad(total(scores, ppc, ppd), (emb, protos))
    ref = torch.autograd.grad(total(ref_scores, ppc_loss(ref_sims, target, tau, IGNORE),
                                    ppd_loss(ref_sims, target, IGNORE)), (emb, protos))
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r)
    assert ours[0].is_contiguous()  # channels first, as the map it flows back into


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_log_softmax_equals_torchs_bit_for_bit(dtype) -> None:
    """On the CPU log_softmax_ writes torch's kernel's output over its input (`out=x`): exact
    only while that kernel reads each row before writing it, which this checks, for row
    lengths on both sides of a vector width, non-finite values and a strided input."""
    torch.manual_seed(0)
    for rows, cols in [(1, 1), (3, 7), (700, 1500), (33, 190), (5, 16)]:
        x = torch.randn(rows, cols, dtype=dtype) * 4
        if cols > 2:
            x[0, 1], x[-1, 2] = float("inf"), float("nan")
            x[1 % rows, :] = float("-inf")
        ref = torch.log_softmax(x, dim=1)
        out = log_softmax_(x.clone())
        assert torch.equal(out.nan_to_num(), ref.nan_to_num())
        assert torch.equal(out.isnan(), ref.isnan())
    strided = torch.randn(40, 30, dtype=dtype)[:, ::2]  # the row-block path
    ref = torch.log_softmax(strided, dim=1)
    assert torch.equal(log_softmax_(strided.clone()[:, :]), ref)
    assert torch.equal(log_softmax_(strided), ref)


def test_scores_and_losses_refuses_similarities_that_carry_grad() -> None:
    emb = torch.randn(1, 3, 4, requires_grad=True)
    protos = torch.randn(2, 3)
    with pytest.raises(ValueError, match="no_grad"):
        scores_and_losses_(emb, protos, pixel_similarities(emb, protos), 1,
                           torch.zeros(4, dtype=torch.long))


def reference_training_forward(head: PrototypeHead, feats: torch.Tensor, target: torch.Tensor):
    """The prototype head's training step written with stock ops only (its definition)."""
    b, _, h, w = feats.shape
    c, k = head.num_classes, head.num_prototypes
    norm = head.feat_norm
    emb = F.normalize(norm(feats.permute(0, 2, 3, 1)), dim=-1).reshape(-1, feats.shape[1])
    protos = F.normalize(head.prototypes, dim=-1).reshape(c * k, -1)
    sims = emb @ protos.t()
    scores = head.score_norm(sims.view(-1, c, k).max(dim=2).values)
    labels = downsample_labels(target, (h, w)).reshape(-1)
    valid = labels != head.ignore_index
    own = sims.detach().view(-1, c, k)[valid.nonzero().squeeze(1), labels[valid]]
    assign = sinkhorn_per_class(own, labels[valid], c, head.sinkhorn_eps,
                                head.sinkhorn_iters).argmax(dim=1)
    proto_target = torch.full_like(labels, IGNORE)
    proto_target[valid] = labels[valid] * k + assign
    correct = scores.detach()[valid].argmax(dim=1) == labels[valid]
    with torch.no_grad():  # the momentum update, written out
        index = proto_target[valid][correct]
        sums = torch.zeros(c * k, emb.shape[1], dtype=emb.dtype).index_add_(
            0, index, emb.detach()[valid][correct])
        hit = torch.bincount(index, minlength=c * k) > 0
        old = head.prototypes.reshape(c * k, -1)
        moved = F.normalize(head.gamma * old + (1 - head.gamma) * F.normalize(sums, dim=-1),
                            dim=-1)
        head.prototypes.copy_(torch.where(hit[:, None], moved, old).reshape(c, k, -1))
    logits = scores.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return logits, {"ppc": head.ppc_weight * ppc_loss(sims, proto_target, head.ppc_tau, IGNORE),
                    "ppd": head.ppd_weight * ppd_loss(sims, proto_target, IGNORE)}


def test_prototype_head_training_step_equals_its_stock_op_definition() -> None:
    torch.manual_seed(0)
    head = PrototypeHead(8, 3, num_prototypes=4, projection="none", gamma=0.9, ppc_weight=0.5,
                         ppd_weight=0.25).double().train()
    reference = copy.deepcopy(head)
    initial = head.prototypes.clone()
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 8, 5, 6, generator=g, dtype=torch.double)
    target = torch.randint(0, 3, (2, 10, 12), generator=g)
    target[:, :2] = 255
    feats_a, feats_b = feats.clone().requires_grad_(True), feats.clone().requires_grad_(True)

    out = head(feats_a, target)
    ref_logits, ref_losses = reference_training_forward(reference, feats_b, target)
    torch.testing.assert_close(out.logits, ref_logits)
    for name in ("ppc", "ppd"):
        torch.testing.assert_close(out.losses[name], ref_losses[name])
    torch.testing.assert_close(head.prototypes, reference.prototypes)
    assert not torch.equal(head.prototypes, initial)  # the update did move some prototypes

    weights = torch.randn(out.logits.shape, generator=g, dtype=torch.double)
    ((out.logits * weights).sum() + sum(out.losses.values())).backward()
    ((ref_logits * weights).sum() + sum(ref_losses.values())).backward()
    torch.testing.assert_close(feats_a.grad, feats_b.grad)
    for (name, p), (_, q) in zip(head.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=f"gradient of {name}")


def test_prototype_head_trains_under_autocast() -> None:
    """Half-precision similarities (AMP): the ops upcast internally, gradients come back in the
    dtypes of their inputs and stay close to the float32 step's."""
    torch.manual_seed(0)
    head = PrototypeHead(16, 3, num_prototypes=2, projection="mlp").train()
    twin = copy.deepcopy(head)
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 16, 6, 6, generator=g)
    target = torch.randint(0, 3, (2, 12, 12), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(feats, target)
    (out.logits.float().square().mean() + sum(out.losses.values())).backward()
    ref = twin(feats, target)
    (ref.logits.square().mean() + sum(ref.losses.values())).backward()
    for (name, p), (_, q) in zip(head.named_parameters(), twin.named_parameters()):
        assert p.grad.dtype == p.dtype, name
        torch.testing.assert_close(p.grad, q.grad, atol=0.05, rtol=0.1, msg=f"gradient of {name}")


@pytest.mark.parametrize("projection", ["none", "mlp"])
def test_prototype_head_evaluation_equals_its_stock_op_definition(projection: str) -> None:
    torch.manual_seed(0)
    head = PrototypeHead(8, 3, num_prototypes=4, projection=projection).double().eval()
    feats = torch.randn(2, 8, 5, 6, generator=torch.Generator().manual_seed(4),
                        dtype=torch.double)
    x = head.projection(feats)
    if projection == "mlp":
        x = F.normalize(x, dim=1)
    emb = F.normalize(head.feat_norm(x.permute(0, 2, 3, 1)), dim=-1).reshape(-1, 8)
    protos = F.normalize(head.prototypes, dim=-1).reshape(12, -1)
    scores = head.score_norm((emb @ protos.t()).view(-1, 3, 4).max(dim=2).values)
    expected = scores.reshape(2, 5, 6, 3).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(head(feats).logits, expected)
