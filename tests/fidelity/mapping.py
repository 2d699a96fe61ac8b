"""The suite's model state dict -> MMSegmentation 1.2.2's names, per paper model.

Each `to_mmseg_*` takes `Segmentor.state_dict()` and returns the state dict of the matching
MMSeg `EncoderDecoder`, so `load_state_dict(..., strict=True)` checks that every tensor of both
models is covered. Used by tests/fidelity/test_models.py (docs/fidelity.md).
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import Tensor

State = dict[str, Tensor]
Rules = list[tuple[str, str]]  # (regex on the suite's name, replacement) applied in order

CLASSIFIER: Rules = [(r"^head\.classifier\.", "decode_head.conv_seg.")]
AUX: Rules = [(r"^aux\.conv\.0\.", "auxiliary_head.convs.0.conv."),
              (r"^aux\.conv\.1\.", "auxiliary_head.convs.0.bn."),
              (r"^aux\.classifier\.", "auxiliary_head.conv_seg.")]
CONV_MODULE = {"0": "conv", "1": "bn"}  # conv_bn_relu's Sequential -> mmcv ConvModule


def rename(state: State, rules: Rules) -> State:
    """Apply the first matching rule to every name; a name no rule matches is an error."""
    out: State = {}
    for key, value in state.items():
        for pattern, repl in rules:
            if re.search(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise KeyError(f"no MMSeg name for the suite's {key!r}")
    return out


def _conv_module(prefix: str, target: str) -> Rules:
    """`{prefix}.0/1.` (conv, BN of conv_bn_relu) -> `{target}.conv/bn.`."""
    return [(rf"^{re.escape(prefix)}\.{i}\.", f"{target}.{name}.")
            for i, name in CONV_MODULE.items()]


def to_mmseg_hrnet(state: State) -> State:
    """HRNetV2-W48 + FCNHead (`fcn_hr48`): timm keeps HRNet's original names; the decoder's
    1x1 fusion is FCNHead's single conv (`convs.0`)."""
    rules = [(r"^backbone\.body\.", "backbone.")] + _conv_module("decoder.fuse", "decode_head.convs.0")
    return rename(state, rules + CLASSIFIER)


V1C_STEM = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}


def to_mmseg_fcn(state: State) -> State:
    """ResNet-101-D8 (ResNetV1c) + FCNHead + auxiliary FCNHead (`fcn_r101-d8`): the deep stem
    is MMSeg's `stem` Sequential; residual layers keep torchvision's names."""
    rules = [(rf"^backbone\.body\.stem\.{name}\.", f"backbone.stem.{i}.")
             for name, i in V1C_STEM.items()]
    rules += [(r"^backbone\.body\.", "backbone.")]
    for i in range(2):
        rules += _conv_module(f"decoder.convs.{i}", f"decode_head.convs.{i}")
    rules += _conv_module("decoder.conv_cat", "decode_head.conv_cat")
    return rename(state, rules + CLASSIFIER + AUX)


MAPPINGS: dict[str, Callable[[State], State]] = {
    "hrnet": to_mmseg_hrnet,
    "fcn": to_mmseg_fcn,
}


def randomize_norms_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm / LayerNorm affine parameters and BN running statistics, so the
    comparison exercises every tensor that is copied (fresh modules hold ones and zeros)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm,
                              torch.nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
