"""Numbers out of any sensible range (issue 24, item 4): refused in one line, exit 2, before any
work (no results folder made, no dry run started), and an explicit --checkpoint path that does
not exist is an error, not a table of `missing` rows."""

from __future__ import annotations

import time

import pytest

from benchmark.cli import main

CASES = {  # arguments: what the one line must say
    "image-size-0": (["--set", "data.image_size=0"], "bad value for data.image_size: 0;"),
    "image-size-huge": (["--set", "data.image_size=100000"], "between 16 and 2048"),
    "iters-huge": (["--set", "train.iters=100000000000000000000000"],
                   "bad value for train.iters: 100000000000000000000000;"),
    "min-lr-above-lr": (["--set", "train.min_lr=5"], "is above train.lr="),
    "seeds-huge": (["--seeds", "100000000", "--dry-run"], "--seeds 100000000: give a number"),
    "seeds-overflow": (["--seeds", "99999999999999999999"], "between 1 and 1000"),
    "sigma-nan": (["--sigma", "nan", "--dry-run"], "--sigma nan: the per-run sd"),
    "sigma-negative": (["--sigma", "-1", "--dry-run"], "--sigma -1: the per-run sd"),
    "max-parallel-0": (["--max-parallel", "0"], "--max-parallel 0: give a value between 1"),
    "gpus-uneven": (["--executor", "slurm", "--gpus-per-run", "3"],
                    "--gpus-per-run 3: Softmax (smoke) has train.batch_size 8, which does not"),
    "local-gpus-parallel": (["--executor", "local", "--gpus-per-run", "2", "--max-parallel",
                             "2"], "--executor local --max-parallel 2: Softmax (smoke) takes 2"),
    "checkpoint-missing": (["--checkpoint", "/no/such.pth"],
                           "--checkpoint /no/such.pth does not exist"),
}


@pytest.mark.parametrize("case", CASES)
def test_out_of_range_is_one_line_before_any_work(case, results, capsys) -> None:
    args, expected = CASES[case]
    t0 = time.monotonic()
    # --dry-run: a value that passed by mistake plans (returns 0) instead of training
    assert main(["--grid", "smoke", "--results", str(results), "--dry-run", *args]) == 2
    assert time.monotonic() - t0 < 5, "refused before any planning"
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.err
    assert out.out == "" and not results.exists()


def test_camvid_crop_larger_than_its_images(results, capsys) -> None:
    assert main(["--grid", "camvid", "--results", str(results), "--dry-run",
                 "--set", "data.crop_size=4000"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: bad value for data.crop_size/crop_width: a 4000x"), line
    assert "crop is larger than CamVid's images at their largest training scale" in line, line
    assert "\n" not in line and not results.exists()


def test_every_grid_cell_is_within_range() -> None:
    from benchmark.ranges import check_ranges
    from experiments import get_grid

    for name in ("smoke", "camvid", "table1", "table2", "table3", "zoo"):
        for cell in get_grid(name).cells:
            check_ranges(cell)


def test_job_shape_checks_leave_status_and_tables_alone(results, capsys) -> None:
    """A leftover --gpus-per-run that does not split the batch stops a submission, not a look
    at what exists."""
    for mode in ("--status", "--tables-only"):
        assert main(["--grid", "smoke", "--results", str(results), mode,
                     "--gpus-per-run", "3"]) == 0, capsys.readouterr().err
