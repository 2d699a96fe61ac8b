"""Bad input gives one clear error naming the file and the fix, exit code != 0, and writes
nothing: missing root, wrong layout, image without label, size mismatch, label value out of
range, corrupt image; through the check command, the data set itself and run_all.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures_data import (CAMVID_RAW, save, snapshot, stripes, write_camvid, write_cityscapes,
                           write_coco_stuff10k)

from benchmark.cli import main as run_all
from benchmark.config import DataSpec
from benchmark.datasets import DataError, build_dataset
from benchmark.datasets.__main__ import main as datasets_cli

STEM = "0001TP_train001"


def _missing_root(tmp: Path) -> tuple[Path, str]:
    return tmp / "nowhere", f"data root {tmp / 'nowhere'} does not exist; point --data-root"


def _wrong_layout(tmp: Path) -> tuple[Path, str]:
    root = write_camvid(tmp)
    for f in (root / "trainannot").iterdir():
        f.unlink()
    (root / "trainannot").rmdir()
    return tmp, f"{root} does not look like CamVid: it lacks trainannot/; expected camvid/"


def _image_without_label(tmp: Path) -> tuple[Path, str]:
    root = write_camvid(tmp)
    (root / "trainannot" / f"{STEM}.png").unlink()
    return tmp, (f"image {root / 'train' / f'{STEM}.png'} has no label map (expected "
                 f"{root / 'trainannot' / f'{STEM}.png'}); restore the label map or delete")


def _size_mismatch(tmp: Path) -> tuple[Path, str]:
    root = write_camvid(tmp)
    save(root / "trainannot" / f"{STEM}.png", stripes(CAMVID_RAW, 8, 12))
    return tmp, (f"image {root / 'train' / f'{STEM}.png'} is 24x16 but its label map "
                 f"{root / 'trainannot' / f'{STEM}.png'} is 12x8 (WxH); they must match")


def _bad_label_value(tmp: Path) -> tuple[Path, str]:
    root = write_camvid(tmp)
    label = stripes(CAMVID_RAW, 16, 24)
    label[5, 7] = 37
    save(root / "trainannot" / f"{STEM}.png", label)
    return tmp, (f"label value 37 in {root / 'trainannot' / f'{STEM}.png'} is outside [0, 11) "
                 f"and is not the ignore value: CamVid raw labels take the values 0-11; fix")


def _corrupt_image(tmp: Path) -> tuple[Path, str]:
    root = write_camvid(tmp)
    path = root / "train" / f"{STEM}.png"
    path.write_bytes(path.read_bytes()[:60])  # truncated
    return tmp, f"cannot read image {path} ("


LAYOUT_ERRORS = {"missing root": _missing_root, "wrong layout": _wrong_layout,
                 "image without label": _image_without_label}
CONTENT_ERRORS = {"size mismatch": _size_mismatch, "label value": _bad_label_value,
                  "corrupt image": _corrupt_image}


@pytest.mark.parametrize("case", list(LAYOUT_ERRORS) + list(CONTENT_ERRORS))
def test_check_command_names_the_file_and_fix(case, tmp_path, capsys, monkeypatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    root, message = {**LAYOUT_ERRORS, **CONTENT_ERRORS}[case](data)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert datasets_cli(["check", "camvid", "--root", str(root), "--full"]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.strip().startswith("error")]
    assert len(errors) == 1, out
    assert message in errors[0], out
    assert out.rstrip().endswith("FAILED: 1 problem(s)")
    assert snapshot(tmp_path) == before, "the check must not write anything"


@pytest.mark.parametrize("case", list(LAYOUT_ERRORS))
def test_run_all_stops_before_any_job(case, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    root, message = LAYOUT_ERRORS[case](data)
    results = tmp_path / "results"
    before = snapshot(tmp_path)
    assert run_all(["--grid", "camvid", "--data-root", str(root), "--results", str(results),
                    "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert snapshot(tmp_path) == before and not results.exists()


@pytest.mark.parametrize("case", list(CONTENT_ERRORS))
def test_the_data_set_raises_on_the_bad_pair(case, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    root, message = CONTENT_ERRORS[case](data)
    ds = build_dataset(DataSpec(name="camvid", root=str(root), num_classes=11), "train")
    ds.load(0)  # the other pairs are fine
    with pytest.raises(DataError) as info:
        ds[(1, 0)]
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cityscapes_colour_label_and_unknown_id(tmp_path) -> None:
    root = write_cityscapes(tmp_path)
    label = next((root / "gtFine" / "train").rglob("*_gtFine_labelIds.png"))
    save(label, np.zeros((8, 16, 3), np.uint8))
    ds = build_dataset(DataSpec(name="cityscapes", root=str(root), num_classes=19), "train")
    index = [p.label for p in ds.source.pairs].index(label)
    with pytest.raises(DataError, match=f"label map {label} has 3 channels; expected a single"):
        ds.load(index)
    save(label, np.full((8, 16), 40, np.uint8))
    with pytest.raises(DataError, match="label value 40 .* take the values 0-33, 255"):
        ds.load(index)


def test_coco_stuff_corrupt_annotation_is_reported_by_the_check(tmp_path, capsys) -> None:
    root = write_coco_stuff10k(tmp_path)
    bad = root / "annotations" / "COCO_test2014_000000000002.mat"
    bad.write_bytes(b"garbage, not a MATLAB file")
    before = snapshot(tmp_path)
    assert datasets_cli(["check", "coco_stuff10k", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.strip().startswith("error")]
    assert len(errors) == 1 and f"test: cannot read annotation {bad} (" in errors[0], out
    assert snapshot(tmp_path) == before
