"""Which ops of each Table 1 training step have no deterministic CUDA kernel, without and with
`train.deterministic`'s swaps (methods/deterministic.py). Needs no GPU.

One training step of each cell (the smoke grid in quick mode) runs on the CPU at 32x32 under a
TorchDispatchMode that records every aten op, forward to optimizer step; the table lists those
on PyTorch's list of ops that `torch.use_deterministic_algorithms` cannot make deterministic on
CUDA (they raise, or warn in warn-only mode). Left in a step, they make a GPU run differ from
run to run whatever the flags; the second column is the same step as the engine runs it on a GPU
with `train.deterministic`, where it should say "none".
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from perf.common import Report, Table, standalone

# torch 2.14's list of ops without a deterministic CUDA kernel (the RuntimeError list of
# torch.use_deterministic_algorithms' docstring), by the aten name a dispatch mode sees.
NO_DETERMINISTIC_CUDA_KERNEL = {
    "upsample_linear1d_backward": "interpolate (linear), backward",
    "upsample_bilinear2d_backward": "interpolate (bilinear), backward",
    "upsample_bicubic2d_backward": "interpolate (bicubic), backward",
    "upsample_trilinear3d_backward": "interpolate (trilinear), backward",
    "avg_pool3d_backward": "AvgPool3d, backward",
    "_adaptive_avg_pool2d_backward": "AdaptiveAvgPool2d, backward",
    "_adaptive_avg_pool3d_backward": "AdaptiveAvgPool3d, backward",
    "adaptive_max_pool2d_backward": "AdaptiveMaxPool2d, backward",
    "fractional_max_pool2d_backward": "FractionalMaxPool2d, backward",
    "fractional_max_pool3d_backward": "FractionalMaxPool3d, backward",
    "max_unpool2d": "MaxUnpool2d", "max_unpool3d": "MaxUnpool3d",
    "reflection_pad1d_backward": "ReflectionPad1d, backward",
    "reflection_pad2d_backward": "ReflectionPad2d, backward",
    "reflection_pad3d_backward": "ReflectionPad3d, backward",
    "nll_loss_forward": "NLLLoss (cross-entropy), mean or sum",
    "nll_loss2d_forward": "NLLLoss (cross-entropy), mean or sum",
    "_ctc_loss_backward": "CTCLoss, backward",
    "histc": "histc",
    "grid_sampler_2d_backward": "grid_sample, backward",
    # not on that list: fused attention, whose CUDA backward (the memory-efficient kernel) is
    # not deterministic in warn-only mode, the engine's (torch warns once). On the CPU the
    # dispatch mode sees it as the CPU flash kernel's backward
    "_scaled_dot_product_flash_attention_for_cpu_backward":
        "scaled_dot_product_attention (fused), backward",
}
NLL_REDUCTION_ARG = 3  # nll_loss(2d)_forward(self, target, weight, reduction, ignore_index)


class _OpLog(TorchDispatchMode):
    """Counts the aten ops (forward and backward) run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        name = func._overloadpacket.__name__
        if not (name.startswith("nll_loss") and args[NLL_REDUCTION_ARG] == 0):  # 0: none
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def nondeterministic_cuda_ops(cell: Any, size: int = 32, batch: int = 2,
                              swapped: bool = False) -> dict[str, int]:
    """The ops of one training step of `cell` (forward, loss, backward, optimizer step; on the
    CPU, `size` x `size` inputs) that have no deterministic CUDA kernel, with their counts;
    `swapped`: with `methods.deterministic.deterministic_ops()`, as the engine runs a GPU step
    under `train.deterministic`."""
    from benchmark.datasets import dataset_info
    from benchmark.train.engine import training_step
    from benchmark.train.optim import build_optimizer
    from methods import build_model
    from methods.deterministic import deterministic_ops

    info = dataset_info(cell.data)
    torch.manual_seed(0)
    model = build_model(cell.model, info.num_classes, info.ignore_index).train()
    optimizer = build_optimizer(model, cell)
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, info.num_classes, (batch, size, size))
    labels[:, :4] = info.ignore_index
    with deterministic_ops() if swapped else contextlib.nullcontext(), _OpLog() as log:
        training_step(model, optimizer, images, labels, info.ignore_index,
                      ce_average=cell.train.ce_average, ce_weights=cell.train.ce_weights)
    return {n: c for n, c in sorted(log.counts.items()) if n in NO_DETERMINISTIC_CUDA_KERNEL}


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Ops without a deterministic CUDA kernel in each Table 1 step, without and with the swaps."""
    from experiments import get_grid

    def listed(ops: dict[str, int]) -> str:
        return "; ".join(f"{NO_DETERMINISTIC_CUDA_KERNEL[n]} ({n}) x{c}"
                         for n, c in ops.items()) or "none"

    rows = []
    for cell in get_grid("smoke" if quick else "table1").cells:
        swapped = nondeterministic_cuda_ops(cell, swapped=True)
        rows.append([f"{cell.column or cell.model.backbone}: {cell.row}",
                     listed(nondeterministic_cuda_ops(cell)), listed(swapped),
                     "PASS" if not swapped else "FAIL"])
    table = Table(["Cell", "Ops of one training step without a deterministic CUDA kernel",
                   "With train.deterministic on a GPU (methods/deterministic.py)", "Verdict"],
                  rows)
    notes = ["ops recorded on the CPU (TorchDispatchMode), one training step per cell at 32x32 "
             "(which ops run does not depend on the size), forward to optimizer step; matched "
             "against torch 2.14's list in torch.use_deterministic_algorithms' docstring and "
             "fused attention's backward (the MiT backbones'; torch only warns); NLLLoss "
             "counts only with reduction mean or sum (reduction='none' has no atomics)",
             "target: none left with train.deterministic"]
    return Report("cuda_ops", "Ops without a deterministic CUDA kernel, per Table 1 step",
                  [table], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("cuda_ops", run))
