"""Shared pieces of the benchmarks: timing (warm-up, A/B alternation, medians), the machine's
description, generated inputs, Markdown tables and perf/RESULTS.md. Peak memory and FLOPs:
perf/measure.py.

Timing: every variant is warmed up, then the variants run in turn, round after round, the
order reversed every other round (A B, B A, ...), so slow drifts of a shared machine hit all of
them alike. A ratio is the median over rounds of the per-round ratio (the two calls of one
round ran seconds apart); times are medians over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from tabulate import tabulate

from benchmark.provenance import cpu_name

RESULTS_MD = Path(__file__).resolve().with_name("RESULTS.md")
DASH = "–"


# ----------------------------------------------------------------------------- device, machine


_ALLOCATOR: dict[str, str] = {}  # "note": what pick_device set, as the suite's CPU runs set it
DEFAULT_ALLOCATOR = "the C library's defaults"


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA when available, else the CPU; on the CPU the allocator is set
    as the suite's CPU runs set it (glibc keeps freed memory, huge pages for large tensors:
    benchmark/cpu_memory.py), for every side of every figure alike. Call it before the
    process's first tensor."""
    from benchmark.cpu_memory import allocator_note, tune_cpu_allocator

    device = torch.device(name) if name else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        tune_cpu_allocator()
        _ALLOCATOR["note"] = allocator_note() + ", as the suite's CPU runs"
    return device



@contextlib.contextmanager
def kept_determinism_flags() -> Iterator[None]:
    """torch's deterministic-algorithm flags and cuDNN's, as they were, restored on the way out:
    figures that switch `train.deterministic` leave the process as they found it."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy the machine was at the start."""
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": None,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan,
        "allocator": _ALLOCATOR.get("note", DEFAULT_ALLOCATOR),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
        info["cublas_workspace"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = (f"{info.get('gpu_count', 1)} x {info['gpu']} (CUDA {info.get('cuda')}"
           + (f", CUBLAS_WORKSPACE_CONFIG={info['cublas_workspace']}"
              if info.get("cublas_workspace") else "") + ")"
           if info.get("gpu") else "no GPU")
    return (f"{info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable, "
            f"{info['torch_threads']} torch threads), {gpu}; torch {info['torch']}, "
            f"Python {info['python']}; load average {info['load_average']:.2f} at the start; "
            f"CPU allocator: {info.get('allocator', DEFAULT_ALLOCATOR)}")


def busy_note(info: dict[str, Any]) -> str | None:
    """A warning when the machine was busy when the benchmark started (figures contended)."""
    load = info.get("load_average", 0.0)
    if load == load and load > 0.5 * info["usable_cores"]:
        return (f"the machine was busy (load average {load:.2f} on {info['usable_cores']} "
                f"cores at the start): times are contended; ratios less so, absolute times not "
                f"comparable")
    return None


# ----------------------------------------------------------------------------- timing


@dataclass
class Timings:
    """Wall seconds of one variant, one entry per round."""

    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def spread(self) -> tuple[float, float]:
        """(first, third) quartile; the extremes for fewer than 4 rounds."""
        xs = sorted(self.seconds)
        if len(xs) < 4:
            return (xs[0], xs[-1]) if xs else (math.nan, math.nan)
        q = statistics.quantiles(xs, n=4)
        return q[0], q[2]

    def ms(self, digits: int = 1) -> str:
        return f"{self.median * 1e3:.{digits}f}"


def alternate(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
              device: torch.device | None = None) -> dict[str, Timings]:
    """Run each of `fns` `warmup` times, then `repeats` rounds of all of them, the order
    reversed every other round; returns each one's per-round wall times."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {n: Timings(n, times[n]) for n in names}


def round_order(names: Sequence[str], repeats: int) -> list[list[str]]:
    """The order `alternate` runs the variants in, round by round (for tests and notes)."""
    return [list(names) if i % 2 == 0 else list(names)[::-1] for i in range(repeats)]


def paired_ratio(a: Timings, b: Timings) -> float:
    """Median over rounds of a/b (the two calls of one round ran back to back)."""
    ratios = [x / y for x, y in zip(a.seconds, b.seconds) if y > 0]
    return statistics.median(ratios) if ratios else math.nan


def ratio_spread(a: Timings, b: Timings) -> tuple[float, float]:
    ratios = sorted(x / y for x, y in zip(a.seconds, b.seconds) if y > 0)
    if not ratios:
        return math.nan, math.nan
    if len(ratios) < 4:
        return ratios[0], ratios[-1]
    q = statistics.quantiles(ratios, n=4)
    return q[0], q[2]


# ----------------------------------------------------------------------------- inputs


def blocky_labels(batch: int, height: int, width: int, num_classes: int, ignore_index: int,
                  device: torch.device, seed: int = 0, block: int = 32,
                  ignore_fraction: float = 0.05) -> torch.Tensor:
    """Label maps made of `block`-pixel squares of random classes (segments, not noise), with
    about `ignore_fraction` of the squares unlabelled."""
    gen = torch.Generator().manual_seed(seed)
    bh, bw = max(1, -(-height // block)), max(1, -(-width // block))
    coarse = torch.randint(0, num_classes, (batch, bh, bw), generator=gen)
    coarse[torch.rand(batch, bh, bw, generator=gen) < ignore_fraction] = ignore_index
    labels = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)
    return labels[:, :height, :width].contiguous().to(device)


# ----------------------------------------------------------------------------- verdicts


def verdict(value: float, target: float, better: str = "lower") -> str:
    """PASS/FAIL of `value` against `target` (`lower`: value <= target is good)."""
    if value != value:  # NaN
        return "n/a"
    ok = value <= target if better == "lower" else value >= target
    return "PASS" if ok else "FAIL"


def swap_row(label: str, what: str, t: dict[str, Timings], takes: str, diff: float,
             target: float | None) -> list[str]:
    """A row of the CPU kernel-swap figures (10, 11): torch's and the swap's times (keys "torch"
    and "swap" of `t`), their ratio, what the swap ran, the gradient difference, and the target
    with its verdict (none where the swap ran torch's own kernel: "–")."""
    ratio = paired_ratio(t["swap"], t["torch"])
    lo, hi = ratio_spread(t["swap"], t["torch"])
    checked = ["–", "–"] if target is None else [f"<= {target:.1f}", verdict(ratio, target)]
    return [label, what, t["torch"].ms(), t["swap"].ms(), f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]",
            takes, f"{diff:.0e}", *checked]


def swap_headers(kind: str, sizes: str, takes: str) -> list[str]:
    """The columns of `swap_row`, named for one figure."""
    return [kind, sizes, "torch fwd+bwd (ms)", "swap fwd+bwd (ms)", "Ratio [IQR]", takes,
            "Grad diff (rel.)", "Target", "Verdict"]


def swap_notes(inputs: str, repeats: int, warmup: int, device: torch.device | None,
               swap: str) -> list[str]:
    """The notes every kernel-swap figure shares: how it timed `inputs`, and that `swap` runs
    in eager CPU training only, measured on the CPU whatever the device."""
    elsewhere = device is not None and device.type != "cpu"
    return [f"cpu, {torch.get_num_threads()} torch thread(s), float32, {inputs}; median of "
            f"{repeats} alternated rounds after {warmup} warm-up call(s); ratio = median over "
            f"rounds of swap time / torch time",
            ("measured on the CPU whatever --device says; " if elsewhere else "")
            + f"the engine uses {swap} for eager CPU training only (benchmark/train/engine.py: "
            "step_kernels)"]


def fmt(value: float, digits: int = 2) -> str:
    return DASH if value is None or value != value else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- reports


@dataclass
class Table:
    """Rows under headers, with an optional caption line above."""

    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""

    @property
    def verdicts(self) -> list[str]:
        """PASS/FAIL of every column whose header starts with "Verdict"."""
        cols = [i for i, h in enumerate(self.headers) if h.startswith("Verdict")]
        return [str(r[i]) for r in self.rows for i in cols if str(r[i]) in ("PASS", "FAIL")]

    def markdown(self) -> str:
        rows = [[str(v).replace("|", r"\|") for v in row] for row in self.rows]
        text = tabulate(rows, headers=self.headers, tablefmt="github", disable_numparse=True)
        return (f"{self.caption}\n\n" if self.caption else "") + text


@dataclass
class Report:
    """One benchmark's tables, its notes, and whether every targeted row passed."""

    name: str
    title: str
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def verdicts(self) -> list[str]:
        return [v for t in self.tables for v in t.verdicts]

    @property
    def failed(self) -> int:
        return sum(v == "FAIL" for v in self.verdicts)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        for table in self.tables:
            lines += [table.markdown(), ""]
        lines += [f"- {n}" for n in self.notes]
        lines.append(f"- `perf/{self.name}.py`, {self.seconds:.0f} s")
        return "\n".join(lines) + "\n"


def section(reports: Sequence[Report], info: dict[str, Any], quick: bool) -> str:
    """A dated RESULTS.md section: machine, mode, then every report."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = ("quick (tiny sizes: checks that the scripts run, not the reference figures)"
            if quick else "full")
    lines = [f"## {stamp}: {info['cpu']}" + (f" + {info['gpu']}" if info.get("gpu") else ""),
             "", f"Machine: {machine_line(info)}.  ", f"Mode: {mode}.", ""]
    busy = busy_note(info)
    if busy:
        lines += [f"**Note:** {busy}.", ""]
    return "\n".join(lines) + "\n" + "\n".join(r.markdown() for r in reports)


RESULTS_HEADER = """# Benchmark results

Appended by `python -m perf.run` (or one script per figure), newest last; each section
names the date, machine and mode. Regenerate rather than edit. What each figure measures and how:
[README.md](README.md).

"""


def append_results(text: str, path: Path = RESULTS_MD) -> Path:
    if not path.exists():
        path.write_text(RESULTS_HEADER, encoding="utf-8")
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + text.rstrip("\n") + "\n")
    return path


# ----------------------------------------------------------------------------- command line


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes: checks the script in seconds (not the reference figures)")
    p.add_argument("--no-append", action="store_true",
                   help=f"print only; do not append to {RESULTS_MD.name}")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    return p.parse_args(argv)


TARGET_MISSED = 3  # exit status: every figure ran and some missed a target (1: one raised)


def standalone(name: str, run: Callable[..., Report], argv: list[str] | None = None) -> int:
    """`python -m perf.<name>`: run one benchmark, print it, append it."""
    args = parse_args(run.__doc__ or name, argv)
    device = pick_device(args.device)  # first: it sets the allocator the header names
    info = machine()
    t0 = time.perf_counter()
    report = run(quick=args.quick, device=device)
    report.seconds = time.perf_counter() - t0
    print(report.markdown())
    if not args.no_append:
        print(f"appended to {append_results(section([report], info, args.quick))}")
    return TARGET_MISSED if report.failed and not args.quick else 0
