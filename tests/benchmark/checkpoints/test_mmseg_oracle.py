"""Checkpoints that MMSegmentation 1.2.2's own models save (the fidelity extra): a model-zoo
file (`{meta, state_dict}`) of a small variant of each zoo architecture, and the backbone alone
(the layout of MMSeg's ImageNet files), load into the suite's model and give MMSeg's logits."""

from __future__ import annotations

import pytest
import torch
from checkpoint_writers import model

from benchmark.checkpoints import load_pretrained
from benchmark.checkpoints.whole import load_checkpoint

pytestmark = pytest.mark.slow  # three MMSeg models built and run on the CPU (about a minute)

CASES = {  # MMSeg config -> the suite's (backbone, decoder, decoder channels, aux)
    "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512": ("mit_b0", "mlp_mmseg", 256, 0.0),
    "hrnet/fcn_hr18s_4xb4-160k_ade20k-512x512": ("hrnetv2_w18_small", "hrnetv2", 270, 0.0),
    "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512":
        ("swin_t", "upernet", 512, 0.4),
}
X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _theirs(mmseg_oracle, config: str) -> torch.nn.Module:
    torch.manual_seed(1)
    net = mmseg_oracle.build(mmseg_oracle.model_cfg(config)).eval()
    with torch.no_grad():  # non-trivial norms and statistics, so every tensor matters
        for m in net.modules():
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize("config", list(CASES))
def test_mmseg_saved_zoo_file_gives_mmsegs_logits(mmseg_oracle, config, tmp_path) -> None:
    backbone, decoder, channels, aux = CASES[config]
    theirs = _theirs(mmseg_oracle, config)
    torch.save({"meta": {"mmseg_version": mmseg_oracle.version},
                "state_dict": theirs.state_dict()}, tmp_path / "zoo.pth")
    ours = model(backbone, decoder, seed=2, aux_weight=aux, channels=channels, classes=150)
    report = load_checkpoint(ours, tmp_path / "zoo.pth")
    assert report.unexpected == [] and report.mismatched == []
    with torch.no_grad():
        torch.testing.assert_close(ours(X).logits, mmseg_oracle.logits(theirs, X),
                                   atol=1e-4, rtol=1e-4)
    # the backbone alone, as MMSeg's ImageNet files hold it (`model.pretrained`)
    torch.save(theirs.backbone.state_dict(), tmp_path / "backbone.pth")
    fresh = model(backbone, decoder, seed=3, aux_weight=aux, channels=channels, classes=150)
    load_pretrained(fresh, tmp_path / "backbone.pth")
    with torch.no_grad():
        for a, b in zip(fresh.backbone(X), theirs.extract_feat(X)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mmseg_fcn_r50_v1c_zoo_file_fills_the_deep_stem(mmseg_oracle, tmp_path) -> None:
    """FCN on ResNetV1c (deep stem `stem.{0..7}`, contract dilation) with its auxiliary head:
    MMSeg's fcn_r50-d8 saved, loaded into the suite's dilated ResNet-50 with the V1c stem."""
    from methods.backbones import DilatedResNet
    from methods.decoders import FCNDecoder
    from methods.heads import SoftmaxHead
    from methods.segmentor import AuxFCNHead, Segmentor

    theirs = _theirs(mmseg_oracle, "fcn/fcn_r50-d8_4xb4-160k_ade20k-512x512")
    torch.save({"meta": {}, "state_dict": theirs.state_dict()}, tmp_path / "fcn.pth")
    backbone = DilatedResNet("resnet50", deep_stem=True)
    backbone.name = "resnet50_d8"
    ours = Segmentor(backbone, FCNDecoder([1024, 2048], 512), SoftmaxHead(512, 150),
                     AuxFCNHead(1024, 150), aux_weight=0.4).eval()
    report = load_checkpoint(ours, tmp_path / "fcn.pth")
    assert report.missing == report.unexpected == [] and report.loaded == report.expected
    with torch.no_grad():
        torch.testing.assert_close(ours(X).logits, mmseg_oracle.logits(theirs, X),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.aux(ours.backbone(X)[-2]),
                                   theirs.auxiliary_head(theirs.extract_feat(X)),
                                   atol=1e-4, rtol=1e-4)
