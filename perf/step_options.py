"""Figure 1's second table: what `train.channels_last` and `train.compile` do to one training
step (benchmark/train/engine.py), each against the eager contiguous step of the same model,
weights and batch.

Rows: MiT-B0 + MLP-256 (a transformer: channels_last is not offered for it, compile is) and
ResNet-18-D8 + FCN-128 (a CNN: both), softmax head, C = 150. The first step's loss of each
option is compared with eager mode's before timing (tolerance 1e-4 relative: a compiled or NHWC
step sums in another order). Compile time is reported apart from the step time (inductor; the
first call). Quick mode and GPUs leave compile out: inductor needs minutes per model (2 CPU
cores; perf/gpu_check.sh's budget); `python -m perf.step_options` runs the table alone.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from perf.common import Table, alternate, fmt, paired_ratio, ratio_spread, sync
from perf.train_step import Setup, build, inputs, make_optimizer

LOSS_RTOL = 1e-4
SETUPS = (Setup("MiT-B0 + MLP-256, 256x256 x 2, C=150", "mit_b0", "mlp", 256, 256, 2, 150),
          Setup("ResNet-18-D8 + FCN-128, 256x256 x 2, C=150 (CNN)", "resnet18_d8", "fcn", 128,
                256, 2, 150, "sgd"))
QUICK_SETUPS = (Setup("quick: ResNet-18-D8 + FCN-32, 64x64 x 1, C=19", "resnet18_d8", "fcn",
                      32, 64, 1, 19, "sgd"),)


def options_for(setup: Setup, quick: bool, device: torch.device) -> dict[str, dict[str, bool]]:
    """The variants of a setup: eager, channels_last (CNNs), compile (full mode, CPU)."""
    out = {"eager": {}}
    if setup.decoder == "fcn":
        out["channels_last"] = {"channels_last": True}
    if not quick and device.type == "cpu":  # inductor: minutes a model (gpu_check's budget)
        out["compile"] = {"compile": True}
        if setup.decoder == "fcn":
            out["compile + channels_last"] = {"compile": True, "channels_last": True}
    return out


def variant(setup: Setup, flags: dict[str, bool], device: torch.device
            ) -> tuple[Callable[[], float], float, float]:
    """(step, first loss, seconds of the first call) of the setup under `flags`."""
    from benchmark.config import TrainSpec
    from benchmark.train.engine import prepare_model, step_kernels, training_step

    train = TrainSpec(**flags)
    model = prepare_model(build(setup, "softmax", device), train)
    optimizer = make_optimizer(model, setup)
    for group in optimizer.param_groups:  # the same step every call: timing, not training
        group["lr"] = 0.0
    images, labels = inputs(setup, device)
    if flags.get("channels_last"):
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()

    def step() -> float:  # with the kernels the engine trains with for these flags
        with step_kernels(train, device):
            return training_step(model, optimizer, images, labels, 255).loss.item()

    t0 = time.perf_counter()
    first = step()
    sync(device)
    return step, first, time.perf_counter() - t0


def options_table(quick: bool, device: torch.device) -> tuple[Table, list[str]]:
    """The table and its notes."""
    warmup, repeats = (1, 3) if quick else (2, 8)
    rows = []
    for setup in (QUICK_SETUPS if quick else SETUPS):
        fns: dict[str, Callable[[], Any]] = {}
        firsts: dict[str, tuple[float, float]] = {}
        for name, flags in options_for(setup, quick, device).items():
            torch._dynamo.reset()
            fns[name], loss, seconds = variant(setup, flags, device)
            firsts[name] = (loss, seconds)
        eager_loss = firsts["eager"][0]
        for name, (loss, _) in firsts.items():
            if abs(loss - eager_loss) > LOSS_RTOL * max(1.0, abs(eager_loss)):
                raise AssertionError(f"{setup.label} {name}: loss {loss} vs eager {eager_loss}")
        t = alternate(fns, repeats=repeats, warmup=warmup, device=device)
        for name in fns:
            ratio = paired_ratio(t[name], t["eager"])
            lo, hi = ratio_spread(t[name], t["eager"])
            rows.append([setup.label, name, t[name].ms(), f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]",
                         f"{abs(firsts[name][0] - eager_loss):.0e}",
                         fmt(firsts[name][1], 1) if "compile" in name else "–"])
    headers = ["Setup", "Option", "Step (ms)", "vs eager [IQR]", "First loss - eager's",
               "First call (s, compile)"]
    notes = [f"softmax head, fp32, {device}, {torch.get_num_threads()} torch thread(s); every "
             f"learning rate 0 (the same step each call); median of {repeats} alternated rounds "
             f"after {warmup} warm-up step(s); below 1 = faster than eager",
             f"compile: torch.compile(backend={_backend()!r}), the first call's seconds include "
             f"the compilation" + ("; left out in quick mode and on a GPU"
                                       if quick or device.type != "cpu" else "")]
    return Table(headers, rows, caption="Execution options (train.channels_last, "
                                        "train.compile) against the eager step"), notes


def _backend() -> str:
    from benchmark.train.engine import COMPILE_BACKEND

    return COMPILE_BACKEND


if __name__ == "__main__":
    from perf.common import Report, standalone

    def run(quick: bool = False, device: torch.device | None = None) -> Report:
        """Figure 1's execution options alone: channels_last and compile vs eager."""
        table, notes = options_table(quick, device or torch.device("cpu"))
        return Report("step_options", "1b. Training step: execution options", [table], notes)

    raise SystemExit(standalone("step_options", run))
