"""Learning-rate schedules as pure functions of the step (nothing to save for an exact resume).

Two styles (`train.lr_schedule`, docs/fidelity.md):

- `poly`: `min_lr + (base - min_lr) * (1 - step / iters) ** power`, times an optional linear
  warm-up factor that rises from `warmup_ratio` to 1 over the first `warmup_iters` steps
  (mmcv 0.x's PolyLrUpdaterHook; with no warm-up and `min_lr=0` the released ProtoSeg code's
  `lambda_poly`). The suite's behaviour before the paper recipes named their sources.
- `mmengine`: MMSegmentation 1.x's parameter schedulers, stepped once per iteration:
  `LinearLR(start_factor=warmup_ratio, begin=0, end=warmup_iters)` when there is a warm-up,
  then `PolyLR(eta_min=min_lr, power, begin=warmup_iters, end=iters)`. Both count
  `end - begin - 1` steps, so the warm-up reaches the full lr at its last step and the poly
  decay reaches `min_lr` at the last iteration.
"""

from __future__ import annotations

from typing import Any


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
