"""The released ProtoSeg HRNet checkpoint (openseg format) -> the suite's HRNet + prototype model.

tfzhou/ProtoSeg `lib/models/nets/hrnet.py` (`HRNet_W48_Proto`), saved from DataParallel/DDP
(`module.` prefix): `backbone.*` (the original HRNet names, as timm's), `cls_head` (3x3 conv with
bias, `BNReLU` = Sequential(BN, ReLU), dropout) = the suite's `hrnetv2_openseg` decoder,
`proj_head.proj` (Conv1x1, ReLU, Conv1x1; the same module is also registered as
`proj_head.mlp2`, so the file holds it twice) = the prototype head's `projection`,
`feat_norm` = `feat_norm`, `mask_norm` = `score_norm`, `prototypes` (C, K, 720) = `prototypes`.
The released options are `projection=mlp` and `proj_norm_axis=width` (docs/method.md#paper-vs-released-code).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from benchmark.checkpoints.coverage import CheckpointError

RULES = [
    (r"backbone\.(.+)", r"backbone.body.\1"),
    (r"cls_head\.0\.(\w+)", r"decoder.fuse.0.\1"),
    (r"cls_head\.1\.0\.(\w+)", r"decoder.fuse.1.\1"),
    (r"proj_head\.proj\.(\d)\.(\w+)", r"head.projection.\1.\2"),
    (r"feat_norm\.(\w+)", r"head.feat_norm.\1"),
    (r"mask_norm\.(\w+)", r"head.score_norm.\1"),
    (r"prototypes", "head.prototypes"),
]
ALIAS = "proj_head.mlp2."  # the same tensors as proj_head.proj.


def convert_openseg_hrnet(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An openseg ProtoSeg HRNet state dict -> the Segmentor's names. The `proj_head.mlp2`
    alias is checked equal to `proj_head.proj` and kept under its name (ignored)."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(ALIAS):
            twin = state.get(key.replace(ALIAS, "proj_head.proj.", 1))
            if twin is None or not torch.equal(twin, value):
                raise CheckpointError(f"--checkpoint: {key} differs from its twin "
                                      f"{key.replace(ALIAS, 'proj_head.proj.', 1)}")
            out[key] = value
            continue
        new = next((re.sub(f"^{p}$", r, key) for p, r in RULES if re.fullmatch(p, key)), key)
        out[new] = value
    return out


def is_openseg(state: dict[str, Tensor]) -> bool:
    return any(re.match(r"(module\.)?(cls_head|proj_head|prototypes)", k) for k in state)
