"""Figure 11: the cross-entropy of a CPU training step, torch's vs the engine's fused backward.

On the CPU the engine trains with `methods.cross_entropy.fused_cross_entropy_loss()`: the
backward turns the saved log-softmax into the gradient in place instead of allocating NLLLoss's
and log-softmax's gradients. Each row times forward + backward of one loss that the suite's
training steps compute (full-resolution logits, 10% of the pixels ignored), torch's
`F.cross_entropy` and the swap alternating (the fused loss where `fuses` says, on large logits
with many classes; torch's elsewhere), after checking that the losses are equal and the
gradients agree. Target: the swap no slower than torch's at any row where it fuses (ratio
<= 1.0).
Always on the CPU: on a GPU the engine keeps torch's (or methods/deterministic.py's).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from perf.common import Report, Table, alternate, standalone, swap_headers, swap_notes, swap_row

TARGET = 1.0
IGNORE = 255


class Shape(NamedTuple):
    label: str
    batch: int
    classes: int
    side: int


SHAPES = [
    Shape("FCN R101-D8 loss and auxiliary loss, 1x128x128 (peer figure)", 1, 150, 128),
    Shape("SegFormer loss, 2x256x256 (peer figure)", 2, 150, 256),
    Shape("SegFormer loss, 1x512x512 (peer figure)", 1, 150, 512),
    Shape("MiT-B0 loss, 4x256x256, C=150 (figure 1)", 4, 150, 256),
    Shape("MiT-B0 loss, 4x256x256, C=19 (figure 1)", 4, 19, 256),
    Shape("smoke grid loss, 8x64x64", 8, 11, 64),
]


def step_fns(shape: Shape, seed: int = 0
             ) -> tuple[dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]], float, str]:
    """(the two forward + backward calls, max |gradient difference| relative to the largest
    gradient, which loss the swap takes); raises if the losses differ."""
    from methods.cross_entropy import fuses, training_cross_entropy

    swap = training_cross_entropy(F.cross_entropy)  # what the engine's step runs (no block)

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.batch, shape.classes, shape.side, shape.side, generator=gen) * 3
    x.requires_grad_(True)
    target = torch.randint(0, shape.classes, (shape.batch, shape.side, shape.side),
                           generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.1] = IGNORE

    def torchs() -> tuple[torch.Tensor, torch.Tensor]:
        loss = F.cross_entropy(x, target, ignore_index=IGNORE)
        return loss.detach(), torch.autograd.grad(loss, x)[0]

    def swapped() -> tuple[torch.Tensor, torch.Tensor]:
        loss = swap(x, target, ignore_index=IGNORE)
        return loss.detach(), torch.autograd.grad(loss, x)[0]

    (ref, grad_ref), (ours, grad) = torchs(), swapped()
    if not torch.equal(ours, ref):
        raise AssertionError(f"{shape.label}: losses differ, {ours.item()} vs {ref.item()}")
    diff = ((grad - grad_ref).abs().max() / grad_ref.abs().max()).item()
    if diff > 1e-5:
        raise AssertionError(f"{shape.label}: gradients differ by {diff:.1e} (relative)")
    takes = "fused" if fuses(x) else "torch's (not fused)"
    return {"torch": torchs, "swap": swapped}, diff, takes


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Cross-entropy on the CPU: torch's vs the engine's swap (fused backward)."""
    from methods.cross_entropy import FUSED_MIN_CLASSES, FUSED_MIN_NUMEL

    warmup, repeats = (1, 3) if quick else (2, 10)
    shapes = [Shape("quick: 2x19x256x256", 2, 19, 256), SHAPES[-1]] if quick else SHAPES
    rows = []
    for shape in shapes:
        fns, diff, takes = step_fns(shape)
        t = alternate(fns, repeats=repeats, warmup=warmup)
        # below the threshold: torch's loss on both sides, no target to meet
        rows.append(swap_row(shape.label, f"{shape.classes}x{shape.side}²", t, takes, diff,
                             TARGET if takes == "fused" else None))
    headers = swap_headers("Loss", "Classes, side", "Swap takes")
    timing, engine = swap_notes("mean over labelled pixels, 10% ignored", repeats, warmup,
                                device, "the fused loss")
    notes = [timing,
             "losses checked equal (the same log_softmax and nll_loss); grad diff: max |swap "
             "gradient - torch gradient| / max |torch gradient| (float rounding); the swap "
             f"takes torch's loss below {FUSED_MIN_NUMEL:,} logits or {FUSED_MIN_CLASSES} "
             "classes (methods/cross_entropy.py): "
             "such a row times torch's loss twice, the swap's dispatch on one side, and has no "
             "target", engine]
    return Report("cross_entropy", "11. Cross-entropy on the CPU: torch's vs the swap",
                  [Table(headers, rows)], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("cross_entropy", run))
