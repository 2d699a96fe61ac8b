"""Figure 1: one training step, prototype head vs softmax head, same backbone, decoder, batch.

The step is the engine's own (`benchmark.train.engine.training_step`: forward, upsampled
cross-entropy + the head's PPC/PPD, backward, optimizer step; for ProtoSeg also Sinkhorn and
the momentum update). Both models are built from the same seed, so they differ only in the
head: a 1x1 convolution (C x D) vs K = 10 prototypes per class in the grids' "Ours"
convention (`projection=none`, docs/method.md#backbones-and-parameter-counts). Targets: time ratio <= 1.10 on the CPU,
<= 1.05 on a GPU; peak memory ratio <= 1.10.

"FLOP ratio" is the ratio of matmul/convolution FLOPs of the two steps (forward and backward,
torch.utils.flop_counter): the prototype head scores every pixel against C*K prototypes where
the softmax head has C weight vectors, so K times the classifier's multiply-adds are inherent
to the method. A time ratio near the FLOP ratio means the implementation adds nothing beyond
that arithmetic; a FLOP ratio above the target means no implementation can meet it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from perf.common import (
    Report,
    Table,
    alternate,
    blocky_labels,
    fmt,
    paired_ratio,
    ratio_spread,
    standalone,
    verdict,
)
from perf.measure import count_flops, memory_note, peak_memory, training_state

IGNORE = 255
NUM_PROTOTYPES = 10


@dataclass(frozen=True)
class Setup:
    """One side-by-side comparison: the shared network and input, and the targets."""

    label: str
    backbone: str
    decoder: str
    channels: int
    size: int
    batch: int
    num_classes: int
    optimizer: str = "adamw"  # the recipe family: adamw (transformers) | sgd (CNNs)
    gpu_only: bool = False


CPU_SETUPS = (
    Setup("MiT-B0 + MLP-256, 256x256 x 4, C=19 (Cityscapes)", "mit_b0", "mlp", 256, 256, 4, 19),
    Setup("MiT-B0 + MLP-256, 256x256 x 4, C=150 (ADE20K)", "mit_b0", "mlp", 256, 256, 4, 150),
)
GPU_SETUPS = (
    Setup("HRNetV2-W48, 512x512 x 2, C=150 (ADE20K)", "hrnetv2_w48", "hrnetv2", 720, 512, 2,
          150, "sgd", gpu_only=True),
    Setup("HRNetV2-W48, 512x512 x 2, C=19 (Cityscapes)", "hrnetv2_w48", "hrnetv2", 720, 512, 2,
          19, "sgd", gpu_only=True),
)
QUICK_SETUPS = (
    Setup("quick: MiT-B0 + MLP-64, 64x64 x 2, C=19", "mit_b0", "mlp", 64, 64, 2, 19),
)
TIME_TARGET = {"cpu": 1.10, "cuda": 1.05}
MEMORY_TARGET = 1.10


def setups_for(device: torch.device, quick: bool) -> tuple[list[Setup], list[str]]:
    """The setups to run on `device`, and a note for each one skipped."""
    if quick:
        return list(QUICK_SETUPS), []
    if device.type == "cuda":
        return list(CPU_SETUPS) + list(GPU_SETUPS), []
    return list(CPU_SETUPS), [f"{s.label}: skipped, paper-scale rows run only on a GPU "
                              f"(no CUDA device here)" for s in GPU_SETUPS]


def model_spec(setup: Setup, head: str) -> Any:
    from benchmark.config import HeadSpec, ModelSpec

    head_spec = (HeadSpec(name="prototype", num_prototypes=NUM_PROTOTYPES, projection="none")
                 if head == "prototype" else HeadSpec(name=head))
    return ModelSpec(backbone=setup.backbone, decoder=setup.decoder,
                     decoder_channels=setup.channels, head=head_spec)


def build(setup: Setup, head: str, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """The model with `head`; the same seed gives both heads the same backbone and decoder."""
    from methods import build_model

    torch.manual_seed(seed)
    return build_model(model_spec(setup, head), setup.num_classes, IGNORE).to(device)


def make_optimizer(model: torch.nn.Module, setup: Setup) -> torch.optim.Optimizer:
    """The engine's optimizer (no weight decay on norms and biases) for the recipe family."""
    from benchmark.config import Cell, TrainSpec
    from benchmark.train.optim import build_optimizer

    train = (TrainSpec(optimizer="adamw", lr=6e-5, weight_decay=0.01) if setup.optimizer == "adamw"
             else TrainSpec(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4))
    return build_optimizer(model, Cell(grid="perf", row=setup.label, train=train))


def inputs(setup: Setup, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(setup.batch, 3, setup.size, setup.size, generator=gen).to(device)
    labels = blocky_labels(setup.batch, setup.size, setup.size, setup.num_classes, IGNORE, device)
    return images, labels


def step_fn(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
            labels: torch.Tensor):
    from benchmark.config import TrainSpec
    from benchmark.train.engine import step_kernels, training_step

    model.train()

    def step() -> None:  # with the kernels the engine trains with on this device
        with step_kernels(TrainSpec(), images.device):
            training_step(model, optimizer, images, labels, IGNORE)

    def arithmetic() -> None:  # torch's kernels: the FLOPs of the model, not of the CPU swap's
        training_step(model, optimizer, images, labels, IGNORE)  # interpolation matrices

    step.state = lambda: training_state(model, optimizer, images, labels)  # type: ignore[attr-defined]
    step.arithmetic = arithmetic  # type: ignore[attr-defined]
    return step


def measure(setup: Setup, device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    images, labels = inputs(setup, device)
    steps = {}
    for head in ("softmax", "prototype"):
        model = build(setup, head, device)
        steps[head] = step_fn(model, make_optimizer(model, setup), images, labels)
    times = alternate(steps, repeats=repeats, warmup=warmup, device=device)
    flops = {h: count_flops(fn.arithmetic) for h, fn in steps.items()}
    peaks = {h: peak_memory(fn, device, fn.state) for h, fn in steps.items()}
    return {"times": times, "flops": flops, "peaks": peaks}


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Training step: prototype vs softmax head (time and peak memory ratios)."""
    device = device or torch.device("cpu")
    setups, skipped = setups_for(device, quick)
    warmup, repeats = (1, 3) if quick else (2, 8)
    rows, methods = [], set()
    for setup in setups:
        if setup.gpu_only and device.type != "cuda":
            continue
        m = measure(setup, device, warmup, repeats)
        t, f, p = m["times"], m["flops"], m["peaks"]
        ratio = paired_ratio(t["prototype"], t["softmax"])
        low, high = ratio_spread(t["prototype"], t["softmax"])
        mem_ratio = p["prototype"].bytes / p["softmax"].bytes
        flop_ratio = f["prototype"] / f["softmax"]
        target = TIME_TARGET["cuda" if device.type == "cuda" else "cpu"]
        methods.add(p["softmax"].method)
        rows.append([
            setup.label, str(device), t["softmax"].ms(), t["prototype"].ms(),
            f"{ratio:.3f} [{low:.2f}, {high:.2f}]", f"<= {target:.2f}", fmt(flop_ratio, 3),
            fmt(ratio / flop_ratio, 3), verdict(ratio, target),
            p["softmax"].gib(), p["prototype"].gib(), fmt(mem_ratio, 3),
            f"<= {MEMORY_TARGET:.2f}", verdict(mem_ratio, MEMORY_TARGET),
        ])
    headers = ["Setup", "Device", "Softmax step (ms)", "Prototype step (ms)",
               "Time ratio [IQR]", "Target", "FLOP ratio", "Time / FLOP ratio", "Verdict (time)",
               "Peak mem softmax", "Peak mem prototype", "Mem ratio", "Target (mem)",
               "Verdict (mem)"]
    notes = [f"median of {repeats} alternated rounds after {warmup} warm-up step(s) each; ratio "
             f"= median over rounds of prototype/softmax, [IQR] its spread",
             f"prototype head: K={NUM_PROTOTYPES}, projection=none (the grids' \"Ours\"), "
             f"PPC + PPD + Sinkhorn + momentum update every step; fp32",
             "FLOP ratio: matmul/conv FLOPs of the prototype step over the softmax step "
             "(forward + backward; counted with torch's upsampling kernel, whose arithmetic the "
             "CPU's matmul swap only reorders); the part above 1 is the C*K-vs-C classifier arithmetic the "
             "method needs, so a FLOP ratio above the target is a limit of the method, not of "
             "the code; Time / FLOP ratio near 1 = the prototype step costs what its extra "
             "arithmetic costs and nothing more",
             "steps timed with the kernels the engine trains with on this device (CPU: bilinear "
             "upsampling with a matmul backward and the cross-entropy's in-place backward, "
             "benchmark/train/engine.py step_kernels); both heads upsample and take the loss "
             "the same way, so the swaps lower both steps by about the same ms"]
    notes += [memory_note(m) for m in sorted(methods)]
    notes += skipped
    from perf.step_options import options_table  # imports this module: here, not at the top

    options, option_notes = options_table(quick, device)
    return Report("train_step", "1. Training step: prototype vs softmax head",
                  [Table(headers, rows), options], notes + option_notes)


if __name__ == "__main__":
    raise SystemExit(standalone("train_step", run))
