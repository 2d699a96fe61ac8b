"""Figure 6: where the time of one CPU training step goes (smoke grid, ProtoSeg cell).

The smoke grid's "ours" cell (MiT-B0 + all-MLP decoder, prototype head K=5, batches of 8
generated 64x64 images) is trained by the engine itself (`benchmark.engine.train_and_evaluate`)
under `torch.profiler`, a few steps skipped, then several steps recorded. The engine marks its
phases with `record_function` ranges (`train/data`: waiting for the next batch from the
DataLoader; `train/forward`, `train/loss`, `train/backward`, `train/optimizer`), and this script
wraps the prototype head's Sinkhorn and momentum update in two more ranges (benchmark-side,
the head's code is untouched). Each profiler step spans one whole loop iteration, so what no
range covers is the loop's own bookkeeping (learning rate, logging, progress bar, checkpoint
checks). Suite overhead = data loading + bookkeeping; target <= 5% of the step.

Second table: the step's wall time with 0, 1 and 2 DataLoader worker processes and with the
default (`train.num_workers=-1`: `benchmark.engine.loader_workers` decides), without the
profiler (median of the per-step times), against the same run whose training images were all
generated before it started: the difference is everything loading costs, including what worker
processes take away from the compute threads, which the profile of the main process cannot see.
The verdict of the default setting is the one that counts.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Iterator

import torch

from benchmarks.common import Report, Table, standalone, verdict

TARGET_SHARE = 5.0  # percent of the step
PHASES = [
    ("train/data", "data loading (wait for the batch)"),
    ("train/forward", "forward (model, without the prototype update)"),
    ("proto/update", "prototype update (Sinkhorn + momentum)"),
    ("train/loss", "loss (upsampling + cross-entropy + head terms)"),
    ("train/backward", "backward"),
    ("train/optimizer", "optimizer step"),
]
SUITE_PHASES = ("train/data", "other")


def smoke_cell(extra: list[str] | None = None) -> Any:
    """The smoke grid's "ours" (prototype) cell, evaluated on 8 images only."""
    from benchmark.config import apply_overrides
    from experiments.smoke import smoke

    cell = next(c for c in smoke().cells if c.tag == "ours")
    return apply_overrides(cell, ["data.val_images=8"] + list(extra or []))


@contextlib.contextmanager
def labelled_prototype_update() -> Iterator[None]:
    """Wrap the prototype head's Sinkhorn and momentum update in `proto/sinkhorn` and
    `proto/update` profiler ranges for the duration of the block."""
    import methods.heads.prototype as proto
    from torch.profiler import record_function

    sinkhorn, update = proto.sinkhorn_per_class, proto.PrototypeHead._momentum_update

    def sinkhorn_labelled(*args: Any, **kwargs: Any) -> Any:
        with record_function("proto/sinkhorn"):
            return sinkhorn(*args, **kwargs)

    def update_labelled(self: Any, *args: Any, **kwargs: Any) -> Any:
        with record_function("proto/update"):
            return update(self, *args, **kwargs)

    proto.sinkhorn_per_class = sinkhorn_labelled
    proto.PrototypeHead._momentum_update = update_labelled
    try:
        yield
    finally:
        proto.sinkhorn_per_class = sinkhorn
        proto.PrototypeHead._momentum_update = update


def phase_times(events: list[Any], steps: int) -> dict[str, float]:
    """Milliseconds per step of each labelled phase, of the whole step and of the rest.

    `proto/update` covers Sinkhorn + update (both run inside the forward and are taken out of
    it); `other` = step - all phases.
    """
    total: dict[str, float] = {}
    for e in events:
        name = e.name
        if name.startswith("ProfilerStep"):
            name = "step"
        elif name == "proto/sinkhorn":
            name = "proto/update"
        if name in ("step",) or name.startswith(("train/", "proto/")):
            total[name] = total.get(name, 0.0) + e.time_range.elapsed_us() / 1e3
    out = {name: total.get(name, 0.0) / steps for name, _ in PHASES}
    out["train/forward"] -= out["proto/update"]
    out["step"] = total.get("step", 0.0) / steps
    out["other"] = out["step"] - sum(out[name] for name, _ in PHASES)
    return out


def quiet() -> contextlib.AbstractContextManager:
    """The engine's progress lines are not part of the benchmark's output."""
    import io

    return contextlib.redirect_stdout(io.StringIO())


def profile_steps(cell: Any, skip: int, active: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile, schedule

    from benchmark.config import apply_overrides
    from benchmark.engine import train_and_evaluate

    cell = apply_overrides(cell, [f"train.iters={skip + 1 + active + 1}"])
    captured: dict[str, float] = {}

    def ready(prof: Any) -> None:
        captured.update(phase_times(list(prof.events()), active))

    with labelled_prototype_update(), quiet(), profile(
            activities=[ProfilerActivity.CPU],
            schedule=schedule(wait=skip, warmup=1, active=active, repeat=1),
            on_trace_ready=ready) as prof:
        train_and_evaluate(cell, seed=0, progress=False, on_step=lambda step: prof.step())
    if not captured:
        raise RuntimeError("the profiler recorded no step")
    return captured


class InMemory(torch.utils.data.Dataset):
    """Every item of a data set generated up front: serving one costs nothing."""

    def __init__(self, dataset: Any) -> None:
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Any) -> Any:
        return self.items[key[0] if isinstance(key, tuple) else key]


@contextlib.contextmanager
def pregenerated_training_data() -> Iterator[None]:
    """The engine's training split served from memory (the generated data set's items do not
    depend on the sample seed, so the batches are the same)."""
    import benchmark.engine as engine

    real = engine.build_dataset

    def build(spec: Any, split: str) -> Any:
        dataset = real(spec, split)
        return InMemory(dataset) if split == "train" else dataset

    engine.build_dataset = build
    try:
        yield
    finally:
        engine.build_dataset = real


def step_wall_ms(cell: Any, skip: int, steps: int, pregenerated: bool = False) -> float:
    """Median wall time per loop iteration (data wait included), no profiler."""
    from benchmark.config import apply_overrides
    from benchmark.engine import train_and_evaluate

    cell = apply_overrides(cell, [f"train.iters={skip + steps}"])
    if pregenerated and cell.data.name != "synthetic":
        raise ValueError("only the generated data set can be served from memory")
    stamps: list[float] = []
    with pregenerated_training_data() if pregenerated else contextlib.nullcontext(), quiet():
        train_and_evaluate(cell, seed=0, progress=False,
                           on_step=lambda step: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps[skip:], stamps[skip + 1:])]
    return statistics.median(gaps) * 1e3


def run(quick: bool = False, device: Any = None) -> Report:
    """Where the time of a CPU training step goes (torch.profiler), and DataLoader workers."""
    from benchmark.engine import loader_workers

    torch_device = "cpu"  # the smoke grid is a CPU grid
    skip, active = (1, 3) if quick else (5, 20)
    cell = smoke_cell()
    times = profile_steps(cell, skip, active)
    step = times["step"]
    rows = []
    for name, label in PHASES + [("other", "loop bookkeeping (lr, logging, progress bar)")]:
        share = 100 * times[name] / step
        kind = "suite" if name in SUITE_PHASES else "model"
        rows.append([label, kind, f"{times[name]:.1f}", f"{share:.1f}%"])
    suite = sum(times[n] for n in SUITE_PHASES) / step * 100
    rows.append(["**step (one loop iteration)**", "", f"{step:.1f}", "100%"])
    rows.append(["suite overhead seen by the main process (data wait + bookkeeping)", "suite",
                 f"{sum(times[n] for n in SUITE_PHASES):.1f}", f"{suite:.1f}%"])

    auto = loader_workers(-1)
    steps, rounds = (5, 1) if quick else (30, 2)
    settings: list[Any] = ["memory", 0, 1, 2, -1]
    walls: dict[Any, list[float]] = {s: [] for s in settings}
    for i in range(rounds):  # the order reversed every other round, as in `alternate`
        for setting in (settings if i % 2 == 0 else settings[::-1]):
            workers = 0 if setting == "memory" else setting
            walls[setting].append(step_wall_ms(
                smoke_cell([f"train.num_workers={workers}"]), 2, steps,
                pregenerated=setting == "memory"))
    wall = {s: statistics.median(v) for s, v in walls.items()}
    reference = wall["memory"]
    worker_rows = []
    for workers in (0, 1, 2, -1):
        extra = 100 * (wall[workers] - reference) / wall[workers]
        label = f"{workers} (default: auto = {auto})" if workers == -1 else str(workers)
        worker_rows.append([label, f"{wall[workers]:.1f}", f"{extra:.1f}%",
                            f"<= {TARGET_SHARE:.0f}%" if workers == -1 else "–",
                            verdict(extra, TARGET_SHARE) if workers == -1 else "–"])
    worker_rows.append(["0, data generated up front (no loading cost)", f"{reference:.1f}",
                        "0%", "–", "–"])
    workers_table = Table(["train.num_workers", "Step wall (ms)", "Suite overhead", "Target",
                           "Verdict"], worker_rows,
                          "Step wall time by DataLoader workers, against the same run with its "
                          "training data generated up front (no profiler)")
    notes = [f"{cell.row} of the smoke grid on the {torch_device}, {torch.get_num_threads()} "
             f"torch threads, default DataLoader setting (train.num_workers="
             f"{cell.train.num_workers} -> {loader_workers(cell.train.num_workers)} worker(s)); "
             f"{active} profiled steps after {skip + 1} skipped; ms per step",
             "model = the network's own compute; suite = the engine's data loading and loop "
             "bookkeeping (with workers, data loading is only the wait for a batch the workers "
             "have not finished yet)",
             f"worker table: median over {steps} steps after 2 skipped, each setting a fresh "
             f"run, {rounds} round(s) in alternating order; suite overhead = (step - step with the data generated up front) / step, "
             f"which also counts what worker processes take from the compute threads; "
             f"pin_memory is on only when batches go to a GPU, workers persist for the run"]
    return Report("profile_step", "6. Where the time goes: one CPU training step (smoke)",
                  [Table(["Phase", "Kind", "ms / step", "Share"], rows), workers_table], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("profile_step", run))
