"""The head interface and ProtoSeg's mechanics, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import HeadSpec, ModelSpec
from methods import build_model
from methods.heads import PixelContrastHead, PixelQueryHead, PrototypeHead, SoftmaxHead
from methods.losses import ppc_loss, ppd_loss
from methods.sinkhorn import sinkhorn_per_class

C, D = 3, 16


def make_head(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "softmax":
        return SoftmaxHead(D, C)
    if name == "pixel_query":
        return PixelQueryHead(D, C, dim=16, heads=2)
    if name == "pixel_contrast":
        return PixelContrastHead(D, C, warmup_iters=0, min_class_pixels=2, max_views=4)
    return PrototypeHead(D, C, **{"num_prototypes": 2, **kw})


def batch(b: int = 2, h: int = 4, w: int = 5, scale: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(b, D, h, w, generator=g)
    target = torch.randint(0, C, (b, h * scale, w * scale), generator=g)
    target[:, 0, :] = 255  # some ignored pixels
    return feats, target


@pytest.mark.parametrize("name", ["softmax", "pixel_query", "prototype", "pixel_contrast"])
def test_output_shapes(name: str) -> None:
    head = make_head(name).train()
    feats, target = batch()
    out = head(feats, target)
    assert out.logits.shape == (2, C, 4, 5)
    head.eval()
    out_eval = head(feats)
    assert out_eval.logits.shape == (2, C, 4, 5)
    assert out_eval.losses == {}


def test_prototype_head_returns_weighted_losses_in_training() -> None:
    head = make_head("prototype").train()
    out = head(*batch())
    assert set(out.losses) == {"ppc", "ppd"}
    assert all(torch.isfinite(v) and v > 0 for v in out.losses.values())


@pytest.mark.parametrize("head_name", ["softmax", "pixel_query", "prototype", "pixel_contrast"])
def test_gradients_reach_backbone_and_head(head_name: str) -> None:
    torch.manual_seed(0)
    small = {"prototype": {"num_prototypes": 2},
             "pixel_contrast": {"contrast_warmup_iters": 0, "contrast_min_class_pixels": 4}}
    spec = ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=32,
                     head=HeadSpec(name=head_name, **small.get(head_name, {})))
    model = build_model(spec, num_classes=C).train()
    images = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, C, (2, 32, 32))
    out = model(images, target)
    logits = F.interpolate(out.logits, size=(32, 32), mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, target) + sum(out.losses.values())
    loss.backward()
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert backbone_grads and any(g.abs().sum() > 0 for g in backbone_grads)
    head_params = [p for p in model.head.parameters() if p.requires_grad]
    assert head_params, "every head has learnable parameters"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head_params)
    if head_name == "pixel_contrast":  # the contrast loss trains the projection head
        assert out.losses["contrast"] > 0
        assert all(p.grad.abs().sum() > 0 for p in model.head.projection.parameters())
    if head_name == "prototype":
        names = [n for n, _ in model.named_parameters()]
        assert not any("prototypes" in n for n in names), "prototypes must not be parameters"
        assert not model.head.prototypes.requires_grad


def test_prototypes_change_only_through_momentum_update() -> None:
    feats, target = batch()
    # gamma = 1: the update is the identity, so nothing else may move the prototypes,
    # not the backward pass and not an optimiser step over all parameters.
    head = make_head("prototype", gamma=1.0).train()
    before = head.prototypes.clone()
    out = head(feats.requires_grad_(), target)
    (out.logits.sum() + sum(out.losses.values())).backward()
    torch.optim.SGD(head.parameters(), lr=1.0).step()
    # (renormalising an already unit vector may flip the last bit, nothing more)
    torch.testing.assert_close(head.prototypes, before, atol=1e-6, rtol=0)
    # evaluation never updates
    head = make_head("prototype", gamma=0.5).eval()
    before = head.prototypes.clone()
    head(feats, target)
    assert torch.equal(head.prototypes, before)
    # training with gamma < 1 does
    head.train()(feats.detach(), target)
    assert not torch.equal(head.prototypes, before)


def test_momentum_update_matches_hand_computation() -> None:
    head = PrototypeHead(3, 2, num_prototypes=2, projection="none", gamma=0.9)
    e1, e2, e3 = torch.eye(3)
    p11 = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3)
    head.prototypes.copy_(torch.stack([torch.stack([e1, e2]), torch.stack([e3, p11])]))
    x0 = F.normalize(torch.tensor([1.0, 0.2, 0.0]), dim=0)
    x1 = F.normalize(torch.tensor([0.9, 0.1, 0.3]), dim=0)
    x2 = F.normalize(torch.tensor([0.1, 1.0, 0.0]), dim=0)
    x3 = F.normalize(torch.tensor([0.2, 0.1, 1.0]), dim=0)
    # two images of two pixels, channels first (B, D, P), as the head holds them
    emb = torch.stack([x0, x1, x2, x3]).t().reshape(3, 2, 2).transpose(0, 1)
    index = torch.tensor([0, 0, 1, 2])  # (c, k) = (0,0), (0,0), (0,1), (1,0)
    correct = torch.tensor([True, True, False, True])  # pixel 2 was predicted wrongly
    head._momentum_update(emb, correct.nonzero().squeeze(1), index[correct])

    def hand(p: torch.Tensor, pixels: list[torch.Tensor]) -> torch.Tensor:
        mean = sum(pixels)
        mean = mean / mean.norm()
        new = 0.9 * p + 0.1 * mean
        return new / new.norm()

    expected = torch.stack([torch.stack([hand(e1, [x0, x1]), e2]),  # (0,1): only a wrong pixel
                            torch.stack([hand(e3, [x3]), p11])])  # (1,1): no pixel
    torch.testing.assert_close(head.prototypes, expected)


def reference_sinkhorn(sims: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """The released per-class algorithm (one class), in float64."""
    q = torch.exp(sims.double() / eps).t()  # K x N
    k, n = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= n
    return (q * n).t()


@pytest.mark.parametrize("iters", [1, 3])
def test_batched_sinkhorn_equals_per_class_loop(iters: int) -> None:
    g = torch.Generator().manual_seed(0)
    n, k, classes = 200, 4, 5
    sims = torch.rand(n, k, generator=g) * 2 - 1
    labels = torch.randint(0, classes - 1, (n,), generator=g)  # class 4 absent
    q = sinkhorn_per_class(sims, labels, classes, eps=0.05, iters=iters)
    for c in range(classes - 1):
        rows = labels == c
        ref = reference_sinkhorn(sims[rows], 0.05, iters)
        torch.testing.assert_close(q[rows].double(), ref, rtol=1e-4, atol=1e-6)


def test_sinkhorn_is_an_equipartition() -> None:
    g = torch.Generator().manual_seed(0)
    n, k = 300, 5
    sims = torch.rand(n, k, generator=g) * 2 - 1
    labels = torch.randint(0, 3, (n,), generator=g)
    q = sinkhorn_per_class(sims, labels, 3, eps=0.05, iters=3)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n))  # each pixel's assignment sums to 1
    q = sinkhorn_per_class(sims, labels, 3, eps=0.5, iters=200)
    for c in range(3):
        mass = q[labels == c].sum(dim=0)
        n_c = int((labels == c).sum())
        torch.testing.assert_close(mass, torch.full((k,), n_c / k), rtol=1e-3, atol=1e-3)


def test_sinkhorn_options_change_the_plan() -> None:
    g = torch.Generator().manual_seed(0)
    sims = torch.rand(50, 3, generator=g)
    labels = torch.zeros(50, dtype=torch.long)
    base = sinkhorn_per_class(sims, labels, 1, eps=0.05, iters=3)
    assert not torch.allclose(base, sinkhorn_per_class(sims, labels, 1, eps=0.5, iters=3))
    assert not torch.allclose(base, sinkhorn_per_class(sims, labels, 1, eps=0.05, iters=1))


def test_ppc_and_ppd_match_hand_computation() -> None:
    # 2 classes x 2 prototypes; pixel 0 assigned to (0,0), pixel 1 to (1,1)
    sims = torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.0, 0.4, 0.5, 0.8]])
    target = torch.tensor([0, 3])
    tau = 0.1

    def nll(row: list[float], t: int) -> float:
        return -math.log(math.exp(row[t] / tau) / sum(math.exp(v / tau) for v in row))

    expected_ppc = (nll([0.9, 0.1, -0.2, 0.3], 0) + nll([0.0, 0.4, 0.5, 0.8], 3)) / 2
    expected_ppd = ((1 - 0.9) ** 2 + (1 - 0.8) ** 2) / 2
    assert ppc_loss(sims, target, tau).item() == pytest.approx(expected_ppc, rel=1e-5)
    assert ppd_loss(sims, target).item() == pytest.approx(expected_ppd, rel=1e-5)
    # a pixel without an assigned prototype (the head's -100) is left out of both means
    with_ignored = torch.cat([sims, torch.tensor([[5.0, -5.0, 5.0, -5.0]])])
    target_ignored = torch.tensor([0, 3, -100])
    assert ppc_loss(with_ignored, target_ignored, tau, -100).item() == pytest.approx(
        expected_ppc, rel=1e-5)
    assert ppd_loss(with_ignored, target_ignored, -100).item() == pytest.approx(
        expected_ppd, rel=1e-5)


def _train_forward(head: PrototypeHead, seed: int = 0):
    feats, target = batch()
    torch.manual_seed(seed)
    return head.train()(feats, target)


def test_option_projection() -> None:
    mlp, none = make_head("prototype", projection="mlp"), make_head("prototype", projection="none")
    assert sum(p.numel() for p in mlp.parameters()) - sum(p.numel() for p in none.parameters()) \
        == 2 * (D * D + D)
    with pytest.raises(ValueError, match="projection=mlp"):
        PrototypeHead(D, C, embed_dim=8, projection="none")
    assert PrototypeHead(D, C, embed_dim=8).prototypes.shape == (C, 10, 8)


def test_option_proj_norm_axis() -> None:
    feats, _ = batch()
    channel = make_head("prototype", proj_norm_axis="channel").eval()
    width = make_head("prototype", proj_norm_axis="width").eval()
    width.load_state_dict(channel.state_dict())
    assert not torch.allclose(channel(feats).logits, width(feats).logits)


def test_option_score_norm() -> None:
    feats, _ = batch()
    plain = make_head("prototype", score_norm="none").eval()
    logits = plain(feats).logits
    emb = plain.embed(feats)  # (B, D, h, w)
    cos = torch.einsum("bdhw,ckd->bckhw", emb, plain.prototypes).amax(dim=2)
    torch.testing.assert_close(logits, cos)  # class score = max_k cosine
    normed = make_head("prototype", score_norm="layernorm").eval()
    torch.testing.assert_close(normed(feats).logits.mean(dim=1), torch.zeros(2, 4, 5),
                               atol=1e-5, rtol=0)


def test_option_update_assign() -> None:
    a = _train_forward(make_head("prototype", update_assign="argmax", gamma=0.5, num_prototypes=4), 1)
    head_a1 = make_head("prototype", update_assign="argmax", gamma=0.5, num_prototypes=4)
    head_a2 = make_head("prototype", update_assign="argmax", gamma=0.5, num_prototypes=4)
    _train_forward(head_a1, seed=1), _train_forward(head_a2, seed=2)
    assert torch.equal(head_a1.prototypes, head_a2.prototypes)  # argmax is deterministic
    head_g1 = make_head("prototype", update_assign="gumbel", gamma=0.5, num_prototypes=4)
    head_g2 = make_head("prototype", update_assign="gumbel", gamma=0.5, num_prototypes=4)
    _train_forward(head_g1, seed=1), _train_forward(head_g2, seed=2)
    assert not torch.equal(head_g1.prototypes, head_g2.prototypes)  # gumbel is random
    assert a.losses  # the PPC/PPD targets use the argmax assignment in both modes


def test_option_gamma() -> None:
    frozen = make_head("prototype", gamma=1.0)
    before = frozen.prototypes.clone()
    _train_forward(frozen)
    torch.testing.assert_close(frozen.prototypes, before, atol=1e-6, rtol=0)
    slow, fast = make_head("prototype", gamma=0.999), make_head("prototype", gamma=0.5)
    _train_forward(slow), _train_forward(fast)
    assert (slow.prototypes - before).abs().max() < (fast.prototypes - before).abs().max()


def test_option_loss_weights_and_tau() -> None:
    base = _train_forward(make_head("prototype")).losses
    assert "ppc" not in _train_forward(make_head("prototype", ppc_weight=0.0)).losses
    assert "ppd" not in _train_forward(make_head("prototype", ppd_weight=0.0)).losses
    doubled = _train_forward(make_head("prototype", ppc_weight=0.02, ppd_weight=0.002)).losses
    torch.testing.assert_close(doubled["ppc"], 2 * base["ppc"])
    torch.testing.assert_close(doubled["ppd"], 2 * base["ppd"])
    sharp = _train_forward(make_head("prototype", ppc_tau=0.1)).losses
    assert not torch.allclose(sharp["ppc"], base["ppc"])
    torch.testing.assert_close(sharp["ppd"], base["ppd"])


def test_bad_option_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="score_norm"):
        PrototypeHead(D, C, score_norm="batchnorm")

