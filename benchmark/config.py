"""Frozen experiment configuration: what a cell is, its stable key, and `--set` overrides.

A *cell* is one (data set, model, recipe) combination of a grid; everything that changes the
result lives in its four specs, so their hash is the cell's identity on disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from methods.heads.options import HEAD_OPTIONS, HeadOptions, options_for


class ConfigError(ValueError):
    """A bad grid, override key or value; the message is one line that names the fix."""


@dataclass(frozen=True)
class DataSpec:
    """Which data set and how images are prepared for training and evaluation."""

    name: str = "synthetic"  # synthetic | camvid (more data sets register in benchmark.datasets)
    root: str = ""  # data-set folder for real data; empty = default location
    num_classes: int = 6
    ignore_index: int = 255
    image_size: int = 64  # synthetic: square image side
    modes_per_class: int = 3  # synthetic: appearance modes per class
    train_images: int = 256  # synthetic: images in the training split
    val_images: int = 64  # synthetic: images in the evaluation split
    data_seed: int = 0  # synthetic: which generated data set (fixed across run seeds)
    crop_size: int = 0  # real data: square training crop, 0 = whole image
    crop_width: int = 0  # real data: crop width when not square (crop_size = height); 0 = square
    val_split: str = "val"
    # real data (benchmark/datasets): source format, recipe scale and augmentation
    format: str = "native"  # native (the data set's own layout) | hf (save_to_disk or parquet)
    scale_long: int = 0  # recipe scale (MMSeg img_scale): long side <= scale_long and
    scale_short: int = 0  # short side <= scale_short, train (times the ratio) and eval; 0 = as is
    min_scale: float = 1.0  # training rescale ratio range (MMSeg ratio_range), e.g. 0.5-2.0
    max_scale: float = 1.0
    cat_max_ratio: float = 1.0  # redraw crops where one class covers >= this share; 1 = off
    flip_prob: float = 0.5  # horizontal flip probability (training)
    photometric: str = "none"  # none | mmseg (PhotoMetricDistortion) | brightness (released code)
    pipeline: str = "torchvision"  # torchvision | mmseg: whose operations (datasets/transforms.py)
    channel_order: str = "rgb"  # rgb | bgr (released ProtoSeg's input_mode BGR, docs/fidelity.md)


def _head_spec_fields() -> list[tuple[str, Any, Any]]:
    """HeadSpec's fields: `name`, then every head's options under their HeadSpec names
    (`PREFIX + option`, e.g. `contrast_variant`) with the options' types and defaults."""
    out: list[tuple[str, Any, Any]] = [("name", str, field(default="softmax"))]
    for options in HEAD_OPTIONS.values():
        hints = typing.get_type_hints(options)
        out += [(options.PREFIX + f.name, hints[f.name], field(default=f.default))
                for f in fields(options)]
    names = [name for name, _, _ in out]
    if len(set(names)) != len(names):
        raise TypeError(f"two heads' options share a HeadSpec name: {sorted(names)}")
    return out


def _head_options(self: Any) -> HeadOptions:
    """The options object of the head this spec names (what `methods.build_head` passes)."""
    return options_for(self)


# The pixel classifier and its options: `name` plus every head's options, composed from the
# options dataclasses in methods/heads/options.py (one edit there adds a `--set model.head.*`
# key). Flat, so the cell key hashes the same fields as before (ADDED_SETTINGS).
HeadSpec = dataclasses.make_dataclass(
    "HeadSpec", _head_spec_fields(), frozen=True,
    namespace={"__module__": __name__, "options": _head_options,
               "__doc__": "The pixel classifier and its options (methods/heads/options.py)."},
)


@dataclass(frozen=True)
class ModelSpec:
    """Backbone + decoder + head; any combination is a valid model."""

    backbone: str = "resnet18_d8"
    decoder: str = "fcn"
    decoder_channels: int = 128
    pretrained: str = ""  # local checkpoint path for the backbone; empty = random init
    head: HeadSpec = field(default_factory=HeadSpec)
    aux_weight: float = 0.0  # auxiliary FCN head on the second-to-last level (FCN: 0.4); 0 = none
    init: str = "library"  # library (torch/transformers defaults) | mmseg (MMSeg's head init, eps)


@dataclass(frozen=True)
class TrainSpec:
    """The optimisation recipe."""

    iters: int = 200
    batch_size: int = 8  # global batch (split over processes)
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6  # lr factor at step 0 of the linear warm-up
    grad_clip: float = 0.0  # max gradient norm, 0 = off
    amp: bool = False  # mixed precision (GPU only; always off on the CPU)
    num_workers: int = -1  # DataLoader processes; -1 = auto (engine.loader_workers), 0 = none
    log_every: int = 20
    checkpoint_every: int = 0  # save state every N steps (0: only on SIGUSR2/SIGTERM)
    recipe: str = ""  # named recipe (experiments/recipes.py): augmentation and eval protocol
    lr_schedule: str = "poly"  # poly (mmcv 0.x / released ProtoSeg) | mmengine (MMSeg 1.x)
    min_lr: float = 0.0  # the poly decay's floor (MMSeg's PolyLR eta_min: 1e-4 for SGD recipes)
    param_groups: str = "no_decay_1d"  # no_decay_1d | decay_all | segformer | swin (optim.py)
    ce_average: str = "labelled"  # cross-entropy mean over: labelled | all_pixels (MMSeg's)
    ce_weights: str = "none"  # class weights: none | protoseg_cityscapes (released config's)


@dataclass(frozen=True)
class EvalSpec:
    """How the evaluation split is predicted."""

    batch_size: int = 8
    mode: str = "whole"  # whole image at once | slide (overlapping windows, MMSeg's slide mode)
    window_h: int = 0  # slide: window height and width (clipped to the image)
    window_w: int = 0
    stride_h: int = 0  # slide: step between windows; overlapping logits are averaged
    stride_w: int = 0
    # direct (to the label) | via_input (input, then label: MMSeg) | openseg (via the input with
    # align_corners=True: the released ProtoSeg code)
    logit_resize: str = "direct"


@dataclass(frozen=True)
class ResourceSpec:
    """What one run asks of a cluster; not part of the cell key (results do not depend on it:
    the global batch is fixed and split over however many processes run)."""

    gpus: int = 1  # per run; one process per GPU
    cpus_per_task: int = 8
    mem_gb: int = 64
    timeout_min: int = 24 * 60


@dataclass(frozen=True)
class Cell:
    """One entry of a grid: labels for the table, the paper's numbers, and the specs."""

    grid: str
    row: str  # method label, e.g. "Prototype (K=10)"
    column: str = ""  # e.g. backbone or data set
    tag: str = ""  # baseline | ours | "" (reference rows are not cells)
    pair: str = ""  # baseline and ours with the same pair id are compared
    paper_miou: float | None = None
    paper_params_m: float | None = None
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)

    @functools.cached_property
    def key(self) -> str:
        """Readable slug + hash of every setting that changes the result (not labels).

        Computed once per cell (a frozen dataclass: its settings cannot change); tables and
        reports compare it with every record's `cell_key`."""
        payload = {s: dataclasses.asdict(getattr(self, s)) for s in RESULT_SECTIONS}
        for dotted in EXECUTION_ONLY:
            _pop_path(payload, dotted)
        if payload["model"]["pretrained"] not in ("", "none"):  # which weights, not where they are:
            payload["model"]["pretrained"] = "file"  # records name the file and its sha256
        for dotted, value_when_added in ADDED_SETTINGS.items():
            if get_path(self, dotted) == value_when_added:
                _pop_path(payload, dotted)
        digest = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
        slug = re.sub(r"[^a-z0-9]+", "-", self.row.lower()).strip("-") or "cell"
        return f"{slug}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RESULT_SECTIONS = ("data", "model", "train", "eval")
OVERRIDE_SECTIONS = RESULT_SECTIONS + ("resources",)
# Settings that change how a run executes but not its result: left out of the cell key.
EXECUTION_ONLY = ("train.num_workers", "train.log_every", "train.checkpoint_every",
                  "data.root")  # data.root: where the files are, not what they are
# Settings added after the first records were written, with the value each had when added
# (which is what runs before it did). A cell at that value keeps its old key, so adding an
# option never orphans existing records; any other value (even a later default) is hashed.
# tests/benchmark/test_config.py fails when a new setting is missing here.
ADDED_SETTINGS: dict[str, Any] = {
    "model.head.sinkhorn_scope": "process",
    "model.head.contrast_variant": "in_batch", "model.head.contrast_weight": None,
    "model.head.contrast_tau": None, "model.head.contrast_base_tau": 0.07,
    "model.head.contrast_warmup_iters": 5000, "model.head.contrast_max_anchors": 1024,
    "model.head.contrast_max_views": 100, "model.head.contrast_min_class_pixels": 100,
    "model.head.contrast_queue_size": 5000, "model.head.contrast_queue_pixels": 10,
    "model.head.contrast_proj_dim": 256,
    "eval.window_h": 0, "eval.window_w": 0, "eval.stride_h": 0, "eval.stride_w": 0,
    "eval.logit_resize": "direct", "train.lr_schedule": "poly", "train.min_lr": 0.0,
    "train.param_groups": "no_decay_1d", "train.ce_average": "labelled",  # docs/fidelity.md
    "train.ce_weights": "none", "model.init": "library",
    "data.pipeline": "torchvision", "data.channel_order": "rgb",
}


def _pop_path(payload: dict[str, Any], dotted: str) -> None:
    *parents, name = dotted.split(".")
    for part in parents:
        payload = payload[part]
    payload.pop(name, None)


def cell_from_dict(d: dict[str, Any]) -> Cell:
    """Inverse of `Cell.to_dict` (used to rebuild a cell from a record)."""
    return _build(Cell, d)


def _build(cls: type, d: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        if is_dataclass(hints[f.name]) and isinstance(value, dict):
            value = _build(hints[f.name], value)
        kwargs[f.name] = value
    return cls(**kwargs)


# --------------------------------------------------------------------------- overrides


def override_keys(obj: Any = None, prefix: str = "") -> list[str]:
    """All dotted keys `--set` accepts, e.g. `train.iters`, `model.head.num_prototypes`."""
    obj = obj if obj is not None else Cell(grid="", row="")
    keys = []
    for f in fields(obj):
        if prefix == "" and f.name not in OVERRIDE_SECTIONS:
            continue
        value = getattr(obj, f.name)
        if is_dataclass(value):
            keys += override_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def parse_override(text: str) -> tuple[str, str]:
    """Split `key=value`; a missing `=` is a ConfigError."""
    if "=" not in text:
        raise ConfigError(f"malformed --set {text!r}: expected key=value, e.g. train.iters=2000")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


_BOOLS = {**dict.fromkeys(("1", "true", "yes", "on"), True),
          **dict.fromkeys(("0", "false", "no", "off"), False)}


def _convert(key: str, raw: str, annotation: Any) -> Any:
    """Turn the command-line string into the field's type, or raise a one-line ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return _convert(key, raw, options[0])
    try:
        if annotation is bool:
            return _BOOLS[raw.lower()]
        if annotation is int:
            return int(raw)
        if annotation is float:
            return float(raw)
    except (ValueError, KeyError):
        raise ConfigError(f"bad value for {key}: {raw!r} is not a valid {annotation.__name__}"
                          ) from None
    return raw


def apply_overrides(cell: Cell, overrides: list[str]) -> Cell:
    """Return a copy of `cell` with each `section.field=value` applied (types checked)."""
    valid = override_keys()
    for text in overrides:
        key, raw = parse_override(text)
        if key not in valid:
            raise ConfigError(f"unknown --set key {key!r}; {_close_keys(key, valid)}")
        cell = _set_path(cell, key.split("."), raw, key)
    from benchmark.validation import validate  # validation imports this module

    return validate(cell)


def _close_keys(key: str, valid: list[str]) -> str:
    """The few valid keys nearest to a mistyped one (the full list is 1,600 characters)."""
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.6) or [
        k for k in valid if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:3]
    sections = ", ".join(dict.fromkeys(k.rsplit(".", 1)[0] for k in valid))
    hint = f"did you mean {' or '.join(near)}?" if near else "no close match;"
    return f"{hint} keys are <section>.<field>, sections {sections} (benchmark/config.py)"


def _set_path(obj: Any, path: list[str], raw: str, key: str) -> Any:
    name = path[0]
    if len(path) == 1:
        hint = typing.get_type_hints(type(obj))[name]
        return replace(obj, **{name: _convert(key, raw, hint)})
    return replace(obj, **{name: _set_path(getattr(obj, name), path[1:], raw, key)})


def get_path(obj: Any, key: str) -> Any:
    """The value at a dotted key, e.g. `train.iters`, of a cell or spec."""
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj
