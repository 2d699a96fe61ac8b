"""The optimizer of a run and its parameter groups (`train.param_groups`, docs/fidelity.md).

- `no_decay_1d`: no weight decay on parameters with at most one dimension (norms, biases),
  one lr. The suite's behaviour before the recipes named their sources.
- `decay_all`: every parameter decays, one lr: MMSegmentation's default optimizer constructor
  without `paramwise_cfg` (its FCN and HRNet configs) and the released ProtoSeg code.
- `segformer`, `swin`: the `paramwise_cfg.custom_keys` of MMSegmentation's SegFormer and Swin
  configs, applied as mmengine's DefaultOptimWrapperConstructor does: the longest key found in
  a parameter's MMSeg name wins (ties alphabetically), and sets lr x `lr_mult`, weight decay
  x `decay_mult`.

A key is found where MMSegmentation's names of the same parameter contain it. The suite's
names differ, so each key is a rule about what it finds there: `head` every parameter of the
decode head (the suite's `decoder` and `head`) and of the auxiliary head (`decode_head.*`,
`auxiliary_head.*`); `norm` every LayerNorm-type layer whose MMSeg name says `norm`: all of
Swin's, MiT's but its stage-final norms (MMSeg's `layers.{i}.2`, so they decay under
SegFormer's keys too), none of the heads' BatchNorms (MMSeg's ConvModules call them `bn`); the
other keys the parameter names they spell (`relative_position_bias_table`;
`absolute_pos_embed` and `pos_block`, which no paper model has). tests/fidelity/test_training.py
checks the result against mmengine's constructor, with the source configs' `paramwise_cfg`, on
MMSeg's own names of every paper backbone's parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.config import Cell

# paramwise_cfg.custom_keys of the source configs: key -> (lr_mult, decay_mult)
CUSTOM_KEYS: dict[str, dict[str, tuple[float, float]]] = {
    "decay_all": {},
    "segformer": {"pos_block": (1.0, 0.0), "norm": (1.0, 0.0), "head": (10.0, 1.0)},
    "swin": {"absolute_pos_embed": (1.0, 0.0), "relative_position_bias_table": (1.0, 0.0),
             "norm": (1.0, 0.0)},
}
HEAD_MODULES = ("decoder", "head", "aux")  # MMSeg's decode_head (decoder + head), auxiliary_head
# LayerNorm-type layers (not BatchNorm: MMSeg's ConvModules call theirs `bn`)
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
# norms MMSeg names without "norm": MixVisionTransformer's stage-final norm `layers.{i}.2`
NORMS_NAMED_OTHERWISE = re.compile(r"^backbone\.body\.stages\.\d+\.layer_norm\.")


@dataclass(frozen=True)
class ParamInfo:
    """What the custom keys look at: the suite's name, its head role, its layer's kind."""

    name: str
    in_head: bool  # decode or auxiliary head
    in_norm: bool  # a LayerNorm-type layer's weight or bias that MMSeg names `*norm*`


def param_infos(model: nn.Module) -> list[tuple[ParamInfo, nn.Parameter]]:
    """Every learnable parameter with what the custom keys need to know about it."""
    norms = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES)
             for p in m.parameters(recurse=False)}
    return [(ParamInfo(name, name.split(".")[0] in HEAD_MODULES,
                       id(p) in norms and not NORMS_NAMED_OTHERWISE.match(name)), p)
            for name, p in model.named_parameters() if p.requires_grad]


def key_found(key: str, info: ParamInfo) -> bool:
    """Whether custom key `key` occurs in the MMSeg name of the parameter `info` describes."""
    if key == "head":
        return info.in_head
    if key == "norm":
        return info.in_norm
    return key in info.name


def multipliers(info: ParamInfo, keys: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """(lr_mult, decay_mult) of one parameter: the first key found, in mmengine's order
    (longer keys first, then alphabetical); (1, 1) when none is."""
    for key in sorted(sorted(keys), key=len, reverse=True):
        if key_found(key, info):
            return keys[key]
    return 1.0, 1.0


def param_groups(model: nn.Module, cell: Cell) -> list[dict]:
    """Optimizer groups for `cell.train.param_groups`; each carries its `base_lr`, from which
    benchmark/train/schedule.py sets the lr of every step."""
    t = cell.train
    infos = param_infos(model)
    if t.param_groups == "no_decay_1d":
        decay = [p for _, p in infos if p.ndim > 1]
        no_decay = [p for _, p in infos if p.ndim <= 1]
        return [{"params": decay, "weight_decay": t.weight_decay, "base_lr": t.lr},
                {"params": no_decay, "weight_decay": 0.0, "base_lr": t.lr}]
    if t.param_groups not in CUSTOM_KEYS:
        raise ValueError(f"unknown train.param_groups {t.param_groups!r}; use one of "
                         f"no_decay_1d, {', '.join(CUSTOM_KEYS)}")
    grouped: dict[tuple[float, float], list[nn.Parameter]] = {}
    for info, p in infos:
        grouped.setdefault(multipliers(info, CUSTOM_KEYS[t.param_groups]), []).append(p)
    return [{"params": params, "lr": t.lr * lr_mult, "base_lr": t.lr * lr_mult,
             "weight_decay": t.weight_decay * decay_mult}
            for (lr_mult, decay_mult), params in grouped.items()]


def build_optimizer(model: nn.Module, cell: Cell) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW (betas 0.9/0.999, eps 1e-8: the sources') over the groups."""
    groups = param_groups(model, cell)
    if cell.train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cell.train.lr, momentum=cell.train.momentum)
    return torch.optim.AdamW(groups, lr=cell.train.lr)
