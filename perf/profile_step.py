"""Figure 6: where the time of one CPU training step goes (smoke grid, ProtoSeg cell).

The smoke grid's "ours" cell (MiT-B0 + all-MLP decoder, prototype head K=5, batches of 8
generated 64x64 images) is trained by the engine itself (`benchmark.train.engine.train_and_evaluate`)
under `torch.profiler`, a few steps skipped, then several steps recorded. The engine marks its
phases with `record_function` ranges (`train/data`: waiting for the next batch from the
DataLoader; `train/forward`, `train/loss`, `train/backward`, `train/optimizer`), and this script
wraps the prototype head's Sinkhorn and momentum update in two more ranges (benchmark-side,
the head's code is untouched). Each profiler step spans one whole loop iteration, so what no
range covers is the loop's own bookkeeping (learning rate, logging, progress bar, checkpoint
checks). Suite overhead = data loading + bookkeeping; target <= 5% of the step.

Second table: the step's wall time with 0, 1 and 2 DataLoader worker processes and with the
default (`train.num_workers=-1`: `benchmark.train.data.loader_workers` decides), without the
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

from perf.common import Report, Table, standalone, verdict

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
    from benchmark.overrides import apply_overrides
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

    from benchmark.overrides import apply_overrides
    from benchmark.train.engine import train_and_evaluate

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
    import benchmark.train.engine as engine

    real = engine.build_dataset

    def build(spec: Any, split: str) -> Any:
        dataset = real(spec, split)
        return InMemory(dataset) if split == "train" else dataset

    engine.build_dataset = build
    try:
        yield
    finally:
        engine.build_dataset = real


@contextlib.contextmanager
def timed_batches(waits: list[float]) -> Iterator[None]:
    """Record how long the training loop waits for each batch (ms), in the main process
    (the loop, benchmark/train/engine.py, is where the batches are fetched)."""
    import benchmark.train.engine as loop

    real = loop.labelled_batches

    def timed(loader: Any) -> Iterator[Any]:
        batches = real(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            waits.append((time.perf_counter() - t0) * 1e3)
            yield batch

    loop.labelled_batches = timed
    try:
        yield
    finally:
        loop.labelled_batches = real


def step_times_ms(cell: Any, steps: int, pregenerated: bool = False
                  ) -> tuple[list[float], list[float]]:
    """(wall time of each loop iteration after the first, the batch wait inside each), ms;
    no profiler."""
    from benchmark.overrides import apply_overrides
    from benchmark.train.engine import train_and_evaluate

    cell = apply_overrides(cell, [f"train.iters={steps + 1}"])
    if pregenerated and cell.data.name != "synthetic":
        raise ValueError("only the generated data set can be served from memory")
    stamps: list[float] = []
    waits: list[float] = []
    with pregenerated_training_data() if pregenerated else contextlib.nullcontext(), quiet(), \
            timed_batches(waits):
        train_and_evaluate(cell, seed=0, progress=False,
                           on_step=lambda step: stamps.append(time.perf_counter()))
    return [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])], waits[1:len(stamps)]


def run_share(wait: tuple[float, float], step: tuple[float, float], epoch_steps: int,
              iters: int) -> float:
    """Share (%) of a whole run of `iters` steps spent waiting for batches, from the (first
    epoch, later) medians of the wait and of the step."""
    first_steps = min(epoch_steps, iters)
    waited = wait[0] * first_steps + wait[1] * (iters - first_steps)
    return 100 * waited / (step[0] * first_steps + step[1] * (iters - first_steps))


def run_overhead(first: float, later: float, reference: tuple[float, float], epoch_steps: int,
                 iters: int) -> float:
    """Suite share (%) of a whole run of `iters` steps whose first `epoch_steps` cost `first`
    ms each (items generated) and the rest `later` (items cached); `reference` = the same two
    step times without any loading cost."""
    first_steps = min(epoch_steps, iters)
    total = first * first_steps + later * (iters - first_steps)
    free = reference[0] * first_steps + reference[1] * (iters - first_steps)
    return 100 * (total - free) / total


def phase_table(times: dict[str, float]) -> Table:
    """Milliseconds and share of one profiled step per phase, each marked model or suite."""
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
    return Table(["Phase", "Kind", "ms / step", "Share"], rows)


def worker_runs(epoch_steps: int, later_steps: int, rounds: int
                ) -> tuple[dict[Any, list[list[float]]], dict[Any, list[list[float]]]]:
    """(step walls, batch waits) of a fresh run per DataLoader setting and round, ms: 0, 1, 2
    workers, the default (-1) and data generated up front ("memory")."""
    settings: list[Any] = ["memory", 0, 1, 2, -1]
    walls: dict[Any, list[list[float]]] = {s: [] for s in settings}
    waits: dict[Any, list[list[float]]] = {s: [] for s in settings}
    for i in range(rounds):  # the order reversed every other round, as in `alternate`
        for setting in (settings if i % 2 == 0 else settings[::-1]):
            workers = 0 if setting == "memory" else setting
            wall, wait = step_times_ms(smoke_cell([f"train.num_workers={workers}"]),
                                       epoch_steps + later_steps, pregenerated=setting == "memory")
            walls[setting].append(wall)
            waits[setting].append(wait)
    return walls, waits


def worker_table(cell: Any, epoch_steps: int, later_steps: int, rounds: int) -> Table:
    """Batch wait and step wall time with 0, 1, 2 and the default number of DataLoader
    workers, against the same run with its data generated up front; whole-run shares."""
    from benchmark.train.data import loader_workers

    auto = loader_workers(-1)
    walls, waits = worker_runs(epoch_steps, later_steps, rounds)

    def median_of(runs: list[list[float]], part: slice) -> float:
        return statistics.median(statistics.median(r[part]) for r in runs)

    first_part, later_part = slice(1, epoch_steps), slice(epoch_steps, None)
    # the same steps of the run without loading: the model's own cost changes along the run
    reference = (median_of(walls["memory"], first_part), median_of(walls["memory"], later_part))
    worker_rows = []
    for workers in (0, 1, 2, -1):
        first, later = median_of(walls[workers], first_part), median_of(walls[workers], later_part)
        wait = (median_of(waits[workers], first_part), median_of(waits[workers], later_part))
        share = run_share(wait, (first, later), epoch_steps, cell.train.iters)
        versus = run_overhead(first, later, reference, epoch_steps, cell.train.iters)
        label = f"{workers} (default: auto = {auto})" if workers == -1 else str(workers)
        judged = workers == -1 and auto == 0  # with no worker, the wait is the whole cost
        worker_rows.append([label, f"{first:.1f} / {later:.1f}",
                            f"{wait[0]:.1f} / {wait[1]:.1f}", f"{share:.1f}%", f"{versus:+.1f}%",
                            f"<= {TARGET_SHARE:.0f}%" if judged else "–",
                            verdict(share, TARGET_SHARE) if judged else "–"])
    worker_rows.append(["0, data generated up front (no loading cost)",
                        f"{reference[0]:.1f} / {reference[1]:.1f}", "–", "–", "0", "–", "–"])
    return Table(["train.num_workers", "Step wall, 1st epoch / later (ms)",
                  "Batch wait, 1st epoch / later (ms)", "Wait share, whole run",
                  "Wall vs data up front, whole run", "Target", "Verdict"],
                 worker_rows,
                 "DataLoader workers: what the loop waits for its batches, and the step "
                 "wall time against the same run with its data generated up front")


TITLE = "6. Where the time goes: one CPU training step (smoke)"


def run(quick: bool = False, device: Any = None) -> Report:
    """Where the time of a CPU training step goes (torch.profiler), and DataLoader workers."""
    from benchmark.train.data import loader_workers

    if torch.cuda.is_available():  # the engine would train on the GPU, whose kernels run
        # asynchronously: CPU-side ranges and timestamps would time their launches, not them
        return Report("profile_step", TITLE, [], [
            "skipped: a CPU figure and this machine has a GPU, which the engine would train on; "
            "run it with `CUDA_VISIBLE_DEVICES= python -m perf.profile_step`"])
    torch_device = "cpu"  # the smoke grid is a CPU grid
    skip, active = (1, 3) if quick else (5, 20)
    cell = smoke_cell()
    phases = phase_table(profile_steps(cell, skip, active))
    # one epoch in which every item is generated, then steps that find the items cached
    epoch_steps = -(-cell.data.train_images // cell.train.batch_size)
    later_steps, rounds = (4, 1) if quick else (30, 2)
    if quick:
        epoch_steps = 4
    workers_table = worker_table(cell, epoch_steps, later_steps, rounds)
    notes = [f"{cell.row} of the smoke grid on the {torch_device}, {torch.get_num_threads()} "
             f"torch threads, default DataLoader setting (train.num_workers="
             f"{cell.train.num_workers} -> {loader_workers(cell.train.num_workers)} worker(s)); "
             f"{active} profiled steps after {skip + 1} skipped; ms per step",
             "model = the network's own compute; suite = the engine's data loading and loop "
             "bookkeeping (with workers, data loading is only the wait for a batch the workers "
             "have not finished yet)",
             f"worker table: each setting a fresh run of {epoch_steps + later_steps + 1} "
             f"steps, {rounds} round(s) in alternating order; 1st epoch = medians over its steps "
             f"2-{epoch_steps} (every item generated on first use: the generated data set's "
             f"'decoding'), later = over the next {later_steps} steps (items cached); whole run "
             f"= the smoke grid's {cell.train.iters} steps, {epoch_steps} in the first epoch",
             "batch wait = time the main process waits in `next(loader)`: with 0 workers the "
             "whole loading cost (the verdict), with workers only what they had not prepared "
             "in time; wall vs data up front = (step - step of the run whose data was generated "
             "before it started) / step, which also counts what worker processes take from the "
             "compute threads, but differences of a few percent are within this machine's noise",
             "pin_memory is on only when batches go to a GPU; workers persist for the run"]
    return Report("profile_step", TITLE, [phases, workers_table], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("profile_step", run))
