"""run_all.py: one-line errors with exit code 2, and the smoke grid end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from experiments import get_grid

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "train.iters=2", "--set", "train.batch_size=2", "--set", "data.train_images=4",
        "--set", "data.val_images=2", "--set", "data.image_size=32", "--no-progress"]


@pytest.mark.parametrize("args, message", [
    (["--grid", "nope"], "error: unknown grid 'nope'; valid grids: smoke"),
    (["--grid", "smoke", "--set", "train.iterz=1"], "error: unknown --set key 'train.iterz'"),
    (["--grid", "smoke", "--set", "train.iters=many"],
     "error: bad value for train.iters: 'many' is not a valid int"),
    (["--grid", "smoke", "--set", "train.iters"], "error: malformed --set 'train.iters'"),
    (["--grid", "smoke", "--executor", "cloud"], "error: unknown executor 'cloud'"),
])
def test_user_errors_are_one_line_with_exit_code_2(args, message, capsys, tmp_path) -> None:
    assert main(args + ["--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert not any(tmp_path.iterdir()), "nothing may be written on a user error"


def test_exit_code_of_the_real_process(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "run_all.py", "--grid", "nope", "--results",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    from experiments import grid_names

    expected = f"error: unknown grid 'nope'; valid grids: {', '.join(grid_names())}"
    assert proc.stderr.strip() == expected


def test_smoke_grid_end_to_end(tmp_path, capsys) -> None:
    assert main(["--grid", "smoke", "--results", str(tmp_path)] + TINY) == 0
    tables = tmp_path / "tables"
    for ext in ("md", "tex", "csv"):
        assert (tables / f"smoke.{ext}").stat().st_size > 0
    csv = pd.read_csv(tables / "smoke.csv")
    assert list(csv["Method"]) == ["Softmax", "Pixel-query", "Pixel contrast", "Prototype (K=1)",
                                   "Prototype (K=5)"]
    assert list(csv["status"]) == ["done"] * 5
    records = sorted((tmp_path / "runs" / "smoke").glob("*/seed0.json"))
    assert len(records) == 5
    record = json.loads(records[0].read_text())
    for field in ("cell", "cell_key", "seed", "status", "metrics", "params", "timings", "memory",
                  "provenance", "started", "finished", "history", "confusion", "kind", "schema"):
        assert field in record, field
    for field in ("git_commit", "versions", "hardware"):
        assert field in record["provenance"], field
    # huge pages or not: torch read the setting at this test process's first tensor
    allocator = record["provenance"]["hardware"]["cpu_allocator"]
    assert allocator.startswith("glibc keeps freed memory; ")
    assert record["kind"] == "trained" and record["schema"] == 2 and record["grid"] == "smoke"
    assert 0 <= record["metrics"]["miou"] <= 100
    assert len(record["metrics"]["per_class_iou"]) == 6
    mtimes = [p.stat().st_mtime_ns for p in records]
    capsys.readouterr()

    # a rerun skips finished runs and only regenerates the tables
    assert main(["--grid", "smoke", "--results", str(tmp_path)] + TINY) == 0
    assert "5 done, 0 to run" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in records] == mtimes

    # --tables-only never trains; --force reruns
    assert main(["--grid", "smoke", "--results", str(tmp_path), "--tables-only"] + TINY) == 0
    assert [p.stat().st_mtime_ns for p in records] == mtimes
    assert main(["--grid", "smoke", "--results", str(tmp_path), "--force"] + TINY) == 0
    assert [p.stat().st_mtime_ns for p in records] != mtimes


def test_dry_run_lists_cells_and_trains_nothing(tmp_path, capsys) -> None:
    assert main(["--grid", "smoke", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("seeds 1 (done 0)") == 5
    assert not (tmp_path / "runs").exists()


def test_failed_run_writes_a_failed_record_and_exits_1(tmp_path, capsys) -> None:
    # lr so large the loss overflows: the run fails cleanly, the grid continues
    args = ["--grid", "smoke", "--results", str(tmp_path), "--set", "train.lr=1e30",
            "--set", "train.optimizer=sgd"] + TINY
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "NonFiniteLossError" in err
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "smoke").glob("*/*.json")]
    assert records and all(r["status"] == "failed" for r in records)
    assert all(r["error"].startswith("NonFiniteLossError: loss became") for r in records)
    md = (tmp_path / "tables" / "smoke.md").read_text()
    assert md.count("failed") == 5


def test_runs_with_a_live_job_are_not_submitted_twice(tmp_path, capsys) -> None:
    from benchmark.launch.executors import SlurmExecutor
    from benchmark.launch.runs import plan
    from benchmark.store import ResultsLayout

    runs = plan(get_grid("smoke").cells, [0], ResultsLayout(tmp_path))
    log = tmp_path / "jobs" / "smoke.jsonl"
    log.parent.mkdir(parents=True)
    stdout = tmp_path / "jobs" / "7_0_log.out"
    stdout.write_text("started\n")  # a local job that has started and has no result yet
    entry = {"cell_key": runs[1].cell.key, "seed": 0, "row": runs[1].cell.row, "job_id": "7_0",
             "executor": "local", "folder": str(tmp_path / "jobs"), "stdout": str(stdout),
             "stderr": str(stdout), "submitted": "now"}
    log.write_text(json.dumps(entry) + "\n")
    kept = SlurmExecutor().to_submit(runs)
    assert kept == [runs[0]] + runs[2:]
    assert "already queued or running" in capsys.readouterr().out


def test_missing_pretrained_file_stops_before_any_training(tmp_path, capsys) -> None:
    """Checked before any compute (benchmark/launch/checks.py): one line, exit 2, no record."""
    missing = tmp_path / "nowhere" / "mit_b0.safetensors"
    args = ["--grid", "smoke", "--results", str(tmp_path), "--set", f"model.pretrained={missing}"]
    assert main(args + TINY) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: pretrained weights {missing} do not exist") and \
        err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_tables_only_into_an_unwritable_results_folder_is_one_line(tmp_path, capsys) -> None:
    """A tables folder that cannot be made (here a file is in the way; read-only or full
    folders fail the same way, but root writes anywhere): one line naming the path, exit 1."""
    (tmp_path / "tables").write_text("in the way")
    assert main(["--grid", "smoke", "--tables-only", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write " + str(tmp_path / "tables"))
    assert "pass --results DIR" in err and err.count("\n") == 1


def test_each_mode_is_one_short_function() -> None:
    """`main` only parses, loads the grids and hands over to one function per mode."""
    import ast
    import argparse

    import benchmark.cli as cli

    source = Path(cli.__file__).read_text()
    lengths = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(ast.parse(source))
               if isinstance(n, ast.FunctionDef)}
    assert max(lengths.values()) < 60, lengths
    assert lengths["main"] < 20

    def mode(**flags) -> str:
        base = dict(dry_run=False, preflight=False, status=False, tables_only=False,
                    executor="inline", checkpoint=None)
        return cli.choose_mode(argparse.Namespace(**{**base, **flags}), []).__name__

    assert mode(dry_run=True, status=True) == "dry_run"
    assert mode(preflight=True) == "preflight" and mode(status=True) == "status"
    assert mode(tables_only=True) == "tables_only" and mode() == "run_grids"
    assert mode(executor="slurm") == mode(executor="local") == "run_grids"  # one mode, 3 places


def test_each_executor_is_built_from_the_command_line() -> None:
    """`--executor` picks a class (no kind strings compared); its options come from the flags."""
    from benchmark.cli import parse_args
    from benchmark.launch.executors import (EXECUTORS, InlineExecutor, LocalExecutor,
                                            SlurmExecutor)

    assert EXECUTORS == {"inline": InlineExecutor, "local": LocalExecutor,
                         "slurm": SlurmExecutor}
    args = parse_args(["--grid", "smoke", "--no-progress", "--force"])
    assert EXECUTORS["inline"].from_args(args) == InlineExecutor(progress=False, force=True)
    local = LocalExecutor.from_args(parse_args(["--grid", "smoke"]))
    assert local.options.max_parallel == 1 and local.wait  # local jobs are always awaited
    slurm = SlurmExecutor.from_args(parse_args(["--grid", "smoke", "--partition", "gpu"]))
    assert slurm.options.max_parallel == 64 and not slurm.wait
    cell = get_grid("smoke").cells[0]
    assert "slurm_partition" not in local.job_parameters(cell)
    assert slurm.job_parameters(cell)["slurm_partition"] == "gpu"
