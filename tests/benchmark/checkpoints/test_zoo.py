"""`--grid zoo`: published checkpoints evaluated instead of trained. With one small zoo-format
file present (a tiny variant of a zoo cell on generated data) and the rest missing: one
evaluated row with a `published-checkpoint` record, seven `missing` rows naming the download,
exit 0; a broken file is a failed row and exit 1."""

from __future__ import annotations

from pathlib import Path

import torch
from checkpoint_writers import TINY_ZOO, TINY_ZOO_ROW, write_tiny_zoo

from benchmark.checkpoints import sha256_of
from benchmark.cli import main
from benchmark.overrides import apply_overrides
from benchmark.datasets import build_dataset
from benchmark.store import ResultsLayout, load_records
from benchmark.train.evaluate import metrics_from_confusion, predict_confusion
from experiments import get_grid
from experiments.zoo import PUBLISHED, published_for
from methods import build_model

TINY = list(TINY_ZOO)
SEGFORMER_ADE = TINY_ZOO_ROW
GUIDE = Path(__file__).resolve().parents[3] / "docs" / "checkpoints.md"


def _args(folder, results) -> list[str]:
    args = ["--grid", "zoo", "--checkpoint", str(folder), "--results", str(results),
            "--no-progress"]
    for override in TINY:
        args += ["--set", override]
    return args


def test_zoo_lists_every_published_checkpoint_of_the_issue() -> None:
    grid = get_grid("zoo")
    assert {c.row: c.paper_miou for c in grid.cells} == {
        "fcn_r101-d8_4xb4-160k_ade20k-512x512": 39.91, "fcn_hr48_4xb4-160k_ade20k-512x512": 42.02,
        "swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512": 47.99,
        SEGFORMER_ADE: 48.46, "fcn_r101-d8_4xb2-80k_cityscapes-512x1024": 75.13,
        "fcn_hr48_4xb2-160k_cityscapes-512x1024": 80.65,
        "segformer_mit-b4_8xb1-160k_cityscapes-1024x1024": 81.89,
        "hrnet_w48_proto_lr1x_hrnet_proto_80k_latest": 80.1}
    for cell in grid.cells:
        published = published_for(cell)
        assert published.origin.startswith("https://") and published.protocol
        assert cell.eval.batch_size == 1 and not cell.train.recipe  # no ImageNet weights asked
    assert PUBLISHED[SEGFORMER_ADE].source == "mmseg-zoo"


def test_one_present_checkpoint_is_evaluated_the_rest_are_missing_rows(tmp_path, capsys) -> None:
    cell = apply_overrides(next(c for c in get_grid("zoo").cells if c.row == SEGFORMER_ADE), TINY)
    file = write_tiny_zoo(str(tmp_path / "zoo"))  # what the README's demo writes
    torch.manual_seed(0)
    source = build_model(cell.model, 4).eval()  # the same weights
    assert main(_args(tmp_path / "zoo", tmp_path / "results")) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("zoo: ")]
    assert len(lines) == 8
    assert sum(": evaluated " in r for r in lines) == 1
    assert sum(": missing: " in r for r in lines) == 7
    assert "fcn_r101-d8_512x512_160k_ade20k_*.pth" in out and "configs/fcn" in out
    (record,) = load_records(ResultsLayout(tmp_path / "results"), "zoo")
    assert record.kind == "published-checkpoint" and record.cell_key == cell.key
    assert record.checkpoint["sha256"] == sha256_of(file)
    assert record.checkpoint["published_miou"] == 48.46
    assert record.checkpoint["source"].endswith("configs/segformer")
    cm = predict_confusion(source, build_dataset(cell.data, cell.data.val_split), 4, 255, 1,
                           progress=False)
    assert record.miou == metrics_from_confusion(cm)["miou"]  # the file's model, evaluated
    # the table is regenerated from the records: published vs this suite, the rest missing
    table = (tmp_path / "results" / "tables" / "zoo.md").read_text(encoding="utf-8")
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("|")]
                                          for line in table.splitlines() if line.startswith("| "))}
    row = rows[SEGFORMER_ADE]
    assert row[3:6] == ["48.46", f"{record.miou:.2f}", f"{record.miou - 48.46:+.2f}"]
    assert row[7].startswith(Path(file).name) and sha256_of(file)[:12] in row[7]
    assert sum(r[7] == "missing" for r in rows.values()) == 7


def test_a_broken_checkpoint_is_a_failed_row_and_exit_1(tmp_path, capsys) -> None:
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / f"{SEGFORMER_ADE}.pth").write_text("not a checkpoint")
    assert main(_args(tmp_path / "zoo", tmp_path / "results")) == 1
    captured = capsys.readouterr()
    assert ": failed: CheckpointError: --checkpoint: cannot read" in captured.out
    assert "error: 1 checkpoint(s) failed" in captured.err


def test_the_guides_demo_uses_the_tested_commands() -> None:
    """docs/checkpoints.md runs what this file tests: the same writer and overrides."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index("## Check the suite against published checkpoints first"):]
    end = section.find("\n## ", 5)  # the next section, if any
    section = section if end < 0 else section[:end]
    assert "write_tiny_zoo" in section and "--grid zoo --checkpoint demo_checkpoints" in section
    assert all(f"--set {o}" in section for o in TINY)


def test_checkpoint_flag_evaluates_any_grid_from_the_suites_own_weights(tmp_path, capsys) -> None:
    """`--checkpoint DIR` on a grid that is not the zoo: each cell's file is found by its row
    (or key); the suite's own state dict (a run's final.pt) is a whole-model format too."""
    overrides = ["data.image_size=32", "data.val_images=4", "data.train_images=4"]
    cell = apply_overrides(get_grid("smoke").cells[0], overrides)  # "Softmax"
    torch.manual_seed(0)
    source = build_model(cell.model, cell.data.num_classes).eval()
    (tmp_path / "mine").mkdir()
    torch.save({"module." + k: v for k, v in source.state_dict().items()},
               tmp_path / "mine" / "Softmax.pth")
    args = ["--grid", "smoke", "--checkpoint", str(tmp_path / "mine"), "--results",
            str(tmp_path / "results"), "--no-progress"]
    assert main(args + [a for o in overrides for a in ("--set", o)]) == 0
    out = capsys.readouterr().out
    assert out.count(": evaluated Softmax.pth") == 1 and out.count(": missing: no ") == 4
    assert "Softmax (checkpoint)" in (tmp_path / "results" / "tables" / "smoke.md").read_text()
    (record,) = load_records(ResultsLayout(tmp_path / "results"), "smoke")
    assert record.kind == "published-checkpoint" and record.checkpoint["format"] == "suite"
    cm = predict_confusion(source, build_dataset(cell.data, cell.data.val_split),
                           cell.data.num_classes, 255, 1, progress=False)
    assert record.miou == metrics_from_confusion(cm)["miou"]


def test_an_unwritable_record_keeps_the_evaluation(tmp_path, capsys, monkeypatch) -> None:
    """A full disk at the record write: the evaluated record is kept beside it (the CLI's
    fallback), one line says where and names the device, the command exits 1."""
    import errno

    import benchmark.launch.runs as runs

    def full_disk(path, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    write_tiny_zoo(str(tmp_path / "zoo"))
    monkeypatch.setattr(runs, "write_record", full_disk)
    assert main(_args(tmp_path / "zoo", tmp_path / "results")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on device ") and err.count("\n") == 1, err
    assert "the result is kept in" in err
    kept = list((tmp_path / "results" / "runs" / "zoo").glob("*/unsaved-published-*.json"))
    assert len(kept) == 1 and '"published-checkpoint"' in kept[0].read_text()
