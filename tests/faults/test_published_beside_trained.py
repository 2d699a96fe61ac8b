"""A published checkpoint's evaluation never replaces a trained run (and the other way round):
`--checkpoint` on a results folder that holds trained runs of the same cells keeps every trained
record as it was, writes the evaluation to its own file, and the table shows both rows, each
labelled as what it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.store import ResultsLayout, load_records, read_record


def _softmax_weights(results: Path, folder: Path) -> Path:
    """The trained Softmax cell's final weights saved as `Softmax.pth` (a whole-model file that
    `--checkpoint DIR` finds by the cell's row)."""
    (final,) = (results / "checkpoints" / "smoke").glob("softmax-*/seed0/final.pt")
    folder.mkdir()
    torch.save(torch.load(final, weights_only=True), folder / "Softmax.pth")
    return folder


def test_checkpoint_evaluation_keeps_the_trained_record(smoke_reference, tmp_path, run_all,
                                                        tiny_smoke) -> None:
    results = tmp_path / "results"
    shutil.copytree(smoke_reference, results)
    trained = {p: p.read_bytes() for p in (results / "runs" / "smoke").glob("*/seed*.json")}
    assert len(trained) == 5
    folder = _softmax_weights(results, tmp_path / "mine")

    proc = run_all("--grid", "smoke", "--results", str(results), "--checkpoint", str(folder),
                   *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in trained} == trained  # byte for byte, history and all
    (evaluation,) = (results / "runs" / "smoke").glob("softmax-*/published.json")
    record = read_record(evaluation)
    assert record.kind == "published-checkpoint" and record.checkpoint["format"] == "suite"
    kinds = sorted(r.kind for r in load_records(ResultsLayout(results), "smoke"))
    assert kinds == ["published-checkpoint"] + ["trained"] * 5
    table = (results / "tables" / "smoke.md").read_text()
    assert "| Softmax " in table and "| Softmax (checkpoint) " in table

    # and the other way round: training again (--force) leaves the evaluation as it was
    before = evaluation.read_bytes()
    proc = run_all("--grid", "smoke", "--results", str(results), "--force", *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert evaluation.read_bytes() == before


def test_an_evaluation_an_older_version_wrote_at_seed0_is_moved_not_overwritten(
        smoke_reference, tmp_path, run_all, tiny_smoke) -> None:
    results = tmp_path / "results"
    shutil.copytree(smoke_reference, results)
    (seed0,) = (results / "runs" / "smoke").glob("softmax-*/seed0.json")
    old = json.loads(seed0.read_text())
    old.update(kind="published-checkpoint", checkpoint={"file": "Softmax.pth", "sha256": "ab"},
               history=[])
    seed0.write_text(json.dumps(old))

    proc = run_all("--grid", "smoke", "--results", str(results), *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 to run" in proc.stdout  # the evaluation does not count as the trained run
    assert read_record(seed0).kind == "trained"
    assert read_record(seed0.parent / "published.json").checkpoint["file"] == "Softmax.pth"


def test_a_file_saved_by_mmsegmentations_runner_is_evaluated(smoke_reference, tmp_path,
                                                             run_all, tiny_smoke) -> None:
    """Issue 24, item 8: a researcher's own `iter_N.pth` from MMSegmentation's runner (meta,
    message_hub, optimizer beside the weights, written by mmengine's `save_checkpoint`) was
    refused by the safe loader; it is evaluated, with nothing of it unpickled but tensors and
    plain meta."""
    mmengine = pytest.importorskip("mmengine", reason="the fidelity extra is not installed")
    import numpy as np
    from mmengine.config import ConfigDict
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint

    (final,) = (smoke_reference / "checkpoints" / "smoke").glob("softmax-*/seed0/final.pt")
    hub = MessageHub.get_instance("protoseg-faults-runner")
    hub.update_scalar("train/loss", np.float64(0.25))
    folder = tmp_path / "mine"
    folder.mkdir()
    save_checkpoint({"meta": {"iter": 6, "seed": np.int64(0), "mmengine_version":
                              mmengine.__version__, "dataset_meta": ConfigDict(classes=("a",))},
                     "state_dict": torch.load(final, weights_only=True),
                     "message_hub": hub.state_dict(), "optimizer": {"state": {}}},
                    str(folder / "Softmax.pth"))
    results = tmp_path / "results"
    proc = run_all("--grid", "smoke", "--results", str(results), "--checkpoint", str(folder),
                   *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (evaluation,) = (results / "runs" / "smoke").glob("softmax-*/published.json")
    record = read_record(evaluation)
    (trained,) = (smoke_reference / "runs" / "smoke").glob("softmax-*/seed0.json")
    reference = read_record(trained)
    assert record.checkpoint["format"] == "suite" and record.metrics == reference.metrics
