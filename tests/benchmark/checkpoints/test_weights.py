"""No accidental random init: paper cells without backbone weights are refused before anything
runs (exit 2, one line per backbone); `model.pretrained=none` is the explicit way to train
from scratch; smoke/CPU grids need nothing; the dry run's weights column."""

from __future__ import annotations

from dataclasses import replace

import torch
import torchvision

from benchmark.checkpoints import NONE, load_pretrained, missing_weights, weights_column
from benchmark.cli import main
from benchmark.overrides import apply_overrides
from experiments import get_grid

PAPER_BACKBONES = ("resnet101_d8", "hrnetv2_w48", "swin_b", "mit_b4")


def test_paper_grid_without_weights_names_each_backbone_once() -> None:
    lines = missing_weights(get_grid("table1").cells)
    assert [line.split(":")[0] for line in lines] == list(PAPER_BACKBONES)
    assert "resnet101_v1c-e67eebb6.pth" in lines[0] and "https://download.openmmlab.com" in lines[0]
    assert all("--set model.pretrained=FILE_OR_DIR" in line and "model.pretrained=none" in line
               for line in lines)
    assert missing_weights(get_grid("smoke").cells) == []
    assert missing_weights(get_grid("camvid").cells) == []


def test_run_submission_and_preflight_are_refused_before_anything_runs(tmp_path, capsys) -> None:
    for extra in ([], ["--preflight"], ["--executor", "local"]):
        assert main(["--grid", "table2", "--results", str(tmp_path / "r"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 4 and all(e.startswith("error: ") for e in err)
        assert [e.split(":")[1].strip() for e in err] == list(PAPER_BACKBONES)
    assert not (tmp_path / "r").exists()  # nothing ran, nothing written


def test_none_trains_from_scratch_explicitly(tmp_path, capsys) -> None:
    cells = [apply_overrides(c, [f"model.pretrained={NONE}"]) for c in get_grid("table1").cells]
    assert missing_weights(cells) == []
    assert weights_column(cells[0]) == "none (random init, asked for)"
    args = ["--grid", "table1", "--results", str(tmp_path), "--set", "model.pretrained=none"]
    assert main([*args, "--dry-run"]) == 0
    assert "weights none (random init, asked for)" in capsys.readouterr().out
    from benchmark.launch.checks import pretrained_problem

    assert pretrained_problem(cells[0]) is None  # 'none' is not a path that must exist
    report = load_pretrained(torch.nn.Linear(2, 2), NONE)
    assert report.loaded == 0 and "as requested" in report.summary()


def test_a_folder_without_the_file_is_missing_and_an_existing_file_is_counted(tmp_path) -> None:
    cell = get_grid("table1").cells[0]
    empty = replace(cell, model=replace(cell.model, pretrained=str(tmp_path)))
    assert missing_weights([empty]) == [missing_weights([empty])[0]]
    assert f"no checkpoint at {tmp_path / 'resnet101_v1c-e67eebb6.pth'}" in (
        missing_weights([empty])[0])
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18-f37072fd.pth")
    small = apply_overrides(get_grid("smoke").cells[0], [
        "model.backbone=resnet18_d8", "model.decoder=fcn", f"model.pretrained={tmp_path}"])
    column = weights_column(small)
    assert column.startswith("resnet18-f37072fd.pth sha256 ") and column.endswith(
        ", 100/100 tensors (torchvision/timm)")
