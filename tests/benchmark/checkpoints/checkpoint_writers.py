"""Test helpers: write the suite's own weights in the field's checkpoint formats.

Each writer is the inverse of one conversion in benchmark/checkpoints, written independently
from the format's description (the released layouts and MMSegmentation's converter tools), so
that a round trip (suite -> format file -> loader -> suite) checks the conversion.
"""

from __future__ import annotations

import copy
import functools
import re

import torch
from torch import Tensor, nn

from benchmark.config import HeadSpec, ModelSpec
from methods import build_model

MIT_BLOCK_BACK = {"layernorm_before": "norm1", "layernorm_after": "norm2",
                  "attention.q_proj": "attn.q", "attention.o_proj": "attn.proj",
                  "attention.sequence_reduction.sequence_reduction": "attn.sr",
                  "attention.sequence_reduction.layer_norm": "attn.norm",
                  "mlp.fc1": "mlp.fc1", "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
                  "mlp.fc2": "mlp.fc2"}


def model(backbone: str, decoder: str = "mlp", seed: int = 0, head: HeadSpec | None = None,
          aux_weight: float = 0.0, channels: int = 16, classes: int = 3) -> nn.Module:
    """A small suite model with random weights and random BN statistics, in eval mode (a copy
    of a cached one: building Swin-T takes seconds on a busy CPU)."""
    return copy.deepcopy(_model(backbone, decoder, seed, head, aux_weight, channels, classes))


@functools.lru_cache(maxsize=16)
def _model(backbone: str, decoder: str, seed: int, head: HeadSpec | None, aux_weight: float,
           channels: int, classes: int) -> nn.Module:
    torch.manual_seed(seed)
    spec = ModelSpec(backbone=backbone, decoder=decoder, decoder_channels=channels,
                     head=head or HeadSpec(), aux_weight=aux_weight, init="mmseg")
    net = build_model(spec, classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.LayerNorm):
                m.weight.data.normal_(1, 0.1)
                m.bias.data.normal_(0, 0.1)
    return net.eval()


def backbone_state(net: nn.Module) -> dict[str, Tensor]:
    """The backbone's tensors, body-relative (`body.` stripped), without BN counters."""
    return {k[len("body."):]: v.clone() for k, v in net.backbone.state_dict().items()
            if k.startswith("body.") and not k.endswith("num_batches_tracked")}


def to_segformer(net: nn.Module) -> dict[str, Tensor]:
    """Suite MiT -> SegFormer's original release names (`mit_b*.pth`), with its classifier."""
    out: dict[str, Tensor] = {}
    kv: dict[str, dict[str, Tensor]] = {}
    for key, value in backbone_state(net).items():
        m = re.fullmatch(r"stages\.(\d)\.patch_embeddings\.(proj|layer_norm)\.(\w+)", key)
        if m:
            out[f"patch_embed{int(m[1]) + 1}.{'proj' if m[2] == 'proj' else 'norm'}.{m[3]}"] = value
            continue
        m = re.fullmatch(r"stages\.(\d)\.layer_norm\.(\w+)", key)
        if m:
            out[f"norm{int(m[1]) + 1}.{m[2]}"] = value
            continue
        m = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)\.(\w+)", key)
        base = f"block{int(m[1]) + 1}.{m[2]}."
        if m[3] in ("attention.k_proj", "attention.v_proj"):
            kv.setdefault(f"{base}attn.kv.{m[4]}", {})[m[3][-6]] = value
        else:
            out[f"{base}{MIT_BLOCK_BACK[m[3]]}.{m[4]}"] = value
    for key, parts in kv.items():
        out[key] = torch.cat([parts["k"], parts["v"]], dim=0)
    last = max(v.shape[0] for k, v in out.items() if k.startswith("norm"))
    out["head.weight"], out["head.bias"] = torch.randn(1000, last), torch.randn(1000)
    return out


def segformer_to_mmseg(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMSegmentation's tools/model_converters/mit2mmseg.py, restated."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("head"):
            continue
        if key.startswith("patch_embed"):
            s = int(key[len("patch_embed")])
            out[key.replace(f"patch_embed{s}", f"layers.{s - 1}.0").replace(
                "proj.", "projection.")] = value
        elif key.startswith("block"):
            s = int(key[len("block")])
            new = key.replace(f"block{s}", f"layers.{s - 1}.1")
            if ".attn.q." in new:
                new = new.replace("attn.q.", "attn.attn.in_proj_")
                value = torch.cat([value, state[key.replace("attn.q.", "attn.kv.")]], dim=0)
            elif ".attn.kv." in new:
                continue
            elif ".attn.proj." in new:
                new = new.replace("attn.proj.", "attn.attn.out_proj.")
            elif ".mlp." in new:
                if new.endswith(("fc1.weight", "fc2.weight")):
                    value = value.reshape(*value.shape, 1, 1)
                new = new.replace("mlp.", "ffn.layers.").replace("fc1.", "0.").replace(
                    "dwconv.dwconv.", "1.").replace("fc2.", "4.")
            out[new] = value
        else:
            s = int(key[len("norm")])
            out[key.replace(f"norm{s}", f"layers.{s - 1}.2")] = value
    return out


def to_swin(net: nn.Module) -> dict[str, Tensor]:
    """Suite Swin (torchvision) -> Swin's original release names, with its head, final norm,
    (W^2, W^2) position index and attention masks."""
    out: dict[str, Tensor] = {}
    for key, value in backbone_state(net).items():
        m = re.fullmatch(r"features\.0\.(0|2)\.(\w+)", key)
        if m:
            out[f"patch_embed.{'proj' if m[1] == '0' else 'norm'}.{m[2]}"] = value
            continue
        m = re.fullmatch(r"features\.(\d)\.(.+)", key)
        index, rest = int(m[1]), m[2]
        if index % 2 == 0:
            out[f"layers.{index // 2 - 1}.downsample.{rest}"] = value
            continue
        block, rest = rest.split(".", 1)
        if rest.endswith("relative_position_index"):
            side = int(value.numel() ** 0.5)
            value = value.reshape(side, side)
        rest = rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
        out[f"layers.{(index - 1) // 2}.blocks.{block}.{rest}"] = value
    out["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)
    width = out["layers.3.blocks.0.norm1.weight"].shape[0]
    out["norm.weight"], out["norm.bias"] = torch.ones(width), torch.zeros(width)
    out["head.weight"], out["head.bias"] = torch.randn(1000, width), torch.randn(1000)
    return out


def swin_to_mmseg(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMSegmentation's tools/model_converters/swin2mmseg.py, restated (patch merging into
    nn.Unfold's channel order)."""

    def reduction(x: Tensor) -> Tensor:
        o, i = x.shape
        return x.reshape(o, 4, i // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(o, i)

    def norm(x: Tensor) -> Tensor:
        return x.reshape(4, x.shape[0] // 4)[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)

    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("head") or key.endswith("attn_mask"):
            continue
        new = key
        if key.startswith("layers"):
            new = key.replace("layers", "stages", 1)
            if "attn." in new:
                new = new.replace("attn.", "attn.w_msa.")
            elif "mlp." in new:
                new = new.replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.",
                                                                         "ffn.layers.1.")
            elif "downsample" in new:
                value = reduction(value) if "reduction." in new else norm(value)
        elif key.startswith("patch_embed"):
            new = key.replace("proj", "projection")
        out[new] = value
    return out


def hrnet_mmseg(net: nn.Module) -> dict[str, Tensor]:
    """Suite HRNet -> MMSeg's `hrnetv2_w*.pth` (original HRNet names, classification extras)."""
    out = backbone_state(net)
    out["incre_modules.0.0.conv1.weight"] = torch.randn(32, 18, 1, 1)
    out["final_layer.0.weight"] = torch.randn(2048, 1024, 1, 1)
    out["classifier.weight"], out["classifier.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return out


def logits(net: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return net.eval()(x).logits


def copy_except_backbone_body(source: nn.Module, target: nn.Module) -> None:
    """Give `target` the source's decoder, head and (MMSeg-only) backbone norms: the parts an
    ImageNet backbone file does not carry."""
    own = target.state_dict()
    with torch.no_grad():
        for key, value in source.state_dict().items():
            if not key.startswith("backbone.body."):
                own[key].copy_(value)


# ----------------------------------------------------------------------------- whole models

DECODE_BACK: dict[str, list[tuple[str, str]]] = {  # suite decoder module -> MMSeg's
    "fcn": [(r"convs\.(\d+)", r"convs.\1"), (r"conv_cat", "conv_cat")],
    "hrnetv2": [(r"fuse", "convs.0")],
    "upernet": [(r"ppm\.(\d+)\.1", r"psp_modules.\1.1"), (r"bottleneck", "bottleneck"),
                (r"laterals\.(\d+)", r"lateral_convs.\1"), (r"fpn_convs\.(\d+)", r"fpn_convs.\1"),
                (r"fpn_bottleneck", "fpn_bottleneck")],
    "mlp_mmseg": [(r"convs\.(\d+)", r"convs.\1"), (r"fusion_conv", "fusion_conv")],
}


def _mmseg_backbone(net: nn.Module) -> dict[str, Tensor]:
    name = net.backbone.name
    if name.startswith("swin"):
        state = swin_to_mmseg(to_swin(net))
        del state["norm.weight"], state["norm.bias"]  # the zoo's Swin has per-stage norms only
        for i, norm in enumerate(net.backbone.norms):
            state[f"norm{i}.weight"], state[f"norm{i}.bias"] = norm.weight, norm.bias
        return state
    if name.startswith("mit"):
        return segformer_to_mmseg(to_segformer(net))
    return backbone_state(net)  # ResNet (plain stem) and HRNet: MMSeg's names are these


def to_mmseg_zoo(net: nn.Module, decoder: str) -> dict:
    """Suite Segmentor -> an MMSegmentation 1.x model-zoo file ({meta, state_dict})."""
    out = {f"backbone.{k}": v for k, v in _mmseg_backbone(net).items()}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked") or key.startswith("backbone."):
            continue
        m = re.fullmatch(r"decoder\.(.+)\.(0|1)\.(\w+)", key)
        if m:
            module = next(re.sub(f"^{p}$", r, m[1]) for p, r in DECODE_BACK[decoder]
                          if re.fullmatch(p, m[1]))
            out[f"decode_head.{module}.{'conv' if m[2] == '0' else 'bn'}.{m[3]}"] = value
        elif key.startswith("head.classifier."):
            out[key.replace("head.classifier.", "decode_head.conv_seg.")] = value
        elif key.startswith("aux.conv."):
            _, _, idx, param = key.split(".")
            out[f"auxiliary_head.convs.0.{'conv' if idx == '0' else 'bn'}.{param}"] = value
        else:
            out[key.replace("aux.classifier.", "auxiliary_head.conv_seg.")] = value
    return {"meta": {"mmseg_version": "1.2.2", "dataset_meta": {}}, "state_dict": out}


OPENSEG_BACK = [(r"backbone\.body\.(.+)", r"backbone.\1"),
                (r"decoder\.fuse\.0\.(\w+)", r"cls_head.0.\1"),
                (r"decoder\.fuse\.1\.(\w+)", r"cls_head.1.0.\1"),
                (r"head\.feat_norm\.(\w+)", r"feat_norm.\1"),
                (r"head\.score_norm\.(\w+)", r"mask_norm.\1"), (r"head\.prototypes", "prototypes")]


def to_openseg(net: nn.Module) -> dict:
    """Suite HRNet + prototype model -> the released ProtoSeg checkpoint (openseg, DDP)."""
    out: dict[str, Tensor] = {}
    for key, value in net.state_dict().items():
        m = re.fullmatch(r"head\.projection\.(\d)\.(\w+)", key)
        if m:  # ProjectionHead registers one Sequential as both `proj` and `mlp2`
            out[f"module.proj_head.proj.{m[1]}.{m[2]}"] = value
            out[f"module.proj_head.mlp2.{m[1]}.{m[2]}"] = value
            continue
        new = next(re.sub(f"^{p}$", r, key) for p, r in OPENSEG_BACK if re.fullmatch(p, key))
        out[f"module.{new}"] = value
    return {"config_dict": {"network": {"model_name": "hrnet_w48_proto"}}, "state_dict": out}


# ----------------------------------------------------------------------------- README demo

# A tiny variant of the zoo's SegFormer ADE20K cell on generated data (README, "Check the suite
# against published checkpoints first"; tests/benchmark/checkpoints/test_zoo.py).
TINY_ZOO = ("model.backbone=mit_b0", "model.decoder_channels=16", "data.name=synthetic",
            "data.num_classes=4", "data.image_size=32", "data.val_images=4",
            "data.train_images=4")
TINY_ZOO_ROW = "segformer_mit-b4_8xb2-160k_ade20k-512x512"


def write_tiny_zoo(folder: str = "demo_checkpoints") -> str:
    """Write an MMSeg-zoo file for the tiny SegFormer zoo cell into `folder` (random weights:
    the point is the round trip through the loader and the evaluation, not the score)."""
    from pathlib import Path

    from benchmark.overrides import apply_overrides
    from experiments import get_grid

    cell = next(c for c in get_grid("zoo").cells if c.row == TINY_ZOO_ROW)
    cell = apply_overrides(cell, list(TINY_ZOO))
    torch.manual_seed(0)
    net = build_model(cell.model, cell.data.num_classes).eval()
    path = Path(folder) / "segformer_mit-b4_512x512_160k_ade20k_tiny-demo.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_mmseg_zoo(net, "mlp_mmseg"), path)
    return str(path)
