"""Learning-rate schedules (benchmark/train/optim.py): the `poly` style keeps the suite's
original values exactly; the `mmengine` style's landmarks (warm-up end, poly start, floor)."""

from __future__ import annotations

import pytest
import torch

from benchmark.config import TrainSpec
from benchmark.train.optim import apply_lr, lr_at, mmengine_lr, poly_lr, poly_warmup_factor


def test_poly_style_is_bitwise_the_original_formula() -> None:
    t = TrainSpec(iters=240, lr=1e-3, warmup_iters=20, optimizer="adamw")  # the smoke recipe
    for step in (0, 1, 19, 20, 100, 239):
        original = t.lr * poly_warmup_factor(step, t.iters, t.poly_power, t.warmup_iters,
                                             t.warmup_ratio)
        assert lr_at(step, t.lr, t) == original  # exact: existing records keep their runs


def test_poly_style_with_a_floor_is_mmcv_poly() -> None:
    # mmcv 0.x PolyLrUpdaterHook: (base - min) * (1 - progress / max) ** power + min
    for step in (0, 500, 999):
        want = (0.01 - 1e-4) * (1 - step / 1000) ** 0.9 + 1e-4
        assert poly_lr(step, 0.01, 1000, 0.9, 1e-4) == pytest.approx(want, rel=1e-15)
    assert poly_lr(1000, 0.01, 1000, 0.9, 1e-4) == pytest.approx(1e-4, rel=1e-15)


def test_mmengine_sgd_schedule_ends_at_its_floor() -> None:
    t = TrainSpec(iters=160_000, lr=0.01, lr_schedule="mmengine", min_lr=1e-4)
    assert lr_at(0, 0.01, t) == 0.01
    assert lr_at(159_999, 0.01, t) == pytest.approx(1e-4, rel=1e-12)  # the suite had 2.1e-7
    assert lr_at(80_000, 0.01, t) == pytest.approx(1e-4 + 0.0099 * (79_999 / 159_999) ** 0.9)


def test_mmengine_adamw_schedule_warms_up_then_decays_from_the_warmup_end() -> None:
    t = TrainSpec(iters=160_000, lr=6e-5, optimizer="adamw", poly_power=1.0, warmup_iters=1500,
                  lr_schedule="mmengine")
    assert lr_at(0, 6e-5, t) == pytest.approx(6e-5 * 1e-6, rel=1e-12)
    assert lr_at(1499, 6e-5, t) == pytest.approx(6e-5, rel=1e-12)  # full lr: last warm-up step
    assert lr_at(1500, 6e-5, t) == pytest.approx(6e-5, rel=1e-12)  # poly starts at its value
    assert lr_at(1501, 6e-5, t) == pytest.approx(6e-5 * (1 - 1 / 158_499), rel=1e-12)
    assert lr_at(159_999, 6e-5, t) == 0.0
    # per-group base lr (SegFormer's decode head x10): the whole schedule scales with it
    assert lr_at(5000, 6e-4, t) == pytest.approx(10 * lr_at(5000, 6e-5, t), rel=1e-12)


def test_mmengine_schedule_edges() -> None:
    assert mmengine_lr(0, 1.0, 1) == 1.0  # a one-step run: PolyLR has no span to decay over
    assert mmengine_lr(0, 1.0, 10, warmup_iters=1, warmup_ratio=0.5) == 0.5
    assert mmengine_lr(50, 1.0, 10, min_lr=0.1) == pytest.approx(0.1)  # past the end: the floor


def test_apply_lr_sets_each_group_from_its_base_lr() -> None:
    t = TrainSpec(iters=100, lr=0.01, lr_schedule="mmengine", min_lr=1e-4)
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "base_lr": 0.01}, {"params": [b], "base_lr": 0.1}],
                          lr=0.01)
    logged = apply_lr(opt, t, 50)
    assert logged == lr_at(50, 0.01, t) == opt.param_groups[0]["lr"]
    assert opt.param_groups[1]["lr"] == lr_at(50, 0.1, t)


def test_a_run_uses_the_cells_schedule_groups_loss_and_resize(monkeypatch) -> None:
    """Wiring: a tiny run logs the mmengine-style lr, builds SegFormer's groups, averages the
    cross-entropy over all pixels and resizes evaluation logits via the input size."""
    import torch.nn.functional as F

    import benchmark.train.evaluate as evaluate
    import benchmark.train.optim as optim
    from benchmark.config import Cell, DataSpec, EvalSpec, ModelSpec
    from benchmark.train.engine import train_and_evaluate

    seen: dict[str, list] = {"groups": [], "reduction": [], "resize": []}
    real_groups, real_ce, real_up = optim.param_groups, F.cross_entropy, evaluate.upsample_logits
    monkeypatch.setattr(optim, "param_groups", lambda model, cell: (
        seen["groups"].append(cell.train.param_groups), real_groups(model, cell))[1])
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: (
        seen["reduction"].append(k.get("reduction", "mean")), real_ce(*a, **k))[1])
    monkeypatch.setattr(evaluate, "upsample_logits", lambda *a: (
        seen["resize"].append(a[3]), real_up(*a))[1])
    train = TrainSpec(iters=3, batch_size=2, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                      warmup_iters=1, lr_schedule="mmengine", min_lr=1e-5,
                      param_groups="segformer", ce_average="all_pixels", log_every=1,
                      num_workers=0)
    cell = Cell("g", "x", data=DataSpec(num_classes=3, image_size=32, train_images=4,
                                        val_images=2),
                model=ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=16),
                train=train, eval=EvalSpec(batch_size=2, logit_resize="via_input"))
    result = train_and_evaluate(cell, seed=0, progress=False)
    assert [h["lr"] for h in result.history] == [lr_at(s, 1e-3, train) for s in range(3)]
    assert seen["groups"] == ["segformer"]
    assert seen["reduction"] and set(seen["reduction"]) == {"sum"}  # all_pixels: sum / pixels
    assert seen["resize"] and set(seen["resize"]) == {"via_input"}
