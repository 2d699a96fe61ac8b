"""Learning-rate schedule: poly decay with an optional linear warm-up (mmseg's recipe)."""

from __future__ import annotations


def poly_warmup_factor(
    step: int, total: int, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 1e-6
) -> float:
    """Multiplier of the base lr at `step` (0-based) of `total` steps.

    Poly: (1 - step/total)^power. Warm-up: the factor rises linearly from `warmup_ratio` to the
    poly value over the first `warmup_iters` steps (mmcv's linear warm-up).
    """
    poly = (1.0 - min(step, total) / total) ** power
    if step < warmup_iters:
        k = (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
        return poly * (1.0 - k)
    return poly
