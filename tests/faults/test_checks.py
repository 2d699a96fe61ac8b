"""Checks before any compute (benchmark/launch/checks.py): an unwritable or full results
folder and a bad evaluation split stop run_all.py before anything is trained (exit 2, one line
naming the path and the fix); a record write that fails anyway keeps the computed result.

A missing pretrained file: tests/benchmark/test_cli.py::
test_missing_pretrained_file_stops_before_any_training.
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from fixtures_data import CAMVID_RAW, save, snapshot, stripes, write_camvid

from benchmark.cli import main
from benchmark.launch import checks


def _nothing_trained(results: Path) -> None:
    assert not (results / "runs").exists() and not (results / "checkpoints").exists()


def _size_mismatch(root: Path) -> tuple[str, ...]:
    label = root / "testannot" / "0001TP_test000.png"
    save(label, stripes(CAMVID_RAW, 8, 12))  # the image is 24x16
    return f"its label map {label} is 12x8", "re-extract the pair or delete it"


def _label_out_of_range(root: Path) -> tuple[str, ...]:
    label = root / "testannot" / "0001TP_test001.png"
    values = stripes(CAMVID_RAW, 16, 24)
    values[3, 4] = 40
    save(label, values)
    return f"label value 40 in {label} is outside", "fix"


def _corrupt_image(root: Path) -> tuple[str, ...]:
    image = root / "test" / "0001TP_test000.png"
    image.write_bytes(image.read_bytes()[:50])
    return (f"cannot read image {image} (",)


@pytest.mark.parametrize("damage", [_size_mismatch, _label_out_of_range, _corrupt_image])
def test_bad_evaluation_pair_is_caught_before_training(damage, tmp_path, run_all,
                                                       one_line_error) -> None:
    """The evaluation split is read only after training: its first pairs are decoded before.
    (The same damage in the training split: tests/benchmark/datasets/test_datasets_errors.py.)"""
    root = write_camvid(tmp_path / "data")
    expected = damage(root)
    before = snapshot(tmp_path)
    proc = run_all("--grid", "camvid", "--seeds", "1", "--results", str(tmp_path / "results"),
                   "--data-root", str(root), "--no-progress")
    one_line_error(proc, 2, *expected)
    assert snapshot(tmp_path) == before, "nothing may be written or trained"


def test_read_only_results_folder_is_found_before_training(results, tiny_smoke, monkeypatch,
                                                           capsys) -> None:
    """A read-only file system under the results folder (simulated: root writes anywhere)."""
    results.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and Path(dir).resolve().is_relative_to(results.resolve()):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert main(["--grid", "smoke", "--results", str(results)] + tiny_smoke) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write in {results} (Read-only file system)")
    assert "make it writable or point --results at another folder" in err
    assert err.count("\n") == 1, err
    _nothing_trained(results)


def test_full_disk_is_found_before_training(results, tiny_smoke, monkeypatch, capsys) -> None:
    """5 MB free: less than a checkpoint of the smoke model (weights + AdamW state)."""
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: usage._replace(free=5_000_000))
    assert main(["--grid", "smoke", "--results", str(results)] + tiny_smoke) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not enough space in "), err
    assert "5.0 MB free" in err and "free some space or point --results at another disk" in err
    assert err.count("\n") == 1, err
    _nothing_trained(results)


def test_checkpoint_estimate_counts_weights_and_optimizer_state() -> None:
    from benchmark.overrides import apply_overrides
    from benchmark.launch.memory import estimate_memory
    from experiments import get_grid

    cell = get_grid("smoke").cells[0]  # AdamW: weights + two moments
    params = estimate_memory(cell, batch=1).params
    assert checks.checkpoint_bytes(cell) == 4 * params["total"] + 8 * params["learnable"]
    sgd = apply_overrides(cell, ["train.optimizer=sgd"])
    assert checks.checkpoint_bytes(sgd) == 4 * params["total"] + 4 * params["learnable"]


def test_failed_record_write_keeps_the_result(smoke_reference, results, tiny_smoke, monkeypatch,
                                              capsys) -> None:
    """The record write fails after the checks (an I/O error; a full disk stops the grid
    instead: tests/faults/test_full_disk.py): the record goes to stderr and a fallback file,
    the message names both paths, the checkpoint stays, the exit code says a run failed."""
    import benchmark.store as store

    shutil.copytree(smoke_reference, results)
    victim = sorted((results / "runs" / "smoke").glob("*/seed0.json"))[-1]
    reference = json.loads(victim.read_text())
    victim.unlink()
    real = store.atomic_write

    def atomic_write(path, data, *args, **kwargs):
        if Path(path) == victim:
            raise OSError(errno.EIO, f"cannot write {path}: Input/output error")
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(store, "atomic_write", atomic_write)
    assert main(["--grid", "smoke", "--results", str(results)] + tiny_smoke) == 1
    err = capsys.readouterr().err
    fallback = next(victim.parent.glob("unsaved-seed0-*.json"))
    line = next(ln for ln in err.splitlines() if "failed:" in ln)
    assert f"cannot write record {victim} (Input/output error); the result is kept in " \
        f"{fallback} and printed above: move it to {victim}" in line, line
    kept = json.loads(fallback.read_text())
    assert kept["metrics"] == reference["metrics"]
    assert kept["weights_sha256"] == reference["weights_sha256"]
    assert '"weights_sha256": "' + reference["weights_sha256"] in err  # the JSON on stderr
    assert not victim.exists()
    from benchmark.store import ResultsLayout, load_records  # the fallback beside it is not a second record

    assert len(load_records(ResultsLayout(results), "smoke")) == 4


def test_a_job_checks_its_run_before_building_the_model(tmp_path, monkeypatch) -> None:
    """Inside a cluster job (RunJob), the same checks run first: a one-line CheckError, no
    model built, nothing written."""
    import types

    import benchmark.launch.executors as executors
    from benchmark.overrides import apply_overrides
    from experiments import get_grid

    monkeypatch.setattr(executors.submitit, "JobEnvironment",
                        lambda: types.SimpleNamespace(num_tasks=1, global_rank=0))
    monkeypatch.setattr(executors, "execute_run", lambda *a, **k: pytest.fail("trained"))
    missing = tmp_path / "nowhere" / "backbone.pth"
    cell = apply_overrides(get_grid("smoke").cells[0], [f"model.pretrained={missing}"])
    with pytest.raises(checks.CheckError) as info:
        executors.RunJob()(cell.to_dict(), 0, str(tmp_path / "results"))
    assert str(info.value).startswith(f"pretrained weights {missing} do not exist")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "results").exists()


def test_unwritable_results_folder_keeps_the_record_in_tmpdir(tmp_path, monkeypatch,
                                                             capsys) -> None:
    """When nothing can be written beside the record either, $TMPDIR takes the result."""
    import benchmark.store as store
    from benchmark.launch.runs import keep_unsaved

    record_path = tmp_path / "results" / "runs" / "smoke" / "softmax-0123456789" / "seed0.json"
    real = store.atomic_write

    def atomic_write(path, data, *args, **kwargs):
        if Path(path).is_relative_to(tmp_path / "results"):
            raise OSError(errno.EROFS, f"cannot write {path}: Read-only file system")
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(store, "atomic_write", atomic_write)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    record = {"status": "done", "metrics": {"miou": 12.5}, "weights_sha256": "ab" * 32}
    line = keep_unsaved(record_path, record, OSError(errno.EROFS, "Read-only file system"))
    kept = tmp_path / "tmp" / "protoseg-unsaved" / "smoke" / "softmax-0123456789" / "seed0.json"
    assert line == (f"cannot write record {record_path} (Read-only file system); the result is "
                    f"kept in {kept} and printed above: move it to {record_path} once the "
                    f"folder is writable")
    assert json.loads(kept.read_text()) == record
    assert json.loads(capsys.readouterr().err) == record


def test_pretrained_none_is_random_init_on_purpose_not_a_missing_file() -> None:
    from benchmark.overrides import apply_overrides
    from experiments import get_grid

    cell = get_grid("smoke").cells[0]
    assert checks.pretrained_problem(apply_overrides(cell, ["model.pretrained=none"])) is None
    missing = checks.pretrained_problem(apply_overrides(cell, ["model.pretrained=/no/such.pth"]))
    assert missing.startswith("pretrained weights /no/such.pth do not exist (model.pretrained")


@pytest.mark.parametrize("damage", ["cut", "size", "not-an-image"])
def test_a_bad_last_evaluation_pair_of_a_large_split_is_caught_by_its_header(
        damage, tmp_path, monkeypatch, capsys) -> None:
    """Issue 24, item 6: only the first two evaluation pairs were decoded before training, so a
    damaged last pair let every run train and then fail. A split larger than a full decode is
    read by headers, sizes and file ends: every pair, no pixel decoded."""
    import benchmark.datasets.base as base

    root = write_camvid(tmp_path / "data", {"train": 2, "val": 1, "test": 6})
    monkeypatch.setattr(checks, "FULL_DECODE_PAIRS", 3)  # 6 pairs: the header path
    monkeypatch.setattr(base, "decode_rgb", lambda p: pytest.fail("an image was decoded"))
    image = root / "test" / "0001TP_test005.png"
    if damage == "cut":
        image.write_bytes(image.read_bytes()[:-20])
        expected = f"image {image} is cut off (no PNG IEND end)"
    elif damage == "size":
        save(root / "testannot" / "0001TP_test005.png", stripes(CAMVID_RAW, 8, 12))
        expected = f"image {image} is 24x16 but its label map"
    else:
        image.write_bytes(b"GIF89a" + b"\0" * 20)
        expected = f"cannot read image {image} ("
    results = tmp_path / "results"
    assert main(["--grid", "camvid", "--seeds", "1", "--results", str(results),
                 "--data-root", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    _nothing_trained(results)
