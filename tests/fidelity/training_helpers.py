"""Helpers of tests/fidelity/test_training.py: source configs, mmengine's schedulers stepped as
its runner steps them, and mmengine's optimizer constructor on MMSegmentation's parameter names.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable
from unittest import mock

import torch
from torch import nn

from benchmark.checkpoints.mmseg_backbone import (convert_mmseg_hrnet, convert_mmseg_mit,
                                                   convert_mmseg_resnet_v1c, convert_mmseg_swin)

# the suite's backbone -> the converter of MMSeg's backbone names into the suite's
BACKBONE_CONVERTERS: dict[str, Callable[[dict], dict]] = {
    "resnet101_d8": convert_mmseg_resnet_v1c, "hrnetv2_w48": convert_mmseg_hrnet,
    "swin_b": convert_mmseg_swin, "mit_b4": convert_mmseg_mit, "mit_b2": convert_mmseg_mit,
}
HEAD_PREFIX = {"decoder": "decode_head.decoder", "head": "decode_head.head",
               "aux": "auxiliary_head"}  # MMSeg's heads (their own names do not matter here)


def source_config(mmseg: Any, config: str) -> Any:
    """The full MMSegmentation config `configs/<config>.py` (optimizer, schedule, data, model)."""
    from mmengine import Config

    return Config.fromfile(str(mmseg.configs / f"{config}.py"))


@functools.lru_cache(maxsize=8)
def _stepped(schedulers_json: str, base_lrs: tuple[float, ...], iters: int,
             at: tuple[int, ...]) -> dict[int, list[float]]:
    from mmengine.registry import PARAM_SCHEDULERS

    params = [nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)],
                                lr=base_lrs[0])
    schedulers = [PARAM_SCHEDULERS.build({**cfg, "optimizer": optimizer})
                  for cfg in json.loads(schedulers_json)]
    wanted, out = set(at), {}
    for step in range(iters):  # the runner: train step `step`, then every scheduler steps
        if step in wanted:
            out[step] = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    return out


def mmengine_lrs(schedulers: list[dict], base_lrs: tuple[float, ...], iters: int,
                 at: tuple[int, ...]) -> dict[int, list[float]]:
    """lr of each group (base lrs `base_lrs`) at each step in `at` under mmengine's schedulers
    built from the config dicts `schedulers`, stepped once per iteration (ParamSchedulerHook)."""
    return _stepped(json.dumps(schedulers, sort_keys=True), base_lrs, iters, at)


def backbone_name_map(mmseg_backbone: nn.Module, backbone: str) -> dict[str, list[str]]:
    """The suite's backbone parameter names -> MMSeg's names they come from: each MMSeg tensor
    is filled with its own number and sent through the checkpoint converter, so splits,
    concatenations and reorders all keep track of where every tensor came from."""
    names = [n for n, _ in mmseg_backbone.named_parameters()]
    marked = {n: torch.full(p.shape, float(i + 1), dtype=torch.float64)
              for i, (n, p) in enumerate(mmseg_backbone.named_parameters())}
    converted = BACKBONE_CONVERTERS[backbone](marked)
    return {f"backbone.{key}": [names[int(i) - 1] for i in value.unique().tolist()]
            for key, value in converted.items()}


def shim_module(names: list[str]) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """An empty module tree with one (tiny) parameter under each dotted name."""
    root, made = nn.Module(), {}
    for name in names:
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        made[name] = nn.Parameter(torch.zeros(1))
        module.register_parameter(leaf, made[name])
    return root, made


def mmengine_settings(optim_wrapper: Any, names: list[str]) -> dict[str, tuple[float, float]]:
    """(lr, weight decay) mmengine's DefaultOptimWrapperConstructor gives each of `names` (MMSeg
    parameter names) under the config's `optim_wrapper` (its `paramwise_cfg`)."""
    from mmengine.optim import DefaultOptimWrapperConstructor

    shim, params = shim_module(names)
    cfg = optim_wrapper.to_dict()
    paramwise = cfg.pop("paramwise_cfg", None)  # as mmengine's build_optim_wrapper passes it
    # mmcv-lite has no compiled ops: mmcv "full" is not available (the conftest's stand-in
    # `mmcv._ext` has no import spec, which the check cannot handle)
    with mock.patch("mmengine.optim.optimizer.default_constructor.mmcv_full_available",
                    return_value=False):
        wrapper = DefaultOptimWrapperConstructor(cfg, paramwise)(shim)
    by_id = {id(p): name for name, p in params.items()}
    defaults = wrapper.optimizer.defaults
    return {by_id[id(p)]: (g.get("lr", defaults["lr"]), g.get("weight_decay",
                                                             defaults["weight_decay"]))
            for g in wrapper.optimizer.param_groups for p in g["params"]}


def suite_settings(optimizer: torch.optim.Optimizer,
                   model: nn.Module) -> dict[str, tuple[float, float]]:
    """(lr, weight decay) of each of the suite model's parameters, by name."""
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups
             for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}
