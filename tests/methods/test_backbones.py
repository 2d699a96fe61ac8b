"""Paper-scale models: parameter counts against Table 1, feature shapes, and a training step of
each backbone family's small variant with every head."""

from __future__ import annotations

import copy
from dataclasses import replace
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import HeadSpec, ModelSpec
from experiments import get_grid
from experiments.table1 import UPERNET_SWIN_B
from methods import BACKBONES, build_model, count_params
from methods.backbones import build_backbone
from methods.heads import build_head

TOLERANCE_M = 0.3
TABLE1 = get_grid("table1").cells


@lru_cache(maxsize=None)
def counts(spec: ModelSpec, num_classes: int = 150) -> dict[str, int]:
    """Parameter counts of a model built on the meta device (no weights allocated or
    initialised; shapes and counts are exact)."""
    with torch.device("meta"):
        return count_params(build_model(spec, num_classes))


@pytest.mark.parametrize("cell", TABLE1, ids=[c.key for c in TABLE1])
def test_table1_models_match_the_papers_parameter_counts(cell) -> None:
    params = counts(cell.model)
    assert abs(params["learnable"] / 1e6 - cell.paper_params_m) <= TOLERANCE_M, params


def test_ours_is_the_baseline_minus_its_classifier() -> None:
    for base, ours in zip(TABLE1[0::2], TABLE1[1::2]):
        assert (base.tag, ours.tag, base.pair) == ("baseline", "ours", ours.pair)
        b, o = counts(base.model), counts(ours.model)
        d = base.model.decoder_channels
        classifier = 150 * d + 150
        layer_norms = 2 * d + 2 * 150  # prototype head: LayerNorm over D and over the C scores
        assert b["learnable"] - o["learnable"] == classifier - layer_norms
        # prototypes are not learnable but count in the total
        assert o["total"] - o["learnable"] == 150 * ours.model.head.num_prototypes * d


def test_released_projection_adds_1_04m_to_hrnet() -> None:
    ours = next(c for c in TABLE1 if c.pair == "hrnet" and c.tag == "ours").model
    mlp = replace(ours, head=replace(ours.head, projection="mlp"))
    extra = counts(mlp)["learnable"] - counts(ours)["learnable"]
    assert abs(extra / 1e6 - 1.04) < 0.01


def test_upernet_on_swin_b_matches_the_reference_row() -> None:
    params = counts(UPERNET_SWIN_B)
    assert abs(params["learnable"] / 1e6 - 121.0) <= TOLERANCE_M


# one backbone per implementation class (the paper sizes share the small ones' classes)
@pytest.mark.parametrize("name", ["resnet101_d8", "resnet18_d8", "hrnetv2_w18_small", "swin_t",
                                  "mit_b0"])
def test_backbone_features_have_the_declared_channels_and_strides(name: str) -> None:
    with torch.device("meta"):
        backbone = build_backbone(name)
        feats = backbone(torch.empty(1, 3, 128, 128))
    assert [f.shape[1] for f in feats] == backbone.out_channels
    assert [128 // f.shape[-1] for f in feats] == backbone.strides
    assert backbone.name == name


def test_registry_and_paper_backbone_layouts() -> None:
    assert set(BACKBONES.names()) >= {"resnet101_d8", "hrnetv2_w48", "swin_b", "mit_b4", "mit_b2",
                              "resnet18_d8", "hrnetv2_w18_small", "swin_t", "mit_b0"}
    with torch.device("meta"):
        assert build_backbone("hrnetv2_w48").out_channels == [48, 96, 192, 384]
        assert build_backbone("swin_b").out_channels == [128, 256, 512, 1024]
        assert build_backbone("mit_b4").out_channels == [64, 128, 320, 512]
        r101 = build_backbone("resnet101_d8")
    assert r101.out_channels == [1024, 2048] and r101.strides == [8, 8]
    assert r101.body.layer4[-1].conv2.dilation == (4, 4)
    # ResNetV1c deep stem (MMSeg's resnet101_v1c): 3x3 convs to 32, 32, 64 channels, no 7x7
    stem = [m for m in r101.body.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.out_channels) for c in stem] == [((3, 3), 32), ((3, 3), 32),
                                                               ((3, 3), 64)]
    assert not hasattr(r101.body, "conv1")


# ----------------------------------------------------------------------------- small variants

SMALL = {  # family -> small model (decoder as in the paper model of that family)
    "resnet": ModelSpec(backbone="resnet18_d8", decoder="fcn", decoder_channels=32, aux_weight=0.4),
    "hrnet": ModelSpec(backbone="hrnetv2_w18_small", decoder="hrnetv2", decoder_channels=32),
    "swin": ModelSpec(backbone="swin_t", decoder="mlp", decoder_channels=32),
    "mit": ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=32),
}
HEADS = {
    "softmax": HeadSpec(name="softmax"),
    "pixel_query": HeadSpec(name="pixel_query", query_heads=2),
    "prototype": HeadSpec(name="prototype", num_prototypes=2, projection="none"),
}
C = 4


@pytest.fixture(scope="module", params=list(SMALL))
def small_model(request):
    torch.manual_seed(0)
    return request.param, build_model(SMALL[request.param], C)


@pytest.mark.parametrize("head_name", list(HEADS))
def test_small_variant_trains_and_evaluates_with_every_head(small_model, head_name) -> None:
    family, base = small_model
    model = copy.deepcopy(base)
    model.head = build_head(HEADS[head_name], model.decoder.out_channels, C)
    images = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, C, (2, 32, 32))
    target[:, :4] = 255
    model.train()
    out = model(images, target)
    logits = F.interpolate(out.logits, size=(32, 32), mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, target, ignore_index=255) + sum(out.losses.values())
    loss.backward()
    assert torch.isfinite(loss)
    first = next(model.backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert ("aux" in out.losses) == (family == "resnet")
    if head_name == "prototype":
        assert {"ppc", "ppd"} <= set(out.losses)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out.logits.shape[:2] == (2, C) and out.losses == {}


def test_aux_loss_is_weighted_ce_on_the_penultimate_level_with_ignore() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL["resnet"], C).train()
    model.aux.dropout.p = 0.0  # deterministic aux branch (the backbone has no dropout)
    images = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, C, (2, 32, 32))
    target[0] = 255
    out = model(images, target)
    with torch.no_grad():
        logits = F.interpolate(model.aux(model.backbone(images)[-2]), size=(32, 32),
                               mode="bilinear", align_corners=False)
    expected = 0.4 * F.cross_entropy(logits, target, ignore_index=255)
    assert out.losses["aux"].item() == pytest.approx(expected.item(), rel=1e-5)
    everything_ignored = torch.full_like(target, 255)
    assert model(images, everything_ignored).losses["aux"].item() == 0.0
    assert "aux" not in model.eval()(images, target).losses  # training only


def _hidden_copies(backbone: torch.nn.Module, images: torch.Tensor) -> int:
    """How many copies one forward + backward makes of tensors shaped like the input of a
    depthwise conv (a Mix-FFN hidden activation)."""
    from torch.profiler import ProfilerActivity, profile

    shapes: set[tuple[int, ...]] = set()
    hooks = [m.register_forward_pre_hook(lambda _, args: shapes.add(tuple(args[0].shape)))
             for m in backbone.modules()
             if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        sum(f.sum() for f in backbone(images)).backward()
    for hook in hooks:
        hook.remove()
    assert len(shapes) == 4  # one hidden shape per stage
    return sum(1 for e in prof.events() if e.name == "aten::copy_" and e.input_shapes
               and tuple(e.input_shapes[0]) in shapes)


def test_mit_depthwise_convs_run_channels_last_without_copying_the_hidden_activation() -> None:
    """MiT's depthwise convs see a transposed token view: their weights carry channels-last
    strides (kept through load_state_dict and .to()), so the CPU backward copies nothing;
    with the default strides it copies each hidden activation (the case this guards)."""
    from methods.backbones import channels_last_depthwise

    torch.manual_seed(0)
    backbone = build_backbone("mit_b0")
    backbone.load_state_dict(copy.deepcopy(backbone.state_dict()))
    backbone.to(torch.float32)
    depthwise = [m for m in backbone.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 8  # 2 blocks x 4 stages
    assert all(m.weight.stride()[1] == 1 for m in depthwise)
    images = torch.randn(1, 3, 64, 64)
    assert _hidden_copies(backbone, images) == 0
    reference = build_backbone("mit_b0")
    reference.load_state_dict(backbone.state_dict())
    for m in reference.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1:
            default = torch.empty_strided(m.weight.shape, (9, 9, 3, 1))  # torch's default
            m.weight.data = default.copy_(m.weight)
    assert _hidden_copies(reference, images) > 0  # the copies the strides avoid
    with torch.no_grad():  # the same features to float rounding (eval: no stochastic depth)
        for a, b in zip(backbone.eval()(images), reference.eval()(images)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    conv = next(m for m in reference.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    channels_last_depthwise(conv)
    assert conv.weight.stride() == (9, 1, 3, 1)
