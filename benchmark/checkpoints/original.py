"""The authors' original ImageNet releases, converted to the suite's backbone names.

- SegFormer's MiT (`mit_b4.pth`, NVlabs/SegFormer): `patch_embed{s}`, `block{s}.{j}` with the
  query and the fused key/value projections `attn.q` / `attn.kv`, the spatial-reduction conv
  `attn.sr` and its `attn.norm`, the Mix-FFN `mlp.fc1` / `mlp.dwconv.dwconv` / `mlp.fc2`, and a
  LayerNorm `norm{s}` after each stage.
- Swin (`swin_base_patch4_window7_224.pth`, microsoft/Swin-Transformer): `patch_embed`,
  `layers.{i}.blocks.{j}` (`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`) and the patch
  merging `layers.{i}.downsample` at the end of stage i; torchvision's Swin (the suite's) keeps
  the same tensors and channel order under `features.*`.

These two are the pivot of the other formats: MMSegmentation's converted files
(benchmark/checkpoints/mmseg_backbone.py) are first turned back into them. Each function maps a
state dict (prefix already stripped) to names of the suite's `Backbone` module (`body.*`,
`norms.*`); keys it does not know keep their name and end up unexpected or ignored.
"""

from __future__ import annotations

import re

from torch import Tensor

MIT_BLOCK = [  # SegFormer block names -> transformers' SegformerLayer names (the suite's body)
    ("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."),
    ("attn.q.", "attention.q_proj."), ("attn.proj.", "attention.o_proj."),
    ("attn.sr.", "attention.sequence_reduction.sequence_reduction."),
    ("attn.norm.", "attention.sequence_reduction.layer_norm."),
    ("mlp.", "mlp."),
]


def convert_segformer(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """SegFormer's original MiT release -> the suite's MiT (`body.stages.{s}` ...).

    The fused `attn.kv` projection (2C, C) splits into the key (first C rows) and value."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(\w+)", key)
        if m:
            part = "proj" if m[2] == "proj" else "layer_norm"
            out[f"body.stages.{int(m[1]) - 1}.patch_embeddings.{part}.{m[3]}"] = value
            continue
        m = re.fullmatch(r"norm(\d)\.(\w+)", key)
        if m:
            out[f"body.stages.{int(m[1]) - 1}.layer_norm.{m[2]}"] = value
            continue
        m = re.fullmatch(r"block(\d)\.(\d+)\.(.+)", key)
        if not m:
            out[key] = value  # head.* (ImageNet classifier) and anything foreign
            continue
        base, rest = f"body.stages.{int(m[1]) - 1}.blocks.{m[2]}.attention.", m[3]
        kv = re.fullmatch(r"attn\.kv\.(\w+)", rest)
        if kv:
            k, v = value.chunk(2, dim=0)
            out[f"{base}k_proj.{kv[1]}"], out[f"{base}v_proj.{kv[1]}"] = k, v
            continue
        new = next((rest.replace(a, b, 1) for a, b in MIT_BLOCK if rest.startswith(a)), None)
        out[f"body.stages.{int(m[1]) - 1}.blocks.{m[2]}.{new}" if new else key] = value
    return out


def convert_swin(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Swin's original release -> the suite's Swin (torchvision `body.features.*`).

    torchvision's layout: features.0 = patch embedding (conv, permute, LayerNorm), then stage i
    at features.{2i+1} and its patch merging at features.{2i+2}. The precomputed
    `relative_position_index` and `attn_mask` buffers are left out (the suite computes them);
    `norms.*` (MMSeg's per-stage output norms) pass through unchanged."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(("relative_position_index", "attn_mask")) or key.startswith("norms."):
            out[key] = value
            continue
        m = re.fullmatch(r"patch_embed\.(proj|norm)\.(\w+)", key)
        if m:
            out[f"body.features.0.{0 if m[1] == 'proj' else 2}.{m[2]}"] = value
            continue
        m = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", key)
        if m:
            rest = m[3].replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
            out[f"body.features.{2 * int(m[1]) + 1}.{m[2]}.{rest}"] = value
            continue
        m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
        out[f"body.features.{2 * int(m[1]) + 2}.{m[2]}" if m else key] = value
    return out
