"""Heads own their options (methods/heads/options.py): the registry, the options objects,
the declared choices and loss names, and the vectors the analysis figures read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import HeadSpec, ModelSpec
from methods import build_model
from methods.catalog import HEADS
from methods.heads import PixelContrastHead, PrototypeHead, build_head
from methods.heads.options import (
    PixelContrastOptions,
    PixelQueryOptions,
    PrototypeOptions,
    SoftmaxOptions,
)

C, D = 3, 16
# small versions of each head (test_heads.py's sizes)
SMALL = {"softmax": {}, "pixel_query": {"dim": 16, "heads": 2}, "prototype": {"num_prototypes": 2},
         "pixel_contrast": {"warmup_iters": 0, "min_class_pixels": 2, "max_views": 4}}


def make_head(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return HEADS.get(name).load()(D, C, **{**SMALL[name], **kw})


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Features (2, D, 4, 5) and labels at twice their size, a row of them ignored."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, D, 4, 5, generator=g)
    target = torch.randint(0, C, (2, 8, 10), generator=g)
    target[:, 0, :] = 255
    return feats, target


# --------------------------------------------------------------------------- options


def test_each_registered_head_names_its_options_class() -> None:
    assert {"softmax", "pixel_query", "prototype", "pixel_contrast"} <= set(HEADS.names())
    for name in HEADS.names():
        head = HEADS.get(name).load()
        assert head.Options is HEADS.get(name).options and head.Options.HEAD == name


def test_build_head_passes_the_specs_options() -> None:
    spec = HeadSpec(name="pixel_contrast", contrast_variant="memory", contrast_tau=0.2,
                    contrast_queue_size=7, contrast_proj_dim=8)
    head = build_head(spec, D, C)
    assert isinstance(head, PixelContrastHead)
    assert head.options == spec.options == PixelContrastOptions(variant="memory", tau=0.2,
                                                                  queue_size=7, proj_dim=8)
    assert (head.tau, head.weight) == (0.2, 1.0)  # the memory variant's released weight
    assert head.segment_queue.shape == (C, 7, 8)
    query = build_head(HeadSpec(name="pixel_query", query_dim=8, query_heads=2, query_layers=1),
                       D, C)
    assert query.dim == 8 and len(query.blocks.layers) == 1
    with pytest.raises(ValueError, match="unknown head 'mlp'; choose one of softmax"):
        HeadSpec(name="mlp")
    with pytest.raises(ValueError, match="unknown head 'mlp'; choose one of softmax"):
        build_head(SimpleNamespace(name="mlp", options=SoftmaxOptions()), D, C)


def test_options_object_and_keyword_overrides_build_the_same_head() -> None:
    torch.manual_seed(0)
    whole = PrototypeHead(D, C, options=PrototypeOptions(num_prototypes=3, gamma=0.5))
    torch.manual_seed(0)
    keywords = PrototypeHead(D, C, num_prototypes=3, gamma=0.5)
    assert whole.options == keywords.options
    for (name, a), (_, b) in zip(whole.state_dict().items(), keywords.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(TypeError, match="PrototypeHead takes PrototypeOptions"):
        PrototypeHead(D, C, options=PixelQueryOptions())
    with pytest.raises(TypeError, match="no_such_option"):
        PrototypeHead(D, C, no_such_option=1)


def test_allowed_values_come_from_the_options_types() -> None:
    assert PrototypeOptions.choices() == {
        "projection": ("mlp", "none"), "proj_norm_axis": ("channel", "width"),
        "score_norm": ("layernorm", "none"), "update_assign": ("argmax", "gumbel"),
        "sinkhorn_scope": ("process", "all")}
    assert PixelContrastOptions.choices() == {"variant": ("in_batch", "memory")}
    assert SoftmaxOptions.choices() == PixelQueryOptions.choices() == {}
    with pytest.raises(ValueError, match="pixel_contrast head: contrast_variant: 'bank'; "
                                         "choose one of in_batch, memory"):
        PixelContrastHead(D, C, variant="bank")


@pytest.mark.parametrize("name, options", [
    ("softmax", {}), ("pixel_query", {}), ("prototype", {}), ("prototype", {"ppc_weight": 0.0}),
    ("prototype", {"ppd_weight": 0.0}), ("pixel_contrast", {"warmup_iters": 5}),
])
def test_loss_names_are_the_losses_a_training_step_produces(name: str, options: dict) -> None:
    head = make_head(name, **options).train()
    out = head(*batch())
    assert tuple(out.losses) == head.options.loss_names()


def test_options_import_without_torch() -> None:
    code = ("import sys, methods.heads.options, benchmark.config; "
            "print(sorted(m for m in ('torch', 'numpy', 'methods.heads.base') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- figure vectors


def test_prototype_head_exposes_its_embeddings_and_prototypes() -> None:
    head = make_head("prototype", num_prototypes=3).eval()
    feats, _ = batch()
    with torch.no_grad():
        out = head(feats)
        emb = head.pixel_embeddings(feats)
    assert torch.equal(emb, out.state["embeddings"])
    protos = head.prototype_vectors()
    torch.testing.assert_close(protos, F.normalize(head.prototypes, dim=-1))
    assert torch.equal(head.class_vectors(), protos) and not protos.requires_grad
    # scores are the best cosine over each class's vectors (score_norm off)
    plain = make_head("prototype", num_prototypes=3, score_norm="none").eval()
    cos = torch.einsum("bdhw,ckd->bckhw", plain.pixel_embeddings(feats), plain.class_vectors())
    torch.testing.assert_close(plain(feats).logits, cos.amax(dim=2))


@pytest.mark.parametrize("name", ["softmax", "pixel_contrast"])
def test_linear_heads_expose_features_and_classifier_rows(name: str) -> None:
    head = make_head(name).eval()
    feats, _ = batch()
    emb, vectors = head.pixel_embeddings(feats), head.class_vectors()
    assert vectors.shape == (C, 1, D) and head.prototype_vectors() is None
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2, 4, 5))
    # logits - bias = |w_c| |f| cos(w_c, f): the vectors are the classifier's directions
    w = head.classifier.weight[:, :, 0, 0]
    cos = torch.einsum("bdhw,cd->bchw", emb, vectors[:, 0])
    expected = cos * w.norm(dim=1)[None, :, None, None] * feats.norm(dim=1, keepdim=True)
    logits = head(feats).logits - head.classifier.bias[None, :, None, None]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_pixel_query_has_no_fixed_class_vectors() -> None:
    head = make_head("pixel_query")
    with pytest.raises(ValueError, match="PixelQueryHead has no fixed class vectors"):
        head.class_vectors()
    assert head.prototype_vectors() is None


def test_segmentor_features_are_the_heads_input() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=16,
                     head=HeadSpec(name="prototype", num_prototypes=2))
    model = build_model(spec, num_classes=C).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = model.features(images)
        assert torch.equal(feats, model.decoder(model.backbone(images)))
        assert torch.equal(model.head(feats).logits, model(images).logits)
