"""Backbone files in MMSegmentation's and the authors' formats, by round trip: the suite's own
(small) backbone written in the format, loaded back, gives the same logits (1e-5); a partial or
foreign file is a one-line CheckpointError naming what would stay random."""

from __future__ import annotations

import pytest
import torch
from checkpoint_writers import (
    backbone_state,
    copy_except_backbone_body,
    hrnet_mmseg,
    logits,
    model,
    segformer_to_mmseg,
    swin_to_mmseg,
    to_segformer,
    to_swin,
)

from benchmark.checkpoints import CheckpointError, load_pretrained
from benchmark.checkpoints.mmseg_backbone import unfold_to_swin_order

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def round_trip(tmp_path, backbone: str, decoder: str, state: dict, name: str = "w.pth"):
    source, target = model(backbone, decoder, seed=0), model(backbone, decoder, seed=1)
    torch.save({"meta": {"note": "test"}, "state_dict": state}, tmp_path / name)
    report = load_pretrained(target, tmp_path / name)
    copy_except_backbone_body(source, target)
    torch.testing.assert_close(logits(target, X), logits(source, X), atol=1e-5, rtol=0)
    return report


def test_segformer_original_release(tmp_path) -> None:
    state = to_segformer(model("mit_b0"))
    report = round_trip(tmp_path, "mit_b0", "mlp", state, "mit_b0.pth")
    assert report.format == "segformer" and report.missing == [] and report.unexpected == []
    assert report.loaded == report.expected and report.ignored == ["head.weight", "head.bias"]


def test_mmseg_mit_file_splits_in_proj_and_reshapes_the_ffn_convs(tmp_path) -> None:
    state = segformer_to_mmseg(to_segformer(model("mit_b0")))
    assert state["layers.0.1.0.ffn.layers.0.weight"].dim() == 4  # 1x1 conv in MMSeg's file
    report = round_trip(tmp_path, "mit_b0", "mlp", state)
    assert report.format == "mmseg-mit" and report.loaded == report.expected
    assert report.missing == report.unexpected == report.ignored == []


def test_swin_original_release(tmp_path) -> None:
    report = round_trip(tmp_path, "swin_t", "mlp", to_swin(model("swin_t")))
    assert report.format == "swin" and report.unexpected == []
    # MMSeg's per-stage output norms are new in MMSeg too; the computed index is not loaded
    assert {k.split(".")[0] for k in report.missing} == {"norms", "body"}
    assert all(k.startswith("norms.") or k.endswith("relative_position_index")
               for k in report.missing)
    assert "head.weight" in report.ignored and "norm.weight" in report.ignored


def test_mmseg_swin_file_reorders_patch_merging(tmp_path) -> None:
    state = swin_to_mmseg(to_swin(model("swin_t")))
    assert not torch.equal(state["stages.0.downsample.reduction.weight"],
                           backbone_state(model("swin_t"))["features.2.reduction.weight"])
    report = round_trip(tmp_path, "swin_t", "mlp", state)
    assert report.format == "mmseg-swin" and report.unexpected == []


def test_unfold_order_inverts_mmsegs_reordering() -> None:
    w = torch.arange(2 * 12.0).reshape(2, 12)
    mm = w.reshape(2, 4, 3)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(2, 12)
    assert torch.equal(unfold_to_swin_order(mm), w)
    assert torch.equal(unfold_to_swin_order(mm[0]), w[0])


def test_mmseg_hrnet_file_with_its_classification_extras(tmp_path) -> None:
    report = round_trip(tmp_path, "hrnetv2_w18_small", "hrnetv2",
                        hrnet_mmseg(model("hrnetv2_w18_small", "hrnetv2")))
    assert report.missing == report.unexpected == [] and report.loaded == report.expected
    assert len(report.ignored) == 4


def test_partial_or_foreign_file_names_what_stays_random(tmp_path) -> None:
    state = segformer_to_mmseg(to_segformer(model("mit_b0")))
    partial = {k: v for k, v in state.items() if not k.startswith("layers.3.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(model("mit_b0"), tmp_path / "partial.pth")
    message = str(err.value)
    assert "(mmseg-mit) leaves" in message and "body.stages.3" in message
    assert "nvidia/mit-b0" in message and "\n" not in message
    torch.save(to_swin(model("swin_t")), tmp_path / "swin.pth")
    with pytest.raises(CheckpointError, match=r"wrong shape|tensors random"):
        load_pretrained(model("mit_b0"), tmp_path / "swin.pth")


def _v1c_pair():
    from methods.backbones import DilatedResNet

    torch.manual_seed(0)
    source, target = DilatedResNet("resnet50", deep_stem=True), DilatedResNet("resnet50", True)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return source.eval(), target.eval()


def to_mmseg_v1c(backbone) -> dict:
    """The suite's deep-stem ResNet as MMSeg's `resnet*_v1c` file: `stem.{0,1,3,4,6,7}` (conv,
    BN, ReLU x 3), the residual layers under their torchvision names, an ImageNet `fc`."""
    index = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
    out = {}
    for key, value in backbone.body.state_dict().items():
        parts = key.split(".")
        if parts[0] == "stem":
            out[f"stem.{index[parts[1]]}.{parts[2]}"] = value
        else:
            out[key] = value
    out["fc.weight"], out["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return out


def test_mmseg_resnet_v1c_fills_the_deep_stem_and_a_stemless_file_is_refused(tmp_path) -> None:
    source, target = _v1c_pair()
    state = to_mmseg_v1c(source)
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "resnet50_v1c.pth")
    report = load_pretrained(target, tmp_path / "resnet50_v1c.pth")
    assert report.format == "mmseg-resnet-v1c" and report.loaded == report.expected
    assert report.missing == report.unexpected == [] and len(report.ignored) == 2
    with torch.no_grad():
        for got, want in zip(target(X), source(X)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # a torchvision file (7x7 stem) would leave the deep stem random: refused, stem named
    torch.save({k: v for k, v in state.items() if not k.startswith("stem.")},
               tmp_path / "torchvision_like.pth")
    with pytest.raises(CheckpointError, match=r"leaves 15 of \d+ tensors random: body.stem"):
        load_pretrained(_v1c_pair()[1], tmp_path / "torchvision_like.pth")
