"""The head contract, run over every registered head: the repository's, installed plugins'
(entry points) and modules named in $PROTOSEG_PLUGINS. A plugin author checks theirs with
`python -m pytest tests/methods/test_head_contract.py -k NAME` (docs/extending.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import HeadSpec
from methods.catalog import HEADS
from methods.heads import HeadOutput, SegHead, build_head
from methods.registry import import_plugins

import_plugins()  # $PROTOSEG_PLUGINS: heads registered by modules that are not installed
NAMES = HEADS.names()
B, C, D, H, W = 2, 3, 16, 4, 5


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(B, D, H, W, generator=g)
    target = torch.randint(0, C, (B, 2 * H, 2 * W), generator=g)
    target[:, 0] = 255  # unlabelled pixels
    return feats, target


def _head(name: str) -> SegHead:
    torch.manual_seed(0)
    return build_head(HeadSpec(name), D, C)


def test_the_four_heads_of_the_paper_are_registered() -> None:
    assert {"softmax", "pixel_query", "prototype", "pixel_contrast"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_registered_class_and_options_agree(name: str) -> None:
    entry = HEADS.get(name)
    head = _head(name)
    assert isinstance(head, SegHead) and type(head) is entry.load()
    assert type(head).Options is entry.options and entry.options.HEAD == name
    assert head.options == entry.options().check() and entry.options().label()


@pytest.mark.parametrize("name", NAMES)
def test_training_and_evaluation_outputs(name: str) -> None:
    head = _head(name).train()
    feats, target = _inputs()
    out = head(feats, target)
    assert isinstance(out, HeadOutput) and out.logits.shape == (B, C, H, W)
    assert torch.isfinite(out.logits).all()
    assert set(out.losses) == set(head.options.loss_names())
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
    head.eval()
    with torch.no_grad():
        evaluated = head(feats)
    assert evaluated.logits.shape == (B, C, H, W) and evaluated.losses == {}


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_input_and_the_heads_parameters(name: str) -> None:
    head = _head(name).train()
    feats, target = _inputs()
    feats.requires_grad_(True)
    out = head(feats, target)
    logits = F.interpolate(out.logits, size=target.shape[-2:], mode="bilinear")
    loss = F.cross_entropy(logits, target, ignore_index=255) + sum(out.losses.values())
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    learnable = [p for p in head.parameters() if p.requires_grad]
    assert learnable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in learnable)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_through_a_state_dict(name: str) -> None:
    """Everything a head needs (parameters and buffers such as prototypes) is in its state
    dict, so checkpoints and resume restore it exactly."""
    trained = _head(name).train()
    trained(*_inputs())  # one training forward: momentum updates, queues
    torch.manual_seed(1)
    fresh = build_head(HeadSpec(name), D, C)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    feats, _ = _inputs()
    with torch.no_grad():
        assert torch.equal(fresh.eval()(feats).logits, trained.eval()(feats).logits)


@pytest.mark.parametrize("name", NAMES)
def test_analysis_hooks_answer_or_say_why(name: str) -> None:
    """Figures and health ask the head (never a tensor by name): class vectors and pixel
    embeddings in one space, or a one-line ValueError; prototypes (C, K, D) or None."""
    head = _head(name).eval()
    feats, _ = _inputs()
    protos = head.prototype_vectors()
    assert protos is None or (protos.dim() == 3 and protos.shape[0] == C)
    try:
        vectors, embeddings = head.class_vectors(), head.pixel_embeddings(feats)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert vectors.shape[0] == C and vectors.shape[-1] == embeddings.shape[1]
    assert embeddings.shape[0] == B
