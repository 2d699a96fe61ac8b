"""Live progress: the heartbeat file and the TensorBoard scalars of a run (issue 15)."""

from __future__ import annotations

import json
import os
import socket

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmark.overrides import apply_overrides
from benchmark.train.engine import train_and_evaluate
from benchmark.train.telemetry import Heartbeat, prototype_scalars
from experiments.smoke import smoke

TINY = ["train.iters=6", "train.batch_size=4", "data.train_images=16", "data.val_images=4",
        "data.image_size=32", "train.log_every=2"]


def read_heartbeat(path):
    return json.loads(path.read_text())


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_rate_limits_and_estimates(tmp_path) -> None:
    clock, path = FakeClock(), tmp_path / "hb" / "heartbeat.json"
    beat = Heartbeat(path, total=100, batch_size=8, start_step=20, every_s=5.0, clock=clock)
    beat.beat(20)  # first beat: always written, no rate yet
    first = read_heartbeat(path)
    assert first["step"] == 20 and first["img_per_s"] is None and first["eta_s"] is None
    clock.now += 2.0
    beat.beat(30)  # 2 s later: not due
    assert read_heartbeat(path)["step"] == 20
    clock.now += 4.0
    beat.beat(32)  # 6 s after the start, 12 steps of 8 images: 16 images/s
    now = read_heartbeat(path)
    assert now["step"] == 32 and now["total"] == 100 and now["phase"] == "training"
    assert now["img_per_s"] == 16.0 and now["eta_s"] == (100 - 32) * 8 / 16.0
    assert now["pid"] == os.getpid() and now["host"] == socket.gethostname()
    beat.beat(100, "evaluating", force=True)  # forced: written at once, no training left
    assert read_heartbeat(path)["phase"] == "evaluating" and read_heartbeat(path)["eta_s"] is None
    assert not list(path.parent.glob("*.tmp")), "written atomically, no temp file left"
    Heartbeat(None, 1, 1, 0).beat(0, force=True)  # no path: nothing written, no error
    assert [p.name for p in path.parent.iterdir()] == ["heartbeat.json"]


def test_an_unwritable_heartbeat_warns_once_and_the_run_goes_on(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    beat = Heartbeat(blocker / "heartbeat.json", total=10, batch_size=2, start_step=0)
    beat.beat(0, force=True)  # its folder is a file: the write fails
    beat.beat(1, force=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: heartbeat off: ")
    assert str(blocker) in err[0]


def test_run_writes_heartbeat_and_tensorboard_scalars(tmp_path) -> None:
    cell = apply_overrides(smoke().cells[-1], TINY)  # prototype head: its own loss terms
    hb, logs = tmp_path / "heartbeat.json", tmp_path / "logs"
    seen = []

    def on_step(step: int) -> None:
        if step == 2:  # during training the file already tells where the run is
            seen.append(json.loads(hb.read_text()))

    result = train_and_evaluate(cell, seed=0, progress=False, heartbeat_path=hb, log_dir=logs,
                                on_step=on_step)
    assert seen and seen[0]["phase"] == "training" and seen[0]["total"] == 6
    assert 0 <= seen[0]["step"] <= 2 and seen[0]["pid"] == os.getpid()
    final = json.loads(hb.read_text())
    assert final["phase"] == "finished" and final["step"] == final["total"] == 6
    assert final["img_per_s"] > 0 and final["host"] == socket.gethostname()

    events = list(logs.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard events file under {logs}"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    terms = {f"train/{k}" for k in result.history[-1] if k not in ("step", "lr")}
    expected = {"train/lr", "train/images_per_s", "eval/miou", "eval/aacc",
                "prototypes/pairwise_cosine"}
    assert expected | terms <= tags, tags
    assert [e.step for e in acc.Scalars("train/loss")] == [0, 2, 4, 5]  # log_every=2 + last
    assert acc.Scalars("eval/miou")[0].value == pytest.approx(result.metrics.miou, rel=1e-6)


def test_prototype_scalars_only_for_heads_with_several_prototypes() -> None:
    import torch

    assert prototype_scalars(torch.nn.Linear(2, 2)) == {}  # no head at all

    class Head(torch.nn.Module):
        def __init__(self, vectors):
            super().__init__()
            self.vectors = vectors

        def prototype_vectors(self):
            return self.vectors

    model = torch.nn.Module()
    same = torch.nn.functional.normalize(torch.ones(3, 2, 4), dim=-1)
    model.head = Head(same)  # two identical prototypes per class: collapsed
    assert prototype_scalars(model) == {"prototypes/pairwise_cosine": pytest.approx(1.0)}
    model.head = Head(same[:, :1])  # one prototype per class: nothing to compare
    assert prototype_scalars(model) == {}


def test_heartbeat_interval_comes_from_the_environment(monkeypatch) -> None:
    from benchmark.train.telemetry import HEARTBEAT_ENV, HEARTBEAT_EVERY_S, heartbeat_interval

    monkeypatch.setenv(HEARTBEAT_ENV, "0.25")
    assert heartbeat_interval() == 0.25
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv(HEARTBEAT_ENV, bad)
        assert heartbeat_interval() == HEARTBEAT_EVERY_S
    monkeypatch.delenv(HEARTBEAT_ENV)
    assert heartbeat_interval() == HEARTBEAT_EVERY_S
