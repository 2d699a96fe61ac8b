"""MMSegmentation 1.x model-zoo checkpoints (`{meta, state_dict}`) -> the suite's Segmentor.

A zoo file holds `backbone.*` (MMSeg's backbone names: benchmark/checkpoints/mmseg_backbone.py),
`decode_head.*` and `auxiliary_head.*`. MMSeg builds its heads from ConvModules
(`<name>.conv` + `<name>.bn`), which are the suite's `conv_bn_relu` Sequentials (`<name>.0` +
`<name>.1`); the classifier `conv_seg` is the softmax head's `classifier`. Which decode head the
file holds follows from the cell's decoder (FCNHead: fcn and hrnetv2, UPerHead: upernet,
SegformerHead: mlp_mmseg).
"""

from __future__ import annotations

import re
from typing import Callable

from torch import Tensor

from benchmark.checkpoints import mmseg_backbone
from benchmark.checkpoints.coverage import CheckpointError

# MMSeg decode-head module (regex) -> the suite's decoder module, per suite decoder name.
DECODE_HEADS: dict[str, list[tuple[str, str]]] = {
    "fcn": [(r"convs\.(\d+)", r"decoder.convs.\1"), (r"conv_cat", "decoder.conv_cat")],
    "hrnetv2": [(r"convs\.0", "decoder.fuse")],
    "upernet": [(r"psp_modules\.(\d+)\.1", r"decoder.ppm.\1.1"),
                (r"bottleneck", "decoder.bottleneck"),
                (r"lateral_convs\.(\d+)", r"decoder.laterals.\1"),
                (r"fpn_convs\.(\d+)", r"decoder.fpn_convs.\1"),
                (r"fpn_bottleneck", "decoder.fpn_bottleneck")],
    "mlp_mmseg": [(r"convs\.(\d+)", r"decoder.convs.\1"), (r"fusion_conv", "decoder.fusion_conv")],
}
AUX_HEAD = [(r"convs\.0", "aux.conv")]
CONV_MODULE = {"conv": "0", "bn": "1"}  # ConvModule part -> index in conv_bn_relu

BACKBONES: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {
    "resnet": mmseg_backbone.convert_mmseg_resnet_v1c,
    "hrnet": mmseg_backbone.convert_mmseg_hrnet,
    "swin": mmseg_backbone.convert_mmseg_swin,
    "mit": mmseg_backbone.convert_mmseg_mit,
}


def backbone_converter(backbone: str) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]:
    """The MMSeg backbone conversion of a suite backbone name (its family prefix)."""
    family = next((f for f in BACKBONES if backbone.startswith(f)), None)
    if family is None:
        raise CheckpointError(f"--checkpoint: no MMSegmentation format known for backbone "
                              f"{backbone!r}")
    return BACKBONES[family]


def _head(state: dict[str, Tensor], rules: list[tuple[str, str]],
          classifier: str) -> dict[str, Tensor]:
    """One MMSeg head's tensors (prefix stripped) under the suite's names; unknown keys keep
    their name (and fail the strict load as unexpected)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"conv_seg\.(\w+)", key)
        if m:
            out[f"{classifier}.{m[1]}"] = value
            continue
        m = re.fullmatch(r"(.+)\.(conv|bn)\.(\w+)", key)
        target = None
        if m:
            target = next((re.sub(f"^{p}$", r, m[1]) for p, r in rules if re.fullmatch(p, m[1])),
                          None)
        out[f"{target}.{CONV_MODULE[m[2]]}.{m[3]}" if target else key] = value
    return out


def convert_mmseg_zoo(state: dict[str, Tensor], backbone: str, decoder: str,
                      head: str = "softmax") -> dict[str, Tensor]:
    """A zoo state dict -> the Segmentor's names, for a cell with this backbone, decoder and
    head. Raises CheckpointError when the cell's decoder has no MMSeg counterpart."""
    if decoder not in DECODE_HEADS:
        raise CheckpointError(
            f"--checkpoint: MMSegmentation zoo files fit decoders {', '.join(DECODE_HEADS)}; "
            f"this cell's decoder is {decoder!r} (SegFormer's zoo files need mlp_mmseg)")
    parts: dict[str, dict[str, Tensor]] = {"backbone": {}, "decode_head": {},
                                           "auxiliary_head": {}}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part in parts:
            parts[part][rest] = value
        else:
            out[key] = value  # foreign: the strict load names it
    converted = backbone_converter(backbone)(parts["backbone"])
    out.update({f"backbone.{k}": v for k, v in converted.items()})
    classifier = "head.classifier" if head in ("softmax", "pixel_contrast") else "head.conv_seg"
    out.update(_head(parts["decode_head"], DECODE_HEADS[decoder], classifier))
    out.update(_head(parts["auxiliary_head"], AUX_HEAD, "aux.classifier"))
    return out


def is_mmseg_zoo(state: dict[str, Tensor]) -> bool:
    return any(k.startswith("decode_head.") for k in state)
