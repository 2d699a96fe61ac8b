"""Building a run: the Accelerator, the model (pretrained weights, SyncBN) and its optimizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from benchmark.checkpoints import load_pretrained
from benchmark.train.health import HealthMonitor
from benchmark.config import Cell
from benchmark.datasets import DatasetInfo
from benchmark.train.optim import build_optimizer
from benchmark.train.runtime import prepare_model
from benchmark.train.state import RunContext, TrainState
from methods import build_model, count_params


def make_accelerator(cell: Cell, log_dir: Path | None = None) -> Accelerator:
    """Accelerate picks up 1..N processes from the environment; AMP only on a GPU. With
    `log_dir`, its TensorBoard tracker writes there (benchmark/train/progress.py)."""
    use_gpu = torch.cuda.is_available()
    precision = "bf16" if (cell.train.amp and use_gpu) else "no"
    if log_dir is None:
        return Accelerator(cpu=not use_gpu, mixed_precision=precision)
    return Accelerator(cpu=not use_gpu, mixed_precision=precision, log_with="tensorboard",
                       project_dir=str(log_dir))


def build_state(ctx: RunContext, info: DatasetInfo) -> TrainState:
    """The cell's model with its pretrained weights and its optimizer, prepared for the run's
    processes (SyncBN across GPUs, as the released recipes train), at step 0."""
    cell, accelerator = ctx.cell, ctx.accelerator
    model = build_model(cell.model, info.num_classes, cell.data.ignore_index)
    pretrained: dict[str, Any] = {}
    if cell.model.pretrained:  # local file only; a missing file is a one-line PretrainedError
        report = load_pretrained(model, cell.model.pretrained)
        ctx.say(report.summary())
        pretrained = {"file": report.path, "sha256": report.sha256, "format": report.format,
                      "tensors_loaded": report.loaded, "tensors_expected": report.expected}
    health = HealthMonitor(model)  # before resuming: it keeps the initial prototypes
    params = count_params(model)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = prepare_model(model, cell.train)  # channels_last, torch.compile (runtime.py)
    optimizer = build_optimizer(model, cell)
    model, optimizer = accelerator.prepare(model, optimizer)
    return TrainState(model=model, optimizer=optimizer, params=params, health=health,
                      pretrained=pretrained)
