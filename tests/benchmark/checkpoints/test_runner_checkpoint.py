"""Whole-model checkpoints saved by MMSegmentation's training runner (issue 24, item 8): the
file mmengine's `save_checkpoint` writes for a runner ({meta, state_dict, message_hub,
optimizer}, with mmengine's HistoryBuffer and ConfigDict and numpy objects beside the weights)
loads and evaluates without unrestricted unpickling; a file that would run code is refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from checkpoint_writers import logits, model, to_mmseg_zoo

from benchmark.checkpoints import CheckpointError
from benchmark.checkpoints.whole import load_checkpoint

mmengine = pytest.importorskip("mmengine", reason="the fidelity extra (mmengine) is not installed")
X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def runner_checkpoint(state_dict: dict, path) -> None:
    """What `Runner.save_checkpoint` writes: meta (cfg text, seed, iteration, dataset_meta as a
    ConfigDict), the weights, the MessageHub's state (HistoryBuffers of numpy values) and the
    optimizer's, saved by mmengine's own `save_checkpoint`."""
    from mmengine.config import ConfigDict
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint

    hub = MessageHub.get_instance("protoseg-runner-test")
    for it in range(3):
        hub.update_scalar("train/loss", np.float64(1.0 / (it + 1)))
        hub.update_scalar("train/lr", 0.01)
    hub.update_info("iter", 160000)
    meta = {"epoch": 0, "iter": 160000, "seed": np.int64(1234), "experiment_name": "fcn_r18",
            "cfg": "model = dict(type='EncoderDecoder')", "mmengine_version": "0.10.7",
            "dataset_meta": ConfigDict(classes=("a", "b", "c"), palette=[[1, 2, 3]] * 3),
            "hook_msgs": {"best_score": np.float64(0.41)}}
    save_checkpoint({"meta": meta, "state_dict": state_dict, "message_hub": hub.state_dict(),
                     "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}}, str(path))


def test_a_runner_checkpoint_loads_safely_and_evaluates(tmp_path) -> None:
    source = model("resnet18_d8", "fcn", seed=0)
    target = model("resnet18_d8", "fcn", seed=1)
    path = tmp_path / "iter_160000.pth"
    runner_checkpoint(to_mmseg_zoo(source, "fcn")["state_dict"], path)
    with pytest.raises(Exception, match="Weights only load failed"):  # why it was refused
        torch.load(path, weights_only=True)
    report = load_checkpoint(target, path)
    assert report.format == "mmseg-zoo" and report.unexpected == [] and len(report.sha256) == 64
    torch.testing.assert_close(logits(target, X), logits(source, X), atol=1e-5, rtol=0)


class _Call:
    """An object whose unpickling calls `function(*args)`: what a malicious file does."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("call", ["os.system", "eval", "subprocess.call"])
def test_a_file_that_would_run_code_is_refused(tmp_path, call) -> None:
    import subprocess

    marker = tmp_path / "ran"
    payload = {"os.system": _Call(os.system, f"touch {marker}"),
               "eval": _Call(eval, f"open({str(marker)!r}, 'w').close()"),
               "subprocess.call": _Call(subprocess.call, ["touch", str(marker)])}[call]
    state = to_mmseg_zoo(model("resnet18_d8", "fcn", seed=0), "fcn")["state_dict"]
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"x": payload}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"--checkpoint: .*evil.pth asks to call "
                                              r"\S+ while it loads.*refused"):
        load_checkpoint(model("resnet18_d8", "fcn", seed=1), path)
    assert not marker.exists(), "the file ran code"
