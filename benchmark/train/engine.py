"""Training and evaluation of one run (cell x seed) with Accelerate, on 1 or N processes.

The data order is a pure function of (seed, step): step s of training always sees the same
global batch, split over processes, whatever the world size. That keeps the global batch fixed
when GPUs change and makes resuming at step s exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.profiler import record_function
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from benchmark.train import checkpoint
from benchmark.config import Cell
from benchmark.datasets import build_dataset, dataset_info
from benchmark.train.evaluate import metrics_from_confusion, predict_confusion
from benchmark.train.interrupts import DeferredSignals, interrupted_message
from benchmark.train.memory import peak_record, reset_peak
from benchmark.train.optim import build_optimizer
from benchmark.checkpoints import load_pretrained
from benchmark.train.schedule import poly_warmup_factor
from methods import build_model, count_params


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class GlobalBatchSampler(Sampler[tuple[int, int]]):
    """Yields this process's share of the global batch of every step from `start_step` on.

    Epoch e is a permutation of the training set drawn from `seed + e`; global batch s is the
    s-th consecutive chunk of the epoch-ordered stream (incomplete tail dropped). Each item is
    `(index, sample_seed)`: the data set draws that sample's augmentation from `sample_seed`, so
    a sample does not depend on worker processes or on where a resumed run restarted.
    """

    def __init__(self, n: int, global_batch: int, steps: int, seed: int,
                 rank: int = 0, world_size: int = 1, start_step: int = 0) -> None:
        if global_batch % world_size:
            raise ValueError(
                f"train.batch_size {global_batch} is not divisible by {world_size} processes; "
                f"set train.batch_size to a multiple of the process count"
            )
        if n < global_batch:
            raise ValueError(f"training split has {n} images, fewer than train.batch_size {global_batch}")
        self.n, self.global_batch, self.steps, self.seed = n, global_batch, steps, seed
        self.rank, self.per_rank, self.start_step = rank, global_batch // world_size, start_step

    def batch_indices(self, step: int) -> list[int]:
        """Indices of the global batch at `step` (all processes)."""
        per_epoch = self.n // self.global_batch
        epoch, slot = divmod(step, per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        return perm[slot * self.global_batch:(slot + 1) * self.global_batch].tolist()

    def sample_seed(self, step: int, slot: int) -> int:
        return ((self.seed * 1_000_003 + step) * 4_099 + slot) % (2**63)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in range(self.start_step, self.steps):
            batch = self.batch_indices(step)
            first = self.rank * self.per_rank
            for slot in range(first, first + self.per_rank):
                yield batch[slot], self.sample_seed(step, slot)

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.per_rank


@dataclass
class RunResult:
    """What a finished run measured; the store turns it into a record."""

    metrics: dict[str, Any]
    params: dict[str, int]
    timings: dict[str, float]
    memory: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    weights_sha256: str = ""


def make_accelerator(cell: Cell) -> Accelerator:
    """Accelerate picks up 1..N processes from the environment; AMP only on a GPU."""
    use_gpu = torch.cuda.is_available()
    precision = "bf16" if (cell.train.amp and use_gpu) else "no"
    return Accelerator(cpu=not use_gpu, mixed_precision=precision)


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (name, dtype, shape, raw bytes): equal iff bitwise equal."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def loader_workers(requested: int, world_size: int = 1) -> int:
    """DataLoader worker processes for `train.num_workers` (-1 = auto; 0 = load in the main
    process, between steps).

    Auto, by the cores each training process has: none with up to 2 (a worker then takes its
    share of the cores from the compute threads: on 2 cores the smoke step was 5% slower with
    one worker than with none, perf/RESULTS.md), one with 3-4, half the cores up to 4
    beyond that, so that decoding and augmentation overlap the compute.
    """
    if requested >= 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    per_process = max(1, cores // max(1, world_size))
    if per_process <= 2:
        return 0
    return 1 if per_process <= 4 else min(4, per_process // 2)


def make_train_loader(dataset: Any, sampler: "GlobalBatchSampler", workers: int, seed: int,
                      device: torch.device) -> DataLoader:
    """The training DataLoader: `workers` processes kept alive for the whole run, pinned host
    memory only when batches go to a GPU.

    A private generator: creating the iterator draws a worker base seed, which must not advance
    the global RNG (dropout) differently in a resumed run than in an uninterrupted one.
    """
    return DataLoader(dataset, batch_size=sampler.per_rank, sampler=sampler,
                      num_workers=workers, drop_last=False,
                      persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                      worker_init_fn=ignore_stop_signals if workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))


def ignore_stop_signals(worker_id: int) -> None:
    """In a DataLoader worker: leave SIGUSR2/SIGTERM to the main process, which checkpoints at
    the next step boundary and then shuts its workers down (SLURM signals every process of
    the job; a worker killed by it would fail the run instead)."""
    import signal

    from benchmark.train.interrupts import SIGNALS

    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def labelled_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """Yield the loader's batches, each fetch inside a `train/data` profiler range."""
    it = iter(loader)
    while True:
        with record_function("train/data"):
            try:
                batch = next(it)
            except StopIteration:
                return
        yield batch


@dataclass
class StepOutput:
    """One training step's loss (total and cross-entropy) and the head's output."""

    loss: torch.Tensor
    ce: torch.Tensor
    out: Any


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  images: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                  autocast: Callable[[], Any] = contextlib.nullcontext,
                  backward: Callable[[torch.Tensor], None] | None = None,
                  clip: Callable[[], Any] | None = None, step: int = 0) -> StepOutput:
    """Forward, loss (upsampled cross-entropy + the head's terms), backward, optimizer step.

    Each phase is a `torch.profiler` range (`train/forward`, `train/loss`, `train/backward`,
    `train/optimizer`), nearly free when no profiler runs. `backward`/`autocast`/`clip` are
    Accelerate's in the engine; plain autograd by default (perf/ benchmarks).
    """
    with autocast():
        with record_function("train/forward"):
            out = model(images, labels)
        with record_function("train/loss"):
            logits = F.interpolate(out.logits, size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            ce = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
            loss = ce + sum(out.losses.values())
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"loss became {loss.item()} at step {step}; lower train.lr or set train.grad_clip"
        )
    with record_function("train/backward"):
        optimizer.zero_grad(set_to_none=True)
        (backward or torch.Tensor.backward)(loss)
    with record_function("train/optimizer"):
        if clip is not None:
            clip()
        optimizer.step()
    return StepOutput(loss, ce, out)


def eval_windows(cell: Cell) -> dict[str, tuple[int, int] | None]:
    """`predict_confusion`'s window and stride for the cell's eval mode (None: whole image)."""
    e = cell.eval
    if e.mode != "slide":
        return {"window": None, "stride": None}
    return {"window": (e.window_h, e.window_w), "stride": (e.stride_h, e.stride_w)}


def set_lr(optimizer: torch.optim.Optimizer, cell: Cell, step: int) -> float:
    """Learning rate as a pure function of the step (nothing to save for resume)."""
    t = cell.train
    lr = t.lr * poly_warmup_factor(step, t.iters, t.poly_power, t.warmup_iters, t.warmup_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _agreed_signal(signals: DeferredSignals, accelerator: Accelerator) -> int:
    """The signal any process received (0 if none), the same on every process."""
    received = signals.received or 0
    if accelerator.num_processes > 1:
        flag = torch.tensor([received], device=accelerator.device)
        received = int(accelerator.reduce(flag, reduction="max").item())
    if received and signals.received is None:
        signals.received = received
    return received


def _stop_point(signals: DeferredSignals, accelerator: Accelerator, step: int, total: int,
                checkpoint_dir: Path | None, saved: bool, during: str = "") -> None:
    """A safe point: if any process got a signal, hand it on (`Interrupted` in a plain run)."""
    signum = _agreed_signal(signals, accelerator)
    if signum:
        signals.forward(interrupted_message(signum, step, total, checkpoint_dir, saved, during))


def train_and_evaluate(cell: Cell, seed: int, progress: bool = True,
                       accelerator: Accelerator | None = None,
                       checkpoint_dir: Path | None = None,
                       weights_path: Path | None = None,
                       on_step: Callable[[int], None] | None = None) -> RunResult:
    """Train `cell` with `seed` for `cell.train.iters` steps, then evaluate on the val split.

    With `checkpoint_dir`, state is saved every `train.checkpoint_every` steps, at the end of
    training (before evaluation) and when SIGUSR2, SIGTERM or SIGINT arrives; a run that finds
    a valid checkpoint there continues from it (or only evaluates, from the final one); the
    result is bitwise identical to an uninterrupted run (on the CPU). Signals are honoured from
    the first line on: at step boundaries, between evaluation batches and after the weights are
    saved. `weights_path` receives the final state dict. `on_step(step)` is called after every
    training step (e.g. a profiler's `step`, perf/profile_step.py).
    """
    with DeferredSignals() as signals:  # first: a signal during start-up is not lost
        return _train_and_evaluate(cell, seed, progress, accelerator, checkpoint_dir,
                                   weights_path, on_step, signals)


def _train_and_evaluate(cell: Cell, seed: int, progress: bool, accelerator: Accelerator | None,
                        checkpoint_dir: Path | None, weights_path: Path | None,
                        on_step: Callable[[int], None] | None,
                        signals: DeferredSignals) -> RunResult:
    accelerator = accelerator or make_accelerator(cell)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    show = progress and accelerator.is_main_process
    set_seed(seed)
    peak_was_reset = reset_peak(device)
    info = dataset_info(cell.data)
    train_set = build_dataset(cell.data, "train")
    val_set = build_dataset(cell.data, cell.data.val_split)

    model = build_model(cell.model, info.num_classes, cell.data.ignore_index)
    if cell.model.pretrained:  # local file only; a missing file is a one-line PretrainedError
        report = load_pretrained(model, cell.model.pretrained)
        if accelerator.is_main_process:
            print(report.summary(), flush=True)
    params = count_params(model)
    if world > 1 and device.type == "cuda":  # the released recipes train with SyncBN
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, cell)
    model, optimizer = accelerator.prepare(model, optimizer)
    total = cell.train.iters

    start_step, history, train_s, step_times = 0, [], 0.0, []
    resumed = checkpoint.latest_valid(checkpoint_dir) if checkpoint_dir else None
    if resumed is not None:
        folder, meta = resumed
        checkpoint.load(accelerator, folder)
        start_step = meta["step"]
        history, train_s = meta["extra"]["history"], meta["extra"]["train_s"]
        step_times = meta["extra"]["step_times"]
        if accelerator.is_main_process:
            print(f"resuming from {folder}", flush=True)
    _stop_point(signals, accelerator, start_step, total, checkpoint_dir, resumed is not None)

    sampler = GlobalBatchSampler(len(train_set), cell.train.batch_size, total, seed, rank, world,
                                 start_step=start_step)
    workers = loader_workers(cell.train.num_workers, world)
    loader = make_train_loader(train_set, sampler, workers, seed, device)

    def save(step: int) -> None:
        extra = {"history": history, "train_s": train_s + time.perf_counter() - t0,
                 "step_times": step_times}
        checkpoint.save(accelerator, checkpoint_dir, step, extra)

    if accelerator.is_main_process:
        print(f"training {cell.row} seed {seed}: step {start_step} of {total}, "
              f"{world} process(es), {device}", flush=True)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start_step, desc=f"train {cell.row} seed{seed}",
               disable=not show, leave=False)
    clip = ((lambda: accelerator.clip_grad_norm_(model.parameters(), cell.train.grad_clip))
            if cell.train.grad_clip > 0 else None)
    for step, (images, labels) in enumerate(labelled_batches(loader), start=start_step):
        t_step = time.perf_counter()
        lr = set_lr(optimizer, cell, step)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        result = training_step(model, optimizer, images, labels, cell.data.ignore_index,
                               autocast=accelerator.autocast, backward=accelerator.backward,
                               clip=clip, step=step)
        loss, ce, out = result.loss, result.ce, result.out
        step_times.append(time.perf_counter() - t_step)
        if step % cell.train.log_every == 0 or step == total - 1:
            entry = {"step": step, "loss": loss.item(), "ce": ce.item(), "lr": lr}
            entry.update({k: v.item() for k, v in out.losses.items()})
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
        bar.update(1)
        if on_step is not None:
            on_step(step)
        done = step + 1
        signum = _agreed_signal(signals, accelerator)
        every = cell.train.checkpoint_every
        if checkpoint_dir is not None and (signum or done == total or (every and done % every == 0)):
            save(done)  # done == total: the final checkpoint, before evaluation
        if signum:
            signals.forward(interrupted_message(signum, done, total, checkpoint_dir, True))
    bar.close()
    train_s += time.perf_counter() - t0
    if world > 1:  # DDP keeps rank 0's buffers authoritative; make the final state identical
        for buffer in accelerator.unwrap_model(model).buffers():
            torch.distributed.broadcast(buffer, src=0)

    t1 = time.perf_counter()
    saved = checkpoint_dir is not None
    cm = predict_confusion(accelerator.unwrap_model(model), val_set, info.num_classes,
                           cell.data.ignore_index, cell.eval.batch_size, device, rank, world,
                           progress=show, num_workers=workers, **eval_windows(cell),
                           logit_resize=cell.eval.logit_resize,
                           between_batches=lambda: _stop_point(
                               signals, accelerator, total, total, checkpoint_dir, saved,
                               "during evaluation"))
    cm = accelerator.reduce(cm, reduction="sum") if world > 1 else cm
    eval_s = time.perf_counter() - t1
    metrics = metrics_from_confusion(cm.cpu(), info.class_names)
    final_model = accelerator.unwrap_model(model)
    if weights_path is not None and accelerator.is_main_process:
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights_path.with_suffix(".tmp")
        torch.save(final_model.state_dict(), tmp)
        tmp.replace(weights_path)
    _stop_point(signals, accelerator, total, total, checkpoint_dir, saved, "after evaluation")
    sorted_times = sorted(step_times)
    timings = {
        "train_s": train_s,
        "eval_s": eval_s,
        "step_s_median": sorted_times[len(sorted_times) // 2] if sorted_times else math.nan,
        "train_img_per_s": total * cell.train.batch_size / train_s if train_s else math.nan,
        "eval_img_per_s": len(val_set) / eval_s if eval_s else math.nan,
        "resumed_from_step": start_step,
    }
    return RunResult(metrics=metrics, params=params, timings=timings,
                     memory=peak_record(device, peak_was_reset), history=history,
                     confusion=cm.cpu().tolist(),
                     weights_sha256=weights_sha256(final_model))
