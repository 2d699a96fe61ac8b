"""Whole-model checkpoints by round trip: the suite's model saved as an MMSegmentation 1.x zoo
file or as the released ProtoSeg (openseg) checkpoint loads back with every tensor accounted
for and gives the same logits (1e-5); a partial or foreign file is a one-line CheckpointError."""

from __future__ import annotations

import pytest
import torch
from checkpoint_writers import logits, model, to_mmseg_zoo, to_openseg

from benchmark.checkpoints import CheckpointError
from benchmark.checkpoints.whole import load_checkpoint
from benchmark.config import HeadSpec

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
RELEASED = HeadSpec(name="prototype", projection="mlp", proj_norm_axis="width")


def round_trip(tmp_path, source, target, obj, name="zoo.pth"):
    torch.save(obj, tmp_path / name)
    report = load_checkpoint(target, tmp_path / name)
    torch.testing.assert_close(logits(target, X), logits(source, X), atol=1e-5, rtol=0)
    assert report.unexpected == [] and report.mismatched == []
    assert report.loaded == report.expected - len(report.missing) and len(report.sha256) == 64
    return report


@pytest.mark.parametrize("backbone,decoder,aux", [
    ("resnet18_d8", "fcn", 0.4), ("hrnetv2_w18_small", "hrnetv2", 0.0),
    ("mit_b0", "mlp_mmseg", 0.0), ("swin_t", "upernet", 0.4),
])
def test_mmseg_zoo_file_into_the_matching_cell(tmp_path, backbone, decoder, aux) -> None:
    source = model(backbone, decoder, seed=0, aux_weight=aux)
    target = model(backbone, decoder, seed=1, aux_weight=aux)
    report = round_trip(tmp_path, source, target, to_mmseg_zoo(source, decoder))
    assert report.format == "mmseg-zoo"
    assert all(k.endswith("relative_position_index") for k in report.missing)  # computed
    if aux:
        assert torch.equal(target.aux.classifier.weight, source.aux.classifier.weight)


def test_openseg_protoseg_hrnet_with_prototypes_and_layernorms(tmp_path) -> None:
    source = model("hrnetv2_w18_small", "hrnetv2_openseg", seed=0, head=RELEASED, channels=24)
    target = model("hrnetv2_w18_small", "hrnetv2_openseg", seed=1, head=RELEASED, channels=24)
    report = round_trip(tmp_path, source, target, to_openseg(source), "proto_latest.pth")
    assert report.format == "openseg" and report.missing == []
    assert report.loaded == report.expected
    assert len(report.ignored) == 4 and all(".mlp2." in k for k in report.ignored)
    for name in ("prototypes", "feat_norm.weight", "score_norm.bias"):
        assert torch.equal(target.head.state_dict()[name], source.head.state_dict()[name])


def test_partial_wrong_or_mismatched_whole_model_file(tmp_path) -> None:
    source = model("resnet18_d8", "fcn", aux_weight=0.4)
    zoo = to_mmseg_zoo(source, "fcn")
    zoo["state_dict"] = {k: v for k, v in zoo["state_dict"].items()
                         if not k.startswith("auxiliary_head.")}
    torch.save(zoo, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"\(mmseg-zoo\) leaves 7 of \d+ tensors random: "
                                              r"aux.conv.0 .*aux.classifier"):
        load_checkpoint(model("resnet18_d8", "fcn", aux_weight=0.4), tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"holds 7 tensors the model has no place for"):
        load_checkpoint(model("resnet18_d8", "fcn"), _save(tmp_path, source))  # aux not built
    torch.save(source.backbone.state_dict(), tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match=r"not a whole-model checkpoint.*model.pretrained"):
        load_checkpoint(model("resnet18_d8", "fcn"), tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match=r"fit decoders .*need mlp_mmseg"):
        load_checkpoint(model("mit_b0", "mlp"), _save(tmp_path, source))


def _save(tmp_path, net) -> str:
    torch.save(to_mmseg_zoo(net, "fcn"), tmp_path / "full.pth")
    return str(tmp_path / "full.pth")


def test_openseg_hrnet_fuse_resizes_straight_to_the_branch_with_align_corners() -> None:
    """The zoo's ProtoSeg backbone (`hrnetv2_w48_openseg`) fuses as openseg's
    HighResolutionModule: conv + BN, then bilinear to branch i's size, align_corners=True."""
    import torch.nn.functional as F

    from methods.backbones import HRNetFeatures

    torch.manual_seed(0)
    net = HRNetFeatures("hrnet_w18_small_v2", align_corners=True, feature_location="",
                        out_indices=(1, 2, 3, 4)).eval()
    fuse = net.body.stage2[0]
    x = [torch.randn(1, 18, 9, 11), torch.randn(1, 36, 5, 6)]  # 2 x 5 != 9: sizes that differ
    with torch.no_grad():
        got = fuse([t.clone() for t in x])
        b = [fuse.branches[k](x[k]) for k in range(2)]
        up = fuse.fuse_layers[0][1]
        y0 = b[0] + F.interpolate(up[1](up[0](b[1])), size=(9, 11), mode="bilinear",
                                  align_corners=True)
        y1 = fuse.fuse_layers[1][0](b[0]) + b[1]
    torch.testing.assert_close(got[0], y0.relu(), atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], y1.relu(), atol=1e-6, rtol=0)
