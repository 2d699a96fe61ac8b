"""Run every benchmark (or some), print their tables, append them to perf/RESULTS.md.

    python -m perf.run                    # all figures, appended with date and machine
    python -m perf.run --quick --no-append  # tiny sizes: checks the scripts in minutes
    python -m perf.run --only metric --only overhead

Exit code 1 when a benchmark raised or SIGTERM stopped the run (a time limit: the figures
finished before it still append), 3 when (full mode) a target was not met; the tables still
print and append.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback

from perf.common import (
    RESULTS_MD,
    TARGET_MISSED,
    Report,
    append_results,
    busy_note,
    machine,
    machine_line,
    pick_device,
    section,
)

BENCHMARKS = ("train_step", "head_scaling", "inference", "metric", "overhead", "profile_step",
              "pipeline", "peer", "cuda_ops", "upsampling", "cross_entropy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m perf.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes: checks that every script runs (not the reference figures)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only this benchmark (repeatable, or comma-separated): "
                        f"{', '.join(BENCHMARKS)}")
    p.add_argument("--no-append", action="store_true",
                   help=f"print only; do not append to {RESULTS_MD.name}")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    return p.parse_args(argv)


def selected(only: list[str]) -> list[str]:
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"error: unknown benchmark {', '.join(unknown)}; "
                         f"choose from {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names] if names else list(BENCHMARKS)


class Stopped(BaseException):
    """SIGTERM during a figure; a BaseException, so the figures' own `except Exception` pass it."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = selected(args.only)
    device = pick_device(args.device)
    info = machine()
    print(f"machine: {machine_line(info)}")
    if busy_note(info):
        print(f"warning: {busy_note(info)}")
    reports: list[Report] = []
    errors: list[str] = []
    stopped = ""
    t_all, name = time.perf_counter(), ""
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        for name in names:
            print(f"\n=== {name} ({'quick' if args.quick else 'full'}, {device}) ===", flush=True)
            reports.append(run_one(name, args.quick, device, errors))
    except Stopped as stop:  # a time limit: keep what finished
        stopped = f"stopped by {stop} during {name}"
        print(f"\n{stopped}; the figures before it are kept", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    total = time.perf_counter() - t_all
    verdicts = [v for r in reports for v in r.verdicts]
    failed = verdicts.count("FAIL")
    print(f"\n{len(verdicts) - failed} of {len(verdicts)} targets met, {failed} not; "
          f"{len(errors)} benchmark(s) raised; {total:.0f} s in all"
          + (f"; {stopped}" if stopped else ""))
    if not args.no_append:
        text = (section(reports, info, args.quick) + f"\nAll figures above: {total:.0f} s"
                + (f"; {stopped}.\n" if stopped else ".\n"))
        print(f"appended to {append_results(text)}")
    # quick mode checks that the scripts run; its tiny sizes are not meant to meet the targets
    return 1 if errors or stopped else TARGET_MISSED if failed and not args.quick else 0


def run_one(name: str, quick: bool, device: object, errors: list[str]) -> Report:
    """One figure's report, printed; a figure that raises gives a report saying so."""
    module = importlib.import_module(f"perf.{name}")
    t0 = time.perf_counter()
    try:
        report = module.run(quick=quick, device=device)
    except Exception as err:  # noqa: BLE001 - report it, run the others
        traceback.print_exc()
        errors.append(name)
        report = Report(name, f"{name}: failed", [],
                        [f"raised {type(err).__name__}: {err}".splitlines()[0]])
    report.seconds = time.perf_counter() - t0
    print(report.markdown(), flush=True)
    return report


if __name__ == "__main__":
    sys.exit(main())
