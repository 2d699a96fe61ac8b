"""Measuring one call: its peak tensor memory and its matmul/convolution FLOPs.

Peak memory of one training step = the bytes of the tensors that stay live across steps
(weights, gradients, buffers, optimizer state, inputs) + the most the step allocated on top at
any moment (activations, new gradients, temporaries). On a GPU the rise comes from
`torch.cuda.max_memory_allocated`; on the CPU, which has no allocator statistic, from
`torch.profiler` with memory profiling, whose allocation events carry the CPU allocator's
running total. Like the GPU figure it counts tensor
bytes, not the process's resident memory (interpreter, libraries, malloc caches), which would
dilute a ratio.
"""

from __future__ import annotations

import gc
import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from perf.common import sync


# ----------------------------------------------------------------------------- memory


@dataclass
class Peak:
    """Peak bytes of one call and how they were measured."""

    bytes: int
    method: str  # cuda-allocator | cpu-profiler | cpu-rss

    def gib(self) -> str:
        return f"{self.bytes / 2**30:.2f} GiB" if self.bytes >= 2**30 else \
            f"{self.bytes / 2**20:.0f} MiB"


def tensor_bytes(tensors: Iterable[torch.Tensor], device_type: str = "cpu") -> int:
    """Bytes of the distinct storages behind `tensors` on `device_type` (views counted once)."""
    seen: dict[tuple[int, int], int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == device_type:
            storage = t.untyped_storage()
            seen[(t.device.index or 0, storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                   *inputs: torch.Tensor) -> list[torch.Tensor]:
    """The tensors live between two training steps: parameters, their gradients (kept until
    the next step's `zero_grad`), buffers, optimizer state, and the step's inputs."""
    params = list(model.parameters())
    out = params + [p.grad for p in params if p.grad is not None] + list(model.buffers())
    out += list(inputs)
    if optimizer is not None:
        for state in optimizer.state.values():
            out += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return out


def peak_memory(fn: Callable[[], Any], device: torch.device,
                resident: Callable[[], Iterable[torch.Tensor]] | None = None) -> Peak:
    """Peak tensor bytes while `fn` runs (see the module docstring).

    GPU: with `resident`, those tensors + the allocator's peak above what was allocated when
    the call started (other models on the same GPU do not count); else the allocator's peak.
    CPU: `fn` runs twice under the profiler and the peak is taken in the second call, where
    every block it frees was allocated under the profiler (the first call frees the previous
    step's gradients, allocated before profiling, whose sizes the profiler cannot know);
    `resident` names the tensors live between calls (`training_state`).
    """
    gc.collect()
    if device.type == "cuda":  # other models may be on the GPU: count only this call's own
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        rise = torch.cuda.max_memory_allocated(device) - before
        if resident is None:
            return Peak(int(torch.cuda.max_memory_allocated(device)), "cuda-allocator")
        return Peak(tensor_bytes(resident(), "cuda") + int(rise), "cuda-allocator")
    try:
        return Peak(_cpu_profiler_peak(fn, resident), "cpu-profiler")
    except Exception:  # noqa: BLE001 - semi-private profiler API; fall back to resident memory
        return Peak(_cpu_rss_peak(fn), "cpu-rss")


def _cpu_profiler_peak(fn: Callable[[], Any],
                       resident: Callable[[], Iterable[torch.Tensor]] | None) -> int:
    """Bytes live when the second call starts (`resident`: what stays live between calls)
    + the most the CPU allocator's running total rose above its value at that moment during
    the call (allocation events of torch.profiler with profile_memory=True)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
        with record_function("perf/measured-call"):
            fn()
    nodes, allocs, window = list(prof.profiler.kineto_results.experimental_event_tree()), [], None
    while nodes:
        node = nodes.pop()
        if node.tag == _EventType.Allocation:
            allocs.append(node)
        elif node.name == "perf/measured-call":
            window = (node.start_time_ns, node.end_time_ns)
        nodes.extend(node.children)
    if window is None:
        raise RuntimeError("the profiler did not record the measured call")
    allocs = sorted((a for a in allocs if str(a.extra_fields.device) == "cpu"),
                    key=lambda a: a.start_time_ns)
    before = [a.extra_fields.total_allocated for a in allocs if a.start_time_ns < window[0]]
    during = [a.extra_fields.total_allocated for a in allocs
              if window[0] <= a.start_time_ns <= window[1]]
    if not during:
        raise RuntimeError("the profiler recorded no allocation")
    at_start = before[-1] if before else during[0] - allocs[len(before)].extra_fields.alloc_size
    return tensor_bytes(resident() if resident else ()) + max(0, max(during) - at_start)


def _cpu_rss_peak(fn: Callable[[], Any]) -> int:
    """Fallback: the process's peak resident memory during `fn` (Linux: VmHWM after a reset)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    fn()
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    except (OSError, AttributeError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss * (1 if sys.platform == "darwin" else 1024))


def memory_note(method: str) -> str:
    return {
        "cuda-allocator": "peak memory (GPU) = weights, gradients, buffers, optimizer state "
                          "and inputs + the rise of torch.cuda.max_memory_allocated above the "
                          "allocation at the start of one step",
        "cpu-profiler": "peak memory (CPU) = live tensor bytes at the peak of one step: "
                        "weights, buffers, optimizer state and inputs + the most the CPU "
                        "allocator held on top during the step (torch.profiler allocation "
                        "events; gradients included); not the process's resident memory",
        "cpu-rss": "peak memory (CPU) = the process's peak resident memory during one step "
                   "(VmHWM; includes the interpreter and libraries, which dilutes the ratio)",
    }.get(method, method)


# ----------------------------------------------------------------------------- FLOPs


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of matmuls and convolutions in `fn` (forward and backward),
    as counted by torch.utils.flop_counter; element-wise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
