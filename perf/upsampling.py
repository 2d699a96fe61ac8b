"""Figure 10: bilinear upsampling in a CPU training step, torch's kernel vs the engine's swap.

On the CPU the engine trains with `methods.interpolation.matmul_backward_interpolation()`:
upsampling whose input needs a gradient runs its backward as two matmuls with interpolation
matrices, and its forward too for input sides up to `MATMUL_FORWARD_MAX_SIDE`. Each row times
forward + backward of one upsampling that the suite's training steps run (the loss's logits,
the SegFormer decoder's features, the smoke grid's), torch's `F.interpolate` and the swap
alternating, and checks the swap's output and gradient against torch's first. Target: the swap
no slower than torch's kernel at any row (ratio <= 1.0). Always on the CPU: on a GPU the engine
keeps torch's kernels (or, with `train.deterministic`, methods/deterministic.py's).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from perf.common import Report, Table, alternate, standalone, swap_headers, swap_notes, swap_row

TARGET = 1.0


class Shape(NamedTuple):
    label: str
    batch: int
    channels: int
    side_in: int
    side_out: int


SHAPES = [
    Shape("FCN R101-D8 loss, 150 classes, 1x128x128 (peer figure)", 1, 150, 16, 128),
    Shape("SegFormer decoder, stage 4 to 1/4, 2x256x256", 2, 256, 8, 64),
    Shape("SegFormer decoder, stage 2 to 1/4, 2x256x256", 2, 256, 32, 64),
    Shape("SegFormer loss, 150 classes, 2x256x256 (figure 1, peer)", 2, 150, 64, 256),
    Shape("SegFormer decoder, stage 3 to 1/4, 1x512x512", 1, 256, 32, 128),
    Shape("SegFormer loss, 150 classes, 1x512x512 (peer figure)", 1, 150, 128, 512),
    Shape("smoke grid loss, 11 classes, 8x64x64", 8, 11, 16, 64),
]


def step_fns(shape: Shape, seed: int = 0) -> tuple[dict[str, object], float, str]:
    """(the two forward + backward calls, max |gradient difference| relative to the largest
    gradient, which forward the swap takes)."""
    from methods.interpolation import MATMUL_FORWARD_MAX_SIDE, matmul_backward_interpolation

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.batch, shape.channels, shape.side_in, shape.side_in, generator=gen)
    x.requires_grad_(True)
    size = (shape.side_out, shape.side_out)
    grad = torch.randn(shape.batch, shape.channels, *size, generator=gen)

    def torch_kernel() -> torch.Tensor:
        out = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return torch.autograd.grad(out, x, grad)[0]

    def swapped() -> torch.Tensor:
        with matmul_backward_interpolation():
            out = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return torch.autograd.grad(out, x, grad)[0]

    ref, ours = torch_kernel(), swapped()
    diff = ((ours - ref).abs().max() / ref.abs().max()).item()
    if diff > 1e-5:
        raise AssertionError(f"{shape.label}: gradients differ by {diff:.1e} (relative)")
    forward = "matmuls" if shape.side_in <= MATMUL_FORWARD_MAX_SIDE else "torch's kernel"
    return {"torch": torch_kernel, "swap": swapped}, diff, forward


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Upsampling on the CPU: torch's kernel vs the engine's matmul-backward swap."""
    warmup, repeats = (1, 3) if quick else (2, 10)
    shapes = SHAPES[:2] + SHAPES[-1:] if quick else SHAPES
    rows = []
    for shape in shapes:
        fns, diff, forward = step_fns(shape)
        t = alternate(fns, repeats=repeats, warmup=warmup)
        rows.append(swap_row(shape.label,
                             f"{shape.channels}x{shape.side_in}² -> {shape.side_out}²", t,
                             forward, diff, TARGET))
    headers = swap_headers("Upsampling", "Channels, sides", "Swap's forward")
    timing, engine = swap_notes("bilinear align_corners=False", repeats, warmup, device,
                                "the swap")
    notes = [timing, "grad diff: max |swap gradient - torch gradient| / max |torch gradient| "
             "(float rounding: another order of the same sums)", engine]
    return Report("upsampling", "10. Bilinear upsampling on the CPU: torch's kernel vs the swap",
                  [Table(headers, rows)], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("upsampling", run))
