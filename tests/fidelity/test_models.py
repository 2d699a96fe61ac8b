"""Paper models against MMSegmentation 1.2.2: same weights, same inputs, equal logits.

Each test builds the suite's Table-1 baseline and MMSeg's model from the config its recipe
names (shipped in the mmseg package), copies random weights across (tests/fidelity/mapping.py)
and compares the decode head's logits (feature resolution, float32, eval mode) at two input
sizes, one not divisible by 32 (docs/fidelity.md).
"""

from __future__ import annotations

import pytest
import torch

from benchmark.config import ModelSpec
from experiments.paper_models import PAPER_MODELS
from experiments.table1 import UPERNET_SWIN_B
from mapping import MAPPINGS, randomize_norms_
from methods import build_model

NUM_CLASSES = 150
TOL = 1e-4
SIZES = [(64, 64), (50, 67)]  # 512x512 training crops and 683x512-like test sizes, scaled down
BASELINES = {pm.pair: pm for pm in PAPER_MODELS}  # the Table-1 baselines


def compare(mmseg, pair: str, config: str, model_spec=None, cfg_edit=None) -> float:
    """Largest |logit difference| over SIZES between the suite's model and MMSeg's."""
    torch.manual_seed(0)
    ours = build_model(model_spec or BASELINES[pair].model, NUM_CLASSES).eval()
    randomize_norms_(ours, torch.Generator().manual_seed(1))
    cfg = mmseg.model_cfg(config)
    if cfg_edit is not None:
        cfg_edit(cfg)
    theirs = mmseg.build(cfg).eval()
    theirs.load_state_dict(MAPPINGS[pair](ours.state_dict()), strict=True)
    assert norm_eps(ours) == norm_eps(theirs)  # below the tolerance's reach (e.g. MiT's 1e-6)
    worst = 0.0
    with torch.no_grad():
        for h, w in SIZES:
            x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
            pairs = [(ours(x).logits, mmseg.logits(theirs, x))]
            if ours.aux is not None:  # the auxiliary head too (training only, same layout)
                pairs.append((ours.aux(ours.backbone(x)[-2]),
                              theirs.auxiliary_head(theirs.extract_feat(x))))
            for a, b in pairs:
                assert a.shape == b.shape, (h, w, a.shape, b.shape)
                worst = max(worst, relative_gap(a, b))
    return worst


def norm_eps(model: torch.nn.Module) -> list[float]:
    """Every normalisation layer's eps, sorted (module order differs between the two)."""
    return sorted(m.eps for m in model.modules()
                  if isinstance(m, (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)))


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the logits' scale (absolute below 1)."""
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def test_hrnet_w48_equals_mmseg_fcn_hr48(mmseg) -> None:
    """HRNetV2-W48 + FCNHead: bilinear fuse layers, no dropout, resize_concat decoder."""
    assert compare(mmseg, "hrnet", "hrnet/fcn_hr48_4xb4-160k_ade20k-512x512") <= TOL


def test_mmcv_compiled_ops_stand_in_raises_when_called(mmseg) -> None:
    """mmcv-lite has no compiled ops: the stand-in lets mmseg import, never computes."""
    import mmcv._ext as ext

    with pytest.raises(RuntimeError, match="compiled op 'nms'"):
        ext.nms()


def test_fcn_r101_d8_equals_mmseg_fcn_r101_d8(mmseg) -> None:
    """ResNetV1c-101 (deep stem, contract dilation) + FCNHead, and the auxiliary head's layout."""
    assert compare(mmseg, "fcn", "fcn/fcn_r101-d8_4xb4-160k_ade20k-512x512") <= TOL


SEGFORMER_ZOO = ModelSpec(backbone="mit_b4", decoder="mlp_mmseg", decoder_channels=256,
                          init="mmseg")


def test_segformer_mit_b4_zoo_head_equals_mmseg_segformer_mit_b4(mmseg) -> None:
    """MiT-B4 (LayerNorm eps 1e-6) + MMSeg's SegformerHead, 256 channels: the model zoo's
    SegFormer (`--set model.decoder=mlp_mmseg --set model.decoder_channels=256`)."""
    config = "segformer/segformer_mit-b4_8xb2-160k_ade20k-512x512"
    assert compare(mmseg, "segformer", config, SEGFORMER_ZOO) <= TOL


def test_swin_b_upernet_equals_mmseg_upernet_swin_base(mmseg) -> None:
    """Swin-B (patch padding to a multiple of 4, MMSeg's always-shifted windows, patch-merging
    channel order) + UPerHead + auxiliary FCNHead: Table 1's reference row (121.0M), the zoo's
    47.99 model. At these small sizes stage 3 fits one window, where torchvision would not shift."""
    config = "swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512"
    assert compare(mmseg, "swin", config, UPERNET_SWIN_B) <= TOL


def test_head_initialisation_follows_mmseg(mmseg) -> None:
    """Decoder and auxiliary head as MMSeg initialises them: ConvModules Kaiming-normal
    (fan_out), BN 1 / 0, `conv_seg` normal std 0.01 with bias 0 (same distributions, tensor by
    tensor; the backbone comes from ImageNet weights and is not compared)."""
    torch.manual_seed(0)
    ours = MAPPINGS["fcn"](build_model(BASELINES["fcn"].model, NUM_CLASSES).state_dict())
    theirs = mmseg.build(mmseg.model_cfg("fcn/fcn_r101-d8_4xb4-160k_ade20k-512x512"))
    theirs.decode_head.init_weights()
    theirs.auxiliary_head.init_weights()
    compared = 0
    for name, b in theirs.state_dict().items():
        if not name.startswith(("decode_head.", "auxiliary_head.")) or b.dtype != torch.float32:
            continue
        a = ours[name]
        if name.endswith(("running_mean", "running_var")) or b.numel() < 1000:
            assert torch.equal(a, b), name  # BN, biases: constants
        else:
            assert abs(a.std().item() / b.std().item() - 1) < 0.05, name
            assert abs(a.mean().item()) < 0.1 * b.std().item(), name
        compared += 1
    assert compared == 24  # 3 + 1 decoder ConvModules x 5, classifier x 2, twice
