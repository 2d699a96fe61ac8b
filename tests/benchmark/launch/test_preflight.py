"""Preflight: one real training step and evaluation forward per cell, the table it prints, the
memory estimate of `--dry-run`, and `run_all.py --preflight`."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from benchmark.config import Cell, DataSpec, HeadSpec, ModelSpec, TrainSpec
from benchmark.launch.memory import estimate_memory
from benchmark.launch.preflight import (PARAM_TOLERANCE_M, format_preflight, preflight_cell,
                                        result_line)
from experiments import get_grid
from methods import build_model, count_params

DATA = DataSpec(name="synthetic", num_classes=5, crop_size=48, crop_width=64)
FCN = ModelSpec(backbone="resnet18_d8", decoder="fcn", decoder_channels=32, aux_weight=0.4,
                head=HeadSpec(name="prototype", num_prototypes=3, projection="none"))


def cell(model: ModelSpec = FCN, paper_params_m: float | None = None, **kw) -> Cell:
    return Cell(grid="t", row="FCN-18", column="ResNet-18", data=DATA, model=model,
                train=TrainSpec(optimizer="sgd"), paper_params_m=paper_params_m, **kw)


def test_training_step_runs_every_loss_and_moves_the_prototypes(monkeypatch) -> None:
    import benchmark.train.engine as engine

    entered, step_kernels = [], engine.step_kernels
    monkeypatch.setattr(engine, "step_kernels",  # the kernels the training loop would use
                        lambda train, device: entered.append(device.type)
                        or step_kernels(train, device))
    with torch.device("meta"):
        learnable = count_params(build_model(FCN, 5))["learnable"]
    result = preflight_cell(cell(paper_params_m=round(learnable / 1e6, 2)), batch=2)
    assert result.error is None, result.error
    assert result.losses == ["aux", "ce", "ppc", "ppd"]
    assert result.prototypes_moved is True
    assert result.crop == (48, 64) and result.batch == 2
    assert result.total - result.learnable == 5 * 3 * 32  # the prototype buffer
    assert abs(result.params_diff_m) < 0.01 and result.status == "ok"
    assert result.step_s > 0 and result.eval_s > 0 and result.peak_bytes > 0
    assert entered == ["cpu"]


def test_parameter_mismatch_and_failures_are_flagged() -> None:
    off = preflight_cell(replace(cell(paper_params_m=10.0),
                                 model=replace(FCN, backbone="mit_b0", decoder="mlp",
                                               aux_weight=0.0)))
    assert off.error is None and off.losses == ["ce", "ppc", "ppd"]
    assert abs(off.params_diff_m) > PARAM_TOLERANCE_M
    assert off.status.startswith("params off by")
    missing = preflight_cell(cell(model=replace(FCN, pretrained="/nonexistent/r18.pth")))
    assert missing.error.startswith("PretrainedError: model.pretrained: no checkpoint at "
                                    "/nonexistent/r18.pth")
    assert missing.status == "error" and math.isnan(missing.step_s)
    text = format_preflight([off, missing])
    assert text.splitlines()[0].startswith("| Cell")
    assert "| error" in text and "params off by" in text
    assert "FCN-18: PretrainedError" in text
    assert result_line(missing) == f"error: step – s, eval – s, peak memory –; {missing.error}"


def test_preflight_loads_a_local_checkpoint(tmp_path) -> None:
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    result = preflight_cell(cell(model=replace(FCN, pretrained=str(tmp_path / "r18.pth"))))
    assert result.error is None
    assert result.pretrained.startswith("pretrained: loaded 100/100 tensors")


def test_memory_estimate_grows_with_batch_and_fits_a_16gb_card_for_fcn() -> None:
    small = estimate_memory(cell(), batch=1)
    assert estimate_memory(cell(), batch=8).gb > small.gb > 0.5
    fcn = get_grid("table1").cells[0]  # FCN-R101-D8, 512x512, 4 images per GPU (MMSeg: ~12 GB)
    est = estimate_memory(fcn)
    assert est.batch == 4 and 8 < est.gb <= 16 and est.memory_class == "<=16GB"
    assert abs(est.params["learnable"] / 1e6 - 68.6) < 0.3


def test_memory_estimate_counts_ddp_buckets_with_several_processes() -> None:
    """One process has no DDP; several keep a second copy of the gradients in DDP's buckets."""
    fcn = get_grid("table1").cells[0]  # FCN-R101-D8 on 4 GPUs
    four = estimate_memory(fcn)
    one = estimate_memory(fcn, batch=four.batch, gpus=1)
    assert fcn.resources.gpus == 4 and four.batch == one.batch
    assert four.gb - one.gb == pytest.approx(one.params["learnable"] * 4 * 1.1 / 1e9)



def test_cli_preflight_prints_the_table(tmp_path, capsys) -> None:
    from benchmark.cli import main

    args = ["--grid", "smoke", "--preflight", "--results", str(tmp_path),
            "--set", "data.image_size=32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("preflight [") == 5
    done = [line for line in out.splitlines() if line.startswith("  -> ")]  # as each cell ends
    assert len(done) == 5 and all(line.startswith("  -> ok: step ") for line in done)
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 5 and all(line.rstrip().endswith("| ok       |") or "Status" in line
                                        for line in table)
    assert not (tmp_path / "runs").exists()
