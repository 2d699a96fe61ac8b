"""MMSegmentation's backbone files (the ImageNet weights its configs start from), converted to
the suite's backbone names: `resnet101_v1c`, `hrnetv2_w48`, and MiT / Swin as converted by
MMSegmentation's `mit2mmseg.py` / `swin2mmseg.py` tools.

MiT and Swin go back to the authors' original names first (the inverse of MMSegmentation's
converters) and then through benchmark/checkpoints/original.py, so each layout is described
once. The same functions convert the `backbone.*` part of MMSegmentation model-zoo files
(benchmark/checkpoints/mmseg_zoo.py). Input: a state dict with the file's prefix stripped;
output: names of the suite's `Backbone` module (`body.*`, `norms.*`).
"""

from __future__ import annotations

import re

from torch import Tensor

from benchmark.checkpoints.original import convert_segformer, convert_swin

# MMSeg ResNetV1c deep stem: Sequential(conv, BN, ReLU) x 3 -> indices 0/1, 3/4, 6/7.
V1C_STEM = {0: "conv1", 1: "bn1", 3: "conv2", 4: "bn2", 6: "conv3", 7: "bn3"}
SWIN_MERGE_ORDER = [0, 2, 1, 3]  # unfold's (row, col) order <-> Swin's x0, x1, x2, x3 order


def convert_mmseg_resnet_v1c(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`resnet101_v1c` (MMSeg ResNetV1c: deep stem of three 3x3 convs, `stem.{0..7}`) -> the
    suite's dilated ResNet: stem into `body.stem.{conv,bn}{1,2,3}`, residual layers as they are
    (MMSeg's Bottleneck names equal torchvision's). A plain-stem MMSeg ResNet (`conv1`, `bn1`)
    converts too."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"stem\.(\d)\.(\w+)", key)
        if m and int(m[1]) in V1C_STEM:
            out[f"body.stem.{V1C_STEM[int(m[1])]}.{m[2]}"] = value
        else:
            out[f"body.{key}"] = value
    return out


def convert_mmseg_hrnet(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`hrnetv2_w48` (MMSeg HRNet): the original HRNet names (`conv1`, `layer1`, `transition1`,
    `stage2.0.branches` / `fuse_layers`), which timm's HRNet (the suite's) keeps. The ImageNet
    classification parts (`incre_modules`, `downsamp_modules`, `final_layer`, `classifier`)
    are not built by the suite and end up ignored."""
    return {f"body.{key}": value for key, value in state.items()}


def mmseg_mit_to_original(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMSeg MiT -> SegFormer's names: `layers.{i}.0` patch embedding, `layers.{i}.1.{j}` blocks
    with nn.MultiheadAttention's `in_proj` ([q; k; v], split back into `q` and `kv`) and
    `out_proj`, 1x1-conv Mix-FFN (`ffn.layers.0/1/4`, reshaped back to linear fc1/fc2),
    `layers.{i}.2` the stage norm."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"layers\.(\d)\.(0|2)\.(.+)", key)
        if m:
            s, rest = int(m[1]) + 1, m[3].replace("projection.", "proj.")
            out[f"patch_embed{s}.{rest}" if m[2] == "0" else f"norm{s}.{rest}"] = value
            continue
        m = re.fullmatch(r"layers\.(\d)\.1\.(\d+)\.(.+)", key)
        if not m:
            out[key] = value
            continue
        base, rest = f"block{int(m[1]) + 1}.{m[2]}.", m[3]
        proj = re.fullmatch(r"attn\.attn\.in_proj_(weight|bias)", rest)
        if proj:
            dim = value.shape[0] // 3
            out[f"{base}attn.q.{proj[1]}"], out[f"{base}attn.kv.{proj[1]}"] = (
                value[:dim], value[dim:])
            continue
        ffn = re.fullmatch(r"ffn\.layers\.(0|1|4)\.(\w+)", rest)
        if ffn:
            name = {"0": "fc1", "1": "dwconv.dwconv", "4": "fc2"}[ffn[1]]
            if ffn[1] != "1" and ffn[2] == "weight":
                value = value.reshape(value.shape[0], value.shape[1])  # 1x1 conv -> linear
            out[f"{base}mlp.{name}.{ffn[2]}"] = value
            continue
        out[base + rest.replace("attn.attn.out_proj.", "attn.proj.")] = value
    return out


def convert_mmseg_mit(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MiT-B4 as converted by MMSegmentation (`mit_b4_*.pth`) -> the suite's MiT."""
    return convert_segformer(mmseg_mit_to_original(state))


def unfold_to_swin_order(value: Tensor) -> Tensor:
    """Patch-merging tensors: MMSeg's nn.Unfold channel order (c * 4 + 2 * row + col) ->
    Swin's concatenation order (x0, x1, x2, x3) = offsets (0,0), (1,0), (0,1), (1,1), block-major.
    Works on the reduction weight (O, 4C) and on the norm's weight and bias (4C,)."""
    lead, c4 = value.shape[:-1], value.shape[-1]
    blocks = value.reshape(*lead, c4 // 4, 4)[..., SWIN_MERGE_ORDER]
    return blocks.transpose(-1, -2).reshape(*lead, c4).contiguous()


def mmseg_swin_to_original(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMSeg Swin -> Swin's names: `stages` -> `layers`, `attn.w_msa` -> `attn`, `ffn.layers.0.0`
    / `ffn.layers.1` -> `mlp.fc1` / `mlp.fc2`, `patch_embed.projection` -> `patch_embed.proj`,
    patch merging back to Swin's channel order; MMSeg's output norms `norm{i}` -> `norms.{i}`."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"norm(\d)\.(\w+)", key)
        if m:
            out[f"norms.{m[1]}.{m[2]}"] = value
            continue
        if re.fullmatch(r"stages\.\d+\.downsample\.(reduction\.weight|norm\.\w+)", key):
            value = unfold_to_swin_order(value)
        key = re.sub(r"^stages\.", "layers.", key)
        key = key.replace("patch_embed.projection.", "patch_embed.proj.")
        key = key.replace(".attn.w_msa.", ".attn.")
        key = key.replace(".ffn.layers.0.0.", ".mlp.fc1.").replace(".ffn.layers.1.", ".mlp.fc2.")
        out[key] = value
    return out


def convert_mmseg_swin(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Swin-B as converted by MMSegmentation (`swin_base_patch4_window7_224_*.pth`, or a
    model-zoo backbone with its `norm0..3`) -> the suite's Swin."""
    return convert_swin(mmseg_swin_to_original(state))


__all__ = ["convert_mmseg_resnet_v1c", "convert_mmseg_hrnet", "convert_mmseg_mit",
           "convert_mmseg_swin", "mmseg_mit_to_original", "mmseg_swin_to_original",
           "unfold_to_swin_order"]
