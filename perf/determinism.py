"""Determinism: does a run repeat bit for bit, and does an interrupted run resume bit for bit,
with `train.deterministic` on and off, in fp32 and (GPU) bf16 autocast?

Each setting trains the smoke grid's prototype cell (momentum-updated prototypes: the state a
resume must restore) three times: twice uninterrupted, once stopped by SIGTERM mid-run and
resumed from its checkpoint; the table says whether the final weights (sha256) of the second
and the resumed run equal the first's, and the step time against deterministic off. On the CPU
every kernel the suite uses is deterministic, so both settings repeat; on a GPU, atomics in
some backward kernels (e.g. bilinear upsampling, scatter/index-add) make results differ from
run to run unless `train.deterministic` is on (benchmark/train/engine.py). Run by
perf/gpu_check.sh, not by perf.run.

Which ops of each step have no deterministic CUDA kernel, and that `train.deterministic`
swaps them on a GPU, is `perf/cuda_ops.py` (needs no GPU).
"""

from __future__ import annotations

import os
import signal
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from perf.common import Report, Table, kept_determinism_flags, standalone


def nondeterministic_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The op names of torch's "does not have a deterministic implementation" warnings, "cuBLAS"
    where torch or the engine said cuBLAS ran without its deterministic setting, and attention
    where torch said its memory-efficient kernel stays non-deterministic."""
    names = []
    for w in caught:
        text = str(w.message)
        name = None
        if "does not have a deterministic implementation" in text:
            name = text.split(" does not have")[0].strip()
        elif "CuBLAS" in text or "CUBLAS_WORKSPACE_CONFIG" in text:
            name = "cuBLAS (CUBLAS_WORKSPACE_CONFIG)"
        elif "Memory Efficient attention defaults to a non-deterministic" in text:
            name = "scaled_dot_product_attention (memory-efficient kernel)"
        if name is not None and name not in names:
            names.append(name)
    return names


def _cell(deterministic: bool, amp: bool, quick: bool) -> Any:
    from benchmark.overrides import apply_overrides
    from experiments.smoke import smoke

    size, iters = (32, 4) if quick else (64, 24)
    return apply_overrides(smoke().cells[-1], [
        f"train.iters={iters}", "train.batch_size=4", "data.train_images=16",
        "data.val_images=4", f"data.image_size={size}", "train.log_every=1",
        f"train.deterministic={str(deterministic).lower()}", f"train.amp={str(amp).lower()}",
        "train.num_workers=0"])  # 16 short runs: no loader processes to start and stop


def _resumed(cell: Any, stop_at: int) -> Any:
    """The run stopped by SIGTERM during step `stop_at`, then resumed from its checkpoint."""
    import benchmark.train.engine as loop
    from benchmark.train.engine import train_and_evaluate
    from benchmark.stops import Interrupted

    real = loop.set_lr
    sent = []

    def stop(optimizer: Any, c: Any, step: int) -> float:
        if step == stop_at:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(optimizer, c, step)

    with tempfile.TemporaryDirectory() as tmp:
        loop.set_lr = stop
        try:
            train_and_evaluate(cell, seed=0, progress=False, checkpoint_dir=Path(tmp))
        except Interrupted:
            if not sent:  # a stop from outside (gpu_check.sh's time limit): stop the figure
                raise
        finally:
            loop.set_lr = real
        return train_and_evaluate(cell, seed=0, progress=False, checkpoint_dir=Path(tmp))


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Repeat and resume bit for bit, deterministic on/off, fp32 and bf16 (GPU)."""
    from benchmark.train.engine import CUBLAS_WORKSPACE, train_and_evaluate

    # cuBLAS reads its workspace setting once per process, at its first use: set before any
    # row, so the deterministic rows have it (the off rows then share it; see the notes)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    gpu = torch.cuda.is_available()
    precisions = [False, True] if gpu else [False]
    rows = []
    with kept_determinism_flags():
        for amp in precisions:
            base_step = None
            for deterministic in (False, True):
                torch.use_deterministic_algorithms(False)
                cell = _cell(deterministic, amp, quick)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    first = train_and_evaluate(cell, seed=0, progress=False)
                second = train_and_evaluate(cell, seed=0, progress=False)
                resumed = _resumed(cell, cell.train.iters // 2)
                step = first.timings.step_s_median
                base_step = base_step or step
                rows.append(["bf16 autocast" if amp else "fp32",
                             "on" if deterministic else "off",
                             "yes" if second.weights_sha256 == first.weights_sha256 else "NO",
                             "yes" if resumed.weights_sha256 == first.weights_sha256 else "NO",
                             f"{step * 1e3:.1f}", f"{step / base_step:.2f}",
                             ", ".join(nondeterministic_warnings(caught)) or "none"])
    headers = ["Precision", "train.deterministic", "Repeat bitwise", "Resume bitwise",
               "Step (ms)", "vs off", "Ops that warned (no deterministic kernel)"]
    where = torch.cuda.get_device_name(0) if gpu else "CPU"
    notes = [f"{where}; the smoke grid's prototype cell (K=5), "
             f"{'4 steps at 32x32' if quick else '24 steps at 64x64'}, batch 4; resumed = "
             f"SIGTERM during the middle step, checkpoint, rerun; sha256 of the final weights",
             "bf16 rows only on a GPU (train.amp is off on the CPU)",
             f"one process, CUBLAS_WORKSPACE_CONFIG={os.environ['CUBLAS_WORKSPACE_CONFIG']} "
             "for every row (cuBLAS reads it once per process): off and on differ by "
             "deterministic algorithms, cuDNN's flags and the op swaps",
             "ops that warned: torch's warn-only alerts during the first run, one per op "
             "without a deterministic kernel (only CUDA kernels alert; with train.deterministic "
             "the swaps of methods/deterministic.py should leave none)"]
    return Report("determinism", "Determinism: repeat and resume, bit for bit",
                  [Table(headers, rows)], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("determinism", run))
