"""How a run's step executes: `train.deterministic`, `train.channels_last`, `train.compile`.

- `deterministic`: `torch.use_deterministic_algorithms` (warn-only: an op without a
  deterministic kernel warns instead of failing the run, and stays non-deterministic; on CUDA
  the backward of bilinear upsampling is one), cuDNN deterministic without autotuning, and
  cuBLAS's fixed workspace (`CUBLAS_WORKSPACE_CONFIG=:4096:8`, set before the first cuBLAS
  call): what a GPU run needs to repeat bit for bit (perf/determinism.py checks whether it
  does). The CPU kernels the suite uses are deterministic already: there it changes nothing.
- `channels_last`: the model's 4-D weights and each batch in NHWC (a staged pipeline's uint8 is
  already HWC); convolution kernels prefer it on GPUs with tensor cores and in oneDNN.
- `compile`: `torch.compile` of the model in place (`Module.compile`: the state dict keeps its
  names, so checkpoints and resume are unchanged). Shapes are static until one changes, then
  dynamic (dynamo's automatic dynamic shapes): training at a fixed crop gets static kernels,
  and evaluation at each image's own size recompiles a few times (where a size crosses a
  threshold a kernel chose by, e.g. a convolution's size heuristic), not once per image.
  `COMPILE_BACKEND` (default inductor; env PROTOSEG_COMPILE_BACKEND) is the backend; the tests
  use "aot_eager", the same dynamo graphs and autograd without generating C++ (inductor takes
  minutes per model on 2 CPU cores).
"""

from __future__ import annotations

import os
from typing import Any

import torch

COMPILE_BACKEND = os.environ.get("PROTOSEG_COMPILE_BACKEND", "inductor")
CUBLAS_WORKSPACE = ":4096:8"  # the setting CUDA's docs give for reproducible cuBLAS results


def apply_determinism(train: Any) -> bool:
    """Switch deterministic kernels on when `train.deterministic` is set (before the model is
    built: cuBLAS reads its workspace setting at its first call); returns whether it did."""
    if not getattr(train, "deterministic", False):
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return True


def prepare_model(model: torch.nn.Module, train: Any) -> torch.nn.Module:
    """The model laid out and compiled as `train` asks (in place; the same module back)."""
    if getattr(train, "channels_last", False):
        model.to(memory_format=torch.channels_last)
    if getattr(train, "compile", False):
        model.compile(backend=COMPILE_BACKEND, dynamic=None)
    return model
