"""The suite's model state dict -> MMSegmentation 1.2.2's names, per paper model.

Each `to_mmseg_*` takes `Segmentor.state_dict()` and returns the state dict of the matching
MMSeg `EncoderDecoder`, so `load_state_dict(..., strict=True)` checks that every tensor of both
models is covered. Used by tests/fidelity/test_models.py (docs/fidelity.md).
"""

from __future__ import annotations

import math
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
    rules = [(r"^backbone\.body\.", "backbone.")]
    rules += _conv_module("decoder.fuse", "decode_head.convs.0")
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


STAGE = r"^backbone\.body\.stages\.(\d)\."
MIT_RULES: Rules = [  # the suite's MiT (transformers) -> MMSeg's MixVisionTransformer
    (STAGE + r"patch_embeddings\.proj\.", r"backbone.layers.\1.0.projection."),
    (STAGE + r"patch_embeddings\.layer_norm\.", r"backbone.layers.\1.0.norm."),
    (STAGE + r"layer_norm\.", r"backbone.layers.\1.2."),
    (STAGE + r"blocks\.(\d+)\.", r"backbone.layers.\1.1.\2."),
]
MIT_BLOCK: Rules = [
    (r"\.layernorm_before\.", ".norm1."), (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.o_proj\.", ".attn.attn.out_proj."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attn.norm."),
    (r"\.mlp\.fc1\.", ".ffn.layers.0."), (r"\.mlp\.dwconv\.dwconv\.", ".ffn.layers.1."),
    (r"\.mlp\.fc2\.", ".ffn.layers.4."),
]


def _mit_backbone(state: State) -> State:
    """MiT: q/k/v projections -> nn.MultiheadAttention's `in_proj` ([q; k; v]); the Mix-FFN's
    linear layers -> 1x1 convs; every other tensor renamed."""
    out: State = {}
    for key, value in state.items():
        if not key.startswith("backbone."):
            out[key] = value
            continue
        m = re.fullmatch(r"(.+)\.attention\.([qkv])_proj\.(weight|bias)", key)
        if m:
            if m[2] == "q":
                block = next(iter(rename({f"{m[1]}.": value}, MIT_RULES)))  # MMSeg's prefix
                qkv = [state[f"{m[1]}.attention.{p}_proj.{m[3]}"] for p in "qkv"]
                out[f"{block}attn.attn.in_proj_{m[3]}"] = torch.cat(qkv)
            continue
        (new, value), = rename({key: value}, MIT_RULES).items()
        if ".1." in new and re.search(r"\.mlp\.fc[12]\.weight$", key):
            value = value[:, :, None, None]  # linear (O, I) -> 1x1 conv (O, I, 1, 1)
        for pattern, repl in MIT_BLOCK:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def to_mmseg_segformer(state: State) -> State:
    """MiT-B4 + MMSeg's SegformerHead (`mlp_mmseg` decoder): `convs.{i}` and `fusion_conv`
    are ConvModules."""
    rules: Rules = [(r"^backbone\.", "backbone.")]
    for i in range(4):
        rules += _conv_module(f"decoder.convs.{i}", f"decode_head.convs.{i}")
    rules += _conv_module("decoder.fusion_conv", "decode_head.fusion_conv")
    return rename(_mit_backbone(state), rules + CLASSIFIER)


SWIN_MERGE = [0, 2, 1, 3]  # Unfold's kernel position (row-major) -> torchvision's x0..x3 block
SWIN_STAGE_OF_FEATURE = {1: 0, 3: 1, 5: 2, 7: 3}  # torchvision `features` index -> stage
SWIN_BLOCK: Rules = [(r"\.attn\.", ".attn.w_msa."), (r"\.mlp\.0\.", ".ffn.layers.0.0."),
                     (r"\.mlp\.3\.", ".ffn.layers.1.")]


def swin_merge_order(value: Tensor) -> Tensor:
    """Patch merging (reduction weight (O, 4C), norm (4C,)): torchvision concatenates the four
    2x2 offsets block-major, MMSeg's nn.Unfold interleaves them channel-major."""
    lead, c = value.shape[:-1], value.shape[-1] // 4
    return value.reshape(*lead, 4, c)[..., SWIN_MERGE, :].transpose(-1, -2).reshape(*lead, 4 * c)


def _swin_backbone_key(key: str, value: Tensor) -> tuple[str, Tensor]:
    """One tensor of the suite's Swin (torchvision `features`, `norms`) -> MMSeg's name."""
    m = re.fullmatch(r"backbone\.norms\.(\d)\.(\w+)", key)
    if m:
        return f"backbone.norm{m[1]}.{m[2]}", value
    m = re.fullmatch(r"backbone\.body\.features\.0\.(0|2)\.(\w+)", key)
    if m:
        return f"backbone.patch_embed.{'projection' if m[1] == '0' else 'norm'}.{m[2]}", value
    m = re.fullmatch(r"backbone\.body\.features\.([246])\.(reduction|norm)\.(\w+)", key)
    if m:
        stage = int(m[1]) // 2 - 1
        return f"backbone.stages.{stage}.downsample.{m[2]}.{m[3]}", swin_merge_order(value)
    m = re.fullmatch(r"backbone\.body\.features\.([1357])\.(\d+)\.(.+)", key)
    if not m:
        raise KeyError(f"no MMSeg name for the suite's {key!r}")
    if m[3].endswith("relative_position_index"):  # torchvision keeps it flat: (ws^4,)
        n = math.isqrt(value.numel())
        value = value.reshape(n, n)
    new = f"backbone.stages.{SWIN_STAGE_OF_FEATURE[int(m[1])]}.blocks.{m[2]}.{m[3]}"
    for pattern, repl in SWIN_BLOCK:
        new = re.sub(pattern, repl, new)
    return new, value


def to_mmseg_swin_upernet(state: State) -> State:
    """Swin-B + UPerHead + auxiliary FCNHead (`swin-base-patch4-window7 ... upernet`)."""
    out: State = dict(_swin_backbone_key(k, v) for k, v in state.items()
                      if k.startswith("backbone."))
    rules: Rules = []
    for i in range(4):
        rules += _conv_module(f"decoder.ppm.{i}.1", f"decode_head.psp_modules.{i}.1")
    rules += _conv_module("decoder.bottleneck", "decode_head.bottleneck")
    for i in range(3):
        rules += _conv_module(f"decoder.laterals.{i}", f"decode_head.lateral_convs.{i}")
        rules += _conv_module(f"decoder.fpn_convs.{i}", f"decode_head.fpn_convs.{i}")
    rules += _conv_module("decoder.fpn_bottleneck", "decode_head.fpn_bottleneck")
    rest = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    return out | rename(rest, rules + CLASSIFIER + AUX)


MAPPINGS: dict[str, Callable[[State], State]] = {
    "swin": to_mmseg_swin_upernet,
    "segformer": to_mmseg_segformer,
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
