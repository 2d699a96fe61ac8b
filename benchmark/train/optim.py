"""The optimisation recipe: optimizer and parameter groups, the learning-rate schedule, the loss."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.config import Cell


# ----------------------------------------------------------------------------- optimizer and groups


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
    benchmark/train/optim.py sets the lr of every step."""
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


def build_optimizer(model: nn.Module, cell: Cell,
                    device: torch.device | str | None = None) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW (betas 0.9/0.999, eps 1e-8: the sources') over the groups, for
    parameters that train on `device` (default: where they are now). SGD on the CPU always runs
    torch's fused kernel: one pass over each tensor, the default for-loop's update bit for bit
    but in each tensor's last numel % 16 elements (docs/fidelity.md); `train.fused_optimizer`
    takes the fused kernels everywhere, an update equal to float rounding (perf/README.md)."""
    groups = param_groups(model, cell)
    on_cpu = torch.device(device or next(model.parameters()).device).type == "cpu"
    if cell.train.optimizer == "sgd":
        fused = cell.train.fused_optimizer or on_cpu
        return torch.optim.SGD(groups, lr=cell.train.lr, momentum=cell.train.momentum,
                               fused=fused or None)
    return torch.optim.AdamW(groups, lr=cell.train.lr, fused=cell.train.fused_optimizer or None)


# --------------------------------------------------------------------------- learning-rate schedule


def poly_warmup_factor(
    step: int, total: int, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 1e-6
) -> float:
    """Multiplier of the base lr at `step` (0-based) of `total` steps (`poly` style, min_lr 0).

    Poly: (1 - step/total)^power. Warm-up: the factor rises linearly from `warmup_ratio` to the
    poly value over the first `warmup_iters` steps (mmcv's linear warm-up).
    """
    poly = (1.0 - min(step, total) / total) ** power
    if step < warmup_iters:
        k = (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
        return poly * (1.0 - k)
    return poly


def poly_lr(step: int, base_lr: float, iters: int, power: float = 0.9, min_lr: float = 0.0,
            warmup_iters: int = 0, warmup_ratio: float = 1e-6) -> float:
    """The `poly` style at `step` for a group whose base lr is `base_lr`."""
    if min_lr == 0.0:  # the exact expression runs recorded before min_lr existed used
        return base_lr * poly_warmup_factor(step, iters, power, warmup_iters, warmup_ratio)
    regular = min_lr + (base_lr - min_lr) * (1.0 - min(step, iters) / iters) ** power
    if step < warmup_iters:
        return regular * (1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio))
    return regular


def mmengine_lr(step: int, base_lr: float, iters: int, power: float = 0.9, min_lr: float = 0.0,
                warmup_iters: int = 0, warmup_ratio: float = 1e-6) -> float:
    """The `mmengine` style at `step`: closed forms of LinearLR then PolyLR (see module doc)."""
    if step < warmup_iters:
        span = warmup_iters - 1  # LinearLR's total_iters
        done = 0.0 if span == 0 else min(step, span) / span  # span 0: only step 0, the start
        return base_lr * (warmup_ratio + (1.0 - warmup_ratio) * done)
    span = iters - warmup_iters - 1  # PolyLR's total_iters
    k = min(step - warmup_iters, span)
    decay = 1.0 if span <= 0 else (1.0 - k / span) ** power
    return min_lr + (base_lr - min_lr) * decay


SCHEDULES = {"poly": poly_lr, "mmengine": mmengine_lr}


def lr_at(step: int, base_lr: float, train: Any) -> float:
    """Learning rate at `step` of a parameter group with base lr `base_lr` under the TrainSpec
    `train` (its `lr_schedule`, `iters`, `poly_power`, `min_lr` and warm-up)."""
    schedule = SCHEDULES[train.lr_schedule]
    return schedule(step, base_lr, train.iters, train.poly_power, train.min_lr,
                    train.warmup_iters, train.warmup_ratio)


def apply_lr(optimizer: Any, train: Any, step: int) -> float:
    """Set every parameter group's lr for `step` from its `base_lr` (benchmark/train/optim.py
    stores it; the recipe's lr otherwise); returns the lr of a group at the recipe's lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, group.get("base_lr", train.lr), train)
    return lr_at(step, train.lr, train)


# --------------------------------------------------------------------------------------------- loss


AUX_LOSS = "aux"  # the auxiliary head's term in HeadOutput.losses (methods/segmentor.py)
# `train.ce_weights`: per-class weights of the cross-entropy. protoseg_cityscapes: the released
# ProtoSeg Cityscapes configs' `ce_weight` (configs/cityscapes/H_48_D_4_proto.json), train ids.
CLASS_WEIGHTS: dict[str, tuple[float, ...] | None] = {
    "none": None,
    "protoseg_cityscapes": (0.8373, 0.9180, 0.8660, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489,
                            0.8786, 1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955,
                            1.0865, 1.1529, 1.0507),
}


def seg_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int,
                      average: str = "labelled", class_weights: str = "none") -> Tensor:
    """Cross-entropy of (B, C, H, W) `logits` against (B, H, W) `labels`, averaged per `average`.

    With `class_weights`, `labelled` is torch's weighted mean (sum of w_y * loss / sum of w_y,
    the released code's `nn.CrossEntropyLoss(weight)`), `all_pixels` the weighted sum / pixels."""
    values = CLASS_WEIGHTS[class_weights]
    weight = None if values is None else logits.new_tensor(values)
    if weight is not None and weight.numel() != logits.shape[1]:
        raise ValueError(f"train.ce_weights={class_weights} has {weight.numel()} classes, the "
                         f"model {logits.shape[1]}; use it only with its data set")
    if average == "labelled":
        return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)
    if average != "all_pixels":
        raise ValueError(f"unknown train.ce_average {average!r}; use labelled or all_pixels")
    total = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index,
                            reduction="sum")
    return total / labels.numel()


def labelled_share(labels: Tensor, ignore_index: int) -> Tensor:
    """Share of pixels whose label is not `ignore_index` (0-dim float tensor)."""
    return (labels != ignore_index).float().mean()


def rescale_aux_loss(losses: dict[str, Tensor], labels: Tensor, ignore_index: int,
                     average: str = "labelled") -> None:
    """Bring the auxiliary loss (a labelled-pixel mean at label resolution, methods/segmentor.py)
    to `average` in place: `all_pixels` multiplies it by the labelled share of `labels`."""
    if average == "all_pixels" and AUX_LOSS in losses:
        losses[AUX_LOSS] = losses[AUX_LOSS] * labelled_share(labels, ignore_index)
