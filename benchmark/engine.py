"""Training and evaluation of one run (cell x seed) with Accelerate, on 1 or N processes.

The data order is a pure function of (seed, step): step s of training always sees the same
global batch, split over processes, whatever the world size. That keeps the global batch fixed
when GPUs change and makes resuming at step s exact.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from benchmark.config import Cell
from benchmark.datasets import build_dataset, dataset_info
from benchmark.evaluate import metrics_from_confusion, predict_confusion
from benchmark.schedule import poly_warmup_factor
from methods import build_model, count_params


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class GlobalBatchSampler(Sampler[int]):
    """Yields this process's share of the global batch of every step from `start_step` on.

    Epoch e is a permutation of the training set drawn from `seed + e`; global batch s is the
    s-th consecutive chunk of the epoch-ordered stream (incomplete tail dropped).
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

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.steps):
            batch = self.batch_indices(step)
            yield from batch[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]

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


def build_optimizer(model: torch.nn.Module, cell: Cell) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW on the learnable parameters; no weight decay on norms/biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cell.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cell.train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cell.train.lr, momentum=cell.train.momentum)
    return torch.optim.AdamW(groups, lr=cell.train.lr)


def make_accelerator(cell: Cell) -> Accelerator:
    """Accelerate picks up 1..N processes from the environment; AMP only on a GPU."""
    use_gpu = torch.cuda.is_available()
    precision = "bf16" if (cell.train.amp and use_gpu) else "no"
    return Accelerator(cpu=not use_gpu, mixed_precision=precision)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak GPU memory of this run, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return {"device": "cuda", "peak_bytes": int(torch.cuda.max_memory_allocated(device))}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return {"device": "cpu", "peak_bytes": int(rss_kb * scale),
            "note": "peak resident memory of the whole process (CPU)"}


def train_and_evaluate(cell: Cell, seed: int, progress: bool = True,
                       accelerator: Accelerator | None = None) -> RunResult:
    """Train `cell` with `seed` for `cell.train.iters` steps, then evaluate on the val split."""
    accelerator = accelerator or make_accelerator(cell)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    show = progress and accelerator.is_main_process
    set_seed(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    info = dataset_info(cell.data)
    train_set = build_dataset(cell.data, "train")
    val_set = build_dataset(cell.data, cell.data.val_split)

    model = build_model(cell.model, info.num_classes, cell.data.ignore_index)
    params = count_params(model)
    optimizer = build_optimizer(model, cell)
    total = cell.train.iters
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: poly_warmup_factor(
        s, total, cell.train.poly_power, cell.train.warmup_iters, cell.train.warmup_ratio))
    sampler = GlobalBatchSampler(len(train_set), cell.train.batch_size, total, seed, rank, world)
    loader = DataLoader(train_set, batch_size=sampler.per_rank, sampler=sampler,
                        num_workers=cell.train.num_workers, drop_last=False,
                        persistent_workers=cell.train.num_workers > 0)
    model, optimizer = accelerator.prepare(model, optimizer)

    history: list[dict[str, float]] = []
    model.train()
    t0 = time.perf_counter()
    step_times: list[float] = []
    bar = tqdm(total=total, desc=f"train {cell.row} seed{seed}", disable=not show, leave=False)
    for step, (images, labels) in enumerate(loader):
        t_step = time.perf_counter()
        images, labels = images.to(device), labels.to(device)
        with accelerator.autocast():
            out = model(images, labels)
            logits = F.interpolate(out.logits, size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            ce = F.cross_entropy(logits.float(), labels, ignore_index=cell.data.ignore_index)
            loss = ce + sum(out.losses.values())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at step {step}; lower train.lr or set train.grad_clip"
            )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cell.train.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cell.train.grad_clip)
        optimizer.step()
        scheduler.step()
        step_times.append(time.perf_counter() - t_step)
        if step % cell.train.log_every == 0 or step == total - 1:
            entry = {"step": step, "loss": loss.item(), "ce": ce.item(),
                     "lr": optimizer.param_groups[0]["lr"]}
            entry.update({k: v.item() for k, v in out.losses.items()})
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
        bar.update(1)
    bar.close()
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    cm = predict_confusion(accelerator.unwrap_model(model), val_set, info.num_classes,
                           cell.data.ignore_index, cell.eval.batch_size, device, rank, world,
                           progress=show)
    cm = accelerator.reduce(cm, reduction="sum") if world > 1 else cm
    eval_s = time.perf_counter() - t1
    metrics = metrics_from_confusion(cm.cpu(), info.class_names)
    step_times.sort()
    timings = {
        "train_s": train_s,
        "eval_s": eval_s,
        "step_s_median": step_times[len(step_times) // 2] if step_times else math.nan,
        "train_img_per_s": total * cell.train.batch_size / train_s if train_s else math.nan,
        "eval_img_per_s": len(val_set) / eval_s if eval_s else math.nan,
    }
    return RunResult(metrics=metrics, params=params, timings=timings,
                     memory=peak_memory(device), history=history, confusion=cm.cpu().tolist())
