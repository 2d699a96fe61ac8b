"""Figure 1's second table: what `train.channels_last` and `train.compile` do to one training
step (benchmark/train/engine.py), and on a GPU `train.amp` (bf16) and `train.deterministic`,
each against the eager contiguous fp32 step of the same model, weights and batch.

Rows: MiT-B0 + MLP-256 (a transformer: channels_last is not offered for it, compile is) and
ResNet-18-D8 + FCN-128 (a CNN: both), softmax head, C = 150; on a GPU also HRNetV2-W48 at
Table 1's 512x512 x 2, where the cost of bf16 and of deterministic kernels is the one a run
pays. The first step's loss of each option is compared with eager mode's before timing
(tolerance 1e-4 relative: a compiled, NHWC or deterministic step sums in another order; 2e-2
for bf16). Compile time is reported apart from the step time (inductor; the first call). Quick
mode and GPUs leave compile out: inductor needs minutes per model (2 CPU cores;
perf/gpu_check.sh's budget); `python -m perf.step_options` runs the table alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any, Callable, Iterator

import torch

from perf.common import (Table, alternate, fmt, kept_determinism_flags, paired_ratio,
                         ratio_spread, sync)
from perf.train_step import Setup, build, inputs, make_optimizer

LOSS_RTOL = 1e-4
BF16_LOSS_RTOL = 2e-2  # bf16 autocast's first loss against the fp32 step's
SETUPS = (Setup("MiT-B0 + MLP-256, 256x256 x 2, C=150", "mit_b0", "mlp", 256, 256, 2, 150),
          Setup("ResNet-18-D8 + FCN-128, 256x256 x 2, C=150 (CNN)", "resnet18_d8", "fcn", 128,
                256, 2, 150, "sgd"))
GPU_SETUPS = (Setup("HRNetV2-W48, 512x512 x 2, C=150 (Table 1's step)", "hrnetv2_w48",
                    "hrnetv2", 720, 512, 2, 150, "sgd", gpu_only=True),)
QUICK_SETUPS = (Setup("quick: ResNet-18-D8 + FCN-32, 64x64 x 1, C=19", "resnet18_d8", "fcn",
                      32, 64, 1, 19, "sgd"),)


def setups_for(quick: bool, device: torch.device) -> tuple[Setup, ...]:
    """The rows' models: the quick one, or the CPU's two and, on a GPU, Table 1's HRNet too."""
    if quick:
        return QUICK_SETUPS
    return SETUPS + (GPU_SETUPS if device.type == "cuda" else ())


def options_for(setup: Setup, quick: bool, device: torch.device) -> dict[str, dict[str, bool]]:
    """The variants of a setup: eager, channels_last (CNNs), compile (full mode, CPU); on a GPU
    bf16 autocast and deterministic kernels, apart and together."""
    cnn = not setup.backbone.startswith("mit")
    out: dict[str, dict[str, bool]] = {"eager": {}}
    if cnn:
        out["channels_last"] = {"channels_last": True}
    if device.type == "cuda":
        out["bf16 autocast"] = {"amp": True}
        out["deterministic"] = {"deterministic": True}
        out["bf16 + deterministic"] = {"amp": True, "deterministic": True}
    if not quick and device.type == "cpu":  # inductor: minutes a model (gpu_check's budget)
        out["compile"] = {"compile": True}
        if cnn:
            out["compile + channels_last"] = {"compile": True, "channels_last": True}
    return out


@contextlib.contextmanager
def determinism(train: Any) -> Iterator[None]:
    """torch's deterministic-algorithm and cuDNN flags as the engine sets them for `train`
    (apply_determinism), restored afterwards: the variants alternate in one process."""
    from benchmark.train.engine import apply_determinism

    with kept_determinism_flags():
        apply_determinism(train)
        yield


def variant(setup: Setup, flags: dict[str, bool], device: torch.device
            ) -> tuple[Callable[[], float], float, float]:
    """(step, first loss, seconds of the first call) of the setup under `flags`."""
    from benchmark.config import TrainSpec
    from benchmark.train.engine import amp_autocast, prepare_model, step_kernels, training_step

    train = TrainSpec(**flags)
    model = prepare_model(build(setup, "softmax", device), train)
    optimizer = make_optimizer(model, setup)
    for group in optimizer.param_groups:  # the same step every call: timing, not training
        group["lr"] = 0.0
    images, labels = inputs(setup, device)
    if flags.get("channels_last"):
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()
    autocast = amp_autocast(train, device)  # bf16 on a GPU with train.amp
    set_flags = functools.partial(determinism, train) if device.type == "cuda" \
        else contextlib.nullcontext

    def step() -> float:  # with the kernels and flags the engine trains with for these flags
        with step_kernels(train, device), set_flags():
            return training_step(model, optimizer, images, labels, 255,
                                 autocast=autocast).loss.item()

    t0 = time.perf_counter()
    first = step()
    sync(device)
    return step, first, time.perf_counter() - t0


def options_table(quick: bool, device: torch.device) -> tuple[Table, list[str]]:
    """The table and its notes."""
    warmup, repeats = (1, 3) if quick else (2, 8)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG", "unset")  # as cuBLAS will read it
    rows, beyond = [], []
    for setup in setups_for(quick, device):
        fns: dict[str, Callable[[], Any]] = {}
        firsts: dict[str, tuple[float, float]] = {}
        options = options_for(setup, quick, device)
        for name, flags in options.items():
            torch._dynamo.reset()
            fns[name], loss, seconds = variant(setup, flags, device)
            firsts[name] = (loss, seconds)
        eager_loss = firsts["eager"][0]
        t = alternate(fns, repeats=repeats, warmup=warmup, device=device)
        for name in fns:
            ratio = paired_ratio(t[name], t["eager"])
            lo, hi = ratio_spread(t[name], t["eager"])
            diff, over = loss_difference(firsts[name][0], eager_loss,
                                         bool(options[name].get("amp")))
            if over:
                beyond.append(f"{setup.label}, {name}")
            rows.append([setup.label, name, t[name].ms(), f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]",
                         diff, "FAIL" if over else "PASS",
                         fmt(firsts[name][1], 1) if "compile" in name else "–"])
    headers = ["Setup", "Option", "Step (ms)", "vs eager [IQR]", "First loss - eager's",
               "Verdict (first loss)", "First call (s, compile)"]
    notes = [f"softmax head, fp32 unless bf16, {device}, {torch.get_num_threads()} torch "
             f"thread(s); every learning rate 0 (the same step each call); median of {repeats} "
             f"alternated rounds after {warmup} warm-up step(s); below 1 = faster than eager",
             f"compile: torch.compile(backend={_backend()!r}), the first call's seconds include "
             f"the compilation" + ("; left out in quick mode and on a GPU"
                                       if quick or device.type != "cpu" else "")]
    if device.type == "cuda":
        notes.append("GPU: bf16 = torch.autocast(bfloat16) as train.amp sets it; deterministic "
                     "= torch's deterministic algorithms, cuDNN deterministic and the op swaps "
                     "of methods/deterministic.py, as train.deterministic sets them; every row "
                     f"with cudnn.benchmark off and CUBLAS_WORKSPACE_CONFIG={cublas}")
    if beyond:
        notes.append("first loss beyond its tolerance (timed anyway, a FAIL verdict: rounding "
                      f"or a bug to look into before trusting the row): {'; '.join(beyond)}")
    return Table(headers, rows, caption="Execution options (train.channels_last, "
                                        "train.compile; on a GPU train.amp, "
                                        "train.deterministic) against the eager step"), notes


def loss_difference(loss: float, eager_loss: float, bf16: bool) -> tuple[str, bool]:
    """(|first loss - eager's| for the table, whether it exceeds the option's tolerance:
    relative, 1e-4; 2e-2 for bf16); the row is timed and shown either way."""
    tol = BF16_LOSS_RTOL if bf16 else LOSS_RTOL
    diff = abs(loss - eager_loss)
    over = diff > tol * max(1.0, abs(eager_loss))
    return f"{diff:.0e}" + (f" (over {tol:.0e})" if over else ""), over


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
