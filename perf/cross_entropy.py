"""Figure 11: the cross-entropy of a CPU training step, torch's vs the engine's fused backward.

On the CPU the engine trains with `methods.cross_entropy.fused_cross_entropy_loss()`: the
backward turns the saved log-softmax into the gradient in place instead of allocating NLLLoss's
and log-softmax's gradients. Each row times forward + backward of one loss that the suite's
training steps compute (full-resolution logits, 10% of the pixels ignored), torch's
`F.cross_entropy` and the swap alternating (the fused loss from `FUSED_MIN_NUMEL` logits on,
torch's below), after checking that the losses are equal and the gradients agree. Target: the
swap no slower than torch's at any row (ratio <= 1.0).
Always on the CPU: on a GPU the engine keeps torch's (or methods/deterministic.py's).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from perf.common import Report, Table, alternate, paired_ratio, ratio_spread, standalone, verdict

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
    from methods.cross_entropy import FUSED_MIN_NUMEL, training_cross_entropy

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
    takes = "fused" if x.numel() >= FUSED_MIN_NUMEL else "torch's (small)"
    return {"torch": torchs, "swap": swapped}, diff, takes


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Cross-entropy on the CPU: torch's vs the engine's swap (fused backward)."""
    warmup, repeats = (1, 3) if quick else (2, 10)
    shapes = [Shape("quick: 2x19x128x128", 2, 19, 128), SHAPES[-1]] if quick else SHAPES
    rows = []
    for shape in shapes:
        fns, diff, takes = step_fns(shape)
        t = alternate(fns, repeats=repeats, warmup=warmup)
        ratio = paired_ratio(t["swap"], t["torch"])
        lo, hi = ratio_spread(t["swap"], t["torch"])
        fused = takes == "fused"  # else torch's loss on both sides: no target to meet
        rows.append([shape.label, f"{shape.classes}x{shape.side}²", t["torch"].ms(),
                     t["swap"].ms(), f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]", takes, f"{diff:.0e}",
                     f"<= {TARGET:.1f}" if fused else "–", verdict(ratio, TARGET) if fused
                     else "–"])
    headers = ["Loss", "Classes, side", "torch fwd+bwd (ms)", "swap fwd+bwd (ms)",
               "Ratio [IQR]", "Swap takes", "Grad diff (rel.)", "Target", "Verdict"]
    notes = [f"cpu, {torch.get_num_threads()} torch thread(s), float32, mean over labelled "
             f"pixels, 10% ignored; median of {repeats} alternated rounds after {warmup} "
             f"warm-up call(s); ratio = median over rounds of swap time / torch time",
             "losses checked equal (the same log_softmax and nll_loss); grad diff: max |swap "
             "gradient - torch gradient| / max |torch gradient| (float rounding); the swap "
             "takes torch's loss below FUSED_MIN_NUMEL logits (methods/cross_entropy.py): "
             "such a row times torch's loss twice, the swap's dispatch on one side, and has no "
             "target",
             ("measured on the CPU whatever --device says; " if device and device.type != "cpu"
              else "") + "the engine uses the fused loss for eager CPU training only "
             "(benchmark/train/engine.py: step_kernels)"]
    return Report("cross_entropy", "11. Cross-entropy on the CPU: torch's vs the swap",
                  [Table(headers, rows)], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("cross_entropy", run))
