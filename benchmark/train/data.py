"""The training data order: a pure function of (seed, step), whatever the number of processes.

Step s of training always sees the same global batch, split over processes, whatever the world
size. That keeps the global batch fixed when GPUs change and makes resuming at step s exact.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import torch
from torch.profiler import record_function
from torch.utils.data import DataLoader, Sampler

from benchmark.train.checkpoint import SIGNALS


# ------------------------------------------------------------------------------------------ loaders


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
            raise ValueError(f"training split has {n} images, fewer than train.batch_size "
                             f"{global_batch}")
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


def cores_per_process(world_size: int = 1) -> int:
    """The cores of this training process: the CPUs it may run on, shared with the other
    processes of its node (LOCAL_WORLD_SIZE, else `world_size`), unless SLURM bound this
    process, one task of its own, to its `--cpus-per-task`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    per_task = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0)
    one_per_task = "TORCHELASTIC_RUN_ID" not in os.environ  # not torchrun's N in one task
    if per_task and cores <= per_task and one_per_task:  # bound: this task's cores are its own
        return cores
    on_this_node = int(os.environ.get("LOCAL_WORLD_SIZE") or world_size)
    return max(1, cores // max(1, on_this_node))


def loader_workers(requested: int, world_size: int = 1) -> int:
    """DataLoader worker processes for `train.num_workers` (-1 = auto; 0 = load in the main
    process, between steps).

    Auto, by the cores each training process has (`cores_per_process`): none with up to 2 (a
    worker then takes its share of the cores from the compute threads: on 2 cores the smoke
    step was 5% slower with one worker than with none, perf/RESULTS.md), one with 3-4, half
    the cores up to 4 beyond that, so that decoding and augmentation overlap the compute.
    """
    if requested >= 0:
        return requested
    per_process = cores_per_process(world_size)
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
