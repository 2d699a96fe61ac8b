"""Parameter groups (benchmark/train/optim.py): the original split stays as it was; the MMSeg
rules give each parameter the (lr, weight decay) its source config does (the comparison with
mmengine itself is in tests/fidelity/test_training.py)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.config import Cell, HeadSpec, ModelSpec, TrainSpec
from benchmark.train.optim import build_optimizer, param_groups
from methods import build_model


def _settings(optimizer: torch.optim.Optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups
            for p in g["params"]}


def _cell(**train) -> Cell:
    return Cell("g", "x", train=TrainSpec(lr=0.5, weight_decay=0.1, **train))


def _model(head: str = "softmax") -> nn.Module:
    spec = ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=16,
                     head=HeadSpec(name=head))
    return build_model(spec, 3)


def test_no_decay_1d_is_the_original_split() -> None:
    model = _model()
    groups = param_groups(model, _cell())
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [id(p) for p in groups[0]["params"]] == [
        id(p) for p in model.parameters() if p.ndim > 1]
    assert [id(p) for p in groups[1]["params"]] == [
        id(p) for p in model.parameters() if p.ndim <= 1]


def test_decay_all_decays_every_parameter_at_one_lr() -> None:
    model = _model()
    settings = _settings(build_optimizer(model, _cell(param_groups="decay_all")))
    assert set(settings.values()) == {(0.5, 0.1)}
    assert len(settings) == len(list(model.parameters()))


def test_segformer_rules_head_lr_x10_and_backbone_norms_without_decay() -> None:
    model = _model()
    settings = _settings(build_optimizer(model, _cell(param_groups="segformer",
                                                      optimizer="adamw")))
    norms = {id(p) for m in model.backbone.modules() if isinstance(m, nn.LayerNorm)
             for p in m.parameters()}
    # MiT's stage-final norms are MMSeg's `layers.{i}.2`: no "norm" in the name, so they decay
    stage_norms = {id(p) for n, p in model.named_parameters()
                   if re.match(r"backbone\.body\.stages\.\d+\.layer_norm\.", n)}
    assert stage_norms and stage_norms < norms
    for name, p in model.named_parameters():
        if name.startswith(("decoder.", "head.")):
            assert settings[id(p)] == (5.0, 0.1), name  # decode head: BN and all, lr x10
        elif id(p) in norms - stage_norms:
            assert settings[id(p)] == (0.5, 0.0), name
        else:
            assert settings[id(p)] == (0.5, 0.1), name


def test_key_order_follows_mmengine_head_before_norm() -> None:
    """A LayerNorm in the head: SegFormer's 'head' (first of the equally long keys) wins, so it
    decays at lr x10; under Swin's keys the same layer has no decay."""
    model = _model("prototype")
    head_norms = [p for m in model.head.modules() if isinstance(m, nn.LayerNorm)
                  for p in m.parameters()]
    assert head_norms
    seg = _settings(build_optimizer(model, _cell(param_groups="segformer")))
    swin = _settings(build_optimizer(model, _cell(param_groups="swin")))
    assert all(seg[id(p)] == (5.0, 0.1) for p in head_norms)
    assert all(swin[id(p)] == (0.5, 0.0) for p in head_norms)


def test_swin_rules_exempt_relative_position_tables() -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.relative_position_bias_table = nn.Parameter(torch.zeros(3, 2))
            self.backbone.proj = nn.Linear(2, 2)
            self.decoder = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))

    model = Tiny()
    settings = _settings(build_optimizer(model, _cell(param_groups="swin")))
    assert settings[id(model.backbone.relative_position_bias_table)] == (0.5, 0.0)
    assert settings[id(model.backbone.proj.weight)] == (0.5, 0.1)
    assert settings[id(model.decoder[1].weight)] == (0.5, 0.1)  # BatchNorm: MMSeg's `bn`


def test_each_group_carries_its_base_lr_and_frozen_parameters_stay_out() -> None:
    model = _model()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    groups = param_groups(model, _cell(param_groups="segformer"))
    assert all(g["base_lr"] == g["lr"] for g in groups)
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_unknown_rule_is_refused() -> None:
    cell = replace(_cell(), train=replace(_cell().train, param_groups="layerwise"))
    with pytest.raises(ValueError, match="param_groups"):
        param_groups(_model(), cell)


def _three_steps(model: nn.Module, opt: torch.optim.Optimizer) -> list[float]:
    """Three training steps at falling learning rates (as the poly schedule sets them)."""
    torch.manual_seed(1)  # the same inputs and dropout draws on both sides
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    losses = []
    for factor in (1.0, 0.7, 0.4):
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        opt.zero_grad()
        logits = F.interpolate(model(images).logits, size=(32, 32), mode="bilinear")
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _equal_but_the_tail(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Bit for bit except each tensor's last numel % 16 elements (past the last whole vector
    of 16 floats, where the fused kernel's scalar code may round once where the for-loop's
    rounds twice); there equal to float rounding."""
    a, b = ours.detach().flatten(), theirs.detach().flatten()
    whole = a.numel() - a.numel() % 16
    assert torch.equal(a[:whole], b[:whole])
    torch.testing.assert_close(a[whole:], b[whole:], rtol=1e-6, atol=1e-7)


def test_sgd_on_the_cpu_runs_the_fused_kernel_with_the_default_update() -> None:
    """SGD on the CPU: torch's fused kernel, whose update (momentum, weight decay, two groups,
    a new lr each step) equals torch's default for-loop SGD, the one mmengine builds, bit for
    bit but in each tensor's last few elements (weights and momentum buffers); elsewhere the
    default unless `train.fused_optimizer`."""
    torch.manual_seed(0)
    start = _model().state_dict()
    cell = Cell("g", "x", train=TrainSpec(lr=0.01, weight_decay=0.1, momentum=0.9))
    ours, theirs = _model(), _model()
    ours.load_state_dict(start)
    theirs.load_state_dict(start)
    fused = build_optimizer(ours, cell)
    default = torch.optim.SGD(param_groups(theirs, cell), lr=0.01, momentum=0.9)
    assert fused.defaults["fused"] is True and default.defaults["fused"] is None
    assert _three_steps(ours, fused) == pytest.approx(_three_steps(theirs, default), rel=1e-6)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        _equal_but_the_tail(a, b)
        _equal_but_the_tail(fused.state[a]["momentum_buffer"], default.state[b]["momentum_buffer"])
    assert not torch.equal(next(ours.parameters()), next(iter(start.values())))
    cuda = torch.device("cuda")  # built before the engine moves the model there
    assert build_optimizer(_model(), cell, cuda).defaults["fused"] is None
    assert build_optimizer(_model(), cell, "cpu").defaults["fused"] is True
    fused_everywhere = replace(cell, train=replace(cell.train, fused_optimizer=True))
    assert build_optimizer(_model(), fused_everywhere, cuda).defaults["fused"] is True


def test_fused_adamw_makes_the_same_update_up_to_rounding() -> None:
    """`train.fused_optimizer` with AdamW: torch's fused kernel; over three steps the losses
    equal the default implementation's to 1e-5 and the weights differ at most by the step size
    where a gradient is near zero (g / sqrt(v) magnifies rounding there); off by default."""
    assert _cell().train.fused_optimizer is False
    torch.manual_seed(0)
    start = _model().state_dict()
    ends, losses = [], []
    for fused in (False, True):
        model = _model()
        model.load_state_dict(start)
        cell = Cell("g", "x", train=TrainSpec(lr=0.01, weight_decay=0.1, optimizer="adamw",
                                              fused_optimizer=fused))
        opt = build_optimizer(model, cell)
        assert bool(opt.defaults.get("fused")) is fused
        losses += _three_steps(model, opt)
        ends.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    before = torch.cat([start[name].flatten() for name, _ in _model().named_parameters()])
    assert not torch.equal(ends[0], before)  # the steps moved the weights
    assert losses[3:] == pytest.approx(losses[:3], rel=1e-5)
    assert float((ends[1] - ends[0]).abs().max()) <= 2 * 3 * 0.01  # each step moves <= ~lr


def test_fused_optimizer_off_keeps_every_cell_key() -> None:
    from experiments import get_grid

    cell = get_grid("camvid").cells[0]
    assert replace(cell, train=replace(cell.train, fused_optimizer=False)).key == cell.key
    assert replace(cell, train=replace(cell.train, fused_optimizer=True)).key != cell.key
