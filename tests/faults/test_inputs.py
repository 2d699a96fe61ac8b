"""Bad command-line input and bad data, through run_all.py as a user runs it: exit code 2, one
line naming the problem and the fix, nothing trained or written.

Already covered elsewhere (not repeated here): unknown grid, malformed `--set`, non-numeric
values, unknown executor (tests/benchmark/test_cli.py::
test_user_errors_are_one_line_with_exit_code_2, test_exit_code_of_the_real_process); missing
data root, wrong layout, image without label (tests/benchmark/datasets/
test_datasets_errors.py::test_run_all_stops_before_any_job); size mismatch, out-of-range label
and corrupt image in the training split (same file: the check command and the data set); a
NaN loss: a failed record, the grid goes on, exit 1 (tests/benchmark/test_cli.py::
test_failed_run_writes_a_failed_record_and_exits_1). The same damage in the evaluation split:
tests/faults/test_checks.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_data import snapshot, write_camvid


def test_unknown_key_lists_close_matches_not_every_key(run_all, results, one_line_error) -> None:
    proc = run_all("--grid", "smoke", "--set", "train.iterz=5", "--results", str(results))
    line = one_line_error(proc, 2, "unknown --set key 'train.iterz'", "did you mean train.iters")
    assert len(line) < 300, f"{len(line)} characters"
    assert not results.exists()


@pytest.mark.parametrize("setting", ["train.lr=nan", "train.lr=inf", "train.weight_decay=nan",
                                     "model.head.sinkhorn_eps=inf", "train.lr=-inf"])
def test_non_finite_numbers_are_refused(setting, run_all, results, one_line_error) -> None:
    key = setting.split("=")[0]
    proc = run_all("--grid", "smoke", "--set", setting, "--results", str(results))
    one_line_error(proc, 2, f"bad value for {key}:", "is not a finite number",
                   f"give a finite one, e.g. {key}=")
    assert not results.exists()


def _camvid(tmp_path: Path, run_all, *extra: str):
    results = tmp_path / "results"
    before = snapshot(tmp_path)
    proc = run_all("--grid", "camvid", "--seeds", "1", "--results", str(results),
                   "--no-progress", *extra)
    assert snapshot(tmp_path) == before, "nothing may be written or trained"
    return proc


def test_data_root_that_is_a_file(tmp_path, run_all, one_line_error) -> None:
    a_file = tmp_path / "camvid.zip"
    a_file.write_bytes(b"PK")
    proc = _camvid(tmp_path, run_all, "--data-root", str(a_file))
    one_line_error(proc, 2, f"data root {a_file} is a file, not a folder",
                   "point --data-root")


def test_empty_split(tmp_path, run_all, one_line_error) -> None:
    root = write_camvid(tmp_path / "data", {"train": 2, "val": 1, "test": 0})
    (root / "test").mkdir()
    (root / "testannot").mkdir()
    proc = _camvid(tmp_path, run_all, "--data-root", str(root))
    one_line_error(proc, 2, "split 'test' has no image/label pairs", "expected camvid/")

