"""Frozen experiment configuration: what a cell is and its stable key (`--set`: overrides.py).

A *cell* is one (data set, model, recipe) combination of a grid; everything that changes the
result lives in its four specs, so their hash is the cell's identity on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from methods.catalog import HEADS, head_options
from methods.heads.options import HeadOptions
from methods.registry import RegistryError
from methods.settings import setting


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


@dataclass(frozen=True, init=False)
class HeadSpec:
    """The pixel classifier: a registered head's name and that head's own options object.

    `HeadSpec("prototype", num_prototypes=5)` takes the head's `--set` option names; an option
    the head does not have is an error. Option values read as attributes too (`spec.gamma`)."""

    name: str
    options: HeadOptions

    def __init__(self, name: str = "softmax", options: HeadOptions | None = None,
                 **values: Any) -> None:
        cls = _options_class(name)
        if options is not None and getattr(options, "HEAD", None) != cls.HEAD:
            raise TypeError(f"HeadSpec({name!r}) takes {cls.__name__}, got "
                            f"{type(options).__name__}")
        if options is None or values:  # keyword values over the options (`replace(spec, k=v)`)
            try:
                options = cls.from_values({**(options.spec_values() if options else {}),
                                           **values})
            except ValueError as err:
                raise ConfigError(str(err)) from None
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", options)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("name", "options"):
            raise AttributeError(attr)
        values = self.options.spec_values()
        if attr not in values:
            raise AttributeError(f"the {self.name} head has no option {attr!r}")
        return values[attr]

    def label(self) -> str:
        """The head's row label, e.g. "Softmax" or "Prototype (K=10)"."""
        return self.options.label()

    def with_values(self, **values: Any) -> HeadSpec:
        """A copy with some options changed (`--set` names)."""
        return HeadSpec(self.name, **{**self.options.spec_values(), **values})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadSpec:
        """Read `{"name", "options": {...}}`, or the flat layout records written before heads
        had their own options (every head's prefixed options side by side)."""
        name = d.get("name", "softmax")
        options_cls = _options_class(name)
        if isinstance(d.get("options"), dict):
            known = {f.name for f in fields(options_cls)}
            return cls(name, options_cls(**{k: v for k, v in d["options"].items() if k in known}))
        own = options_cls.spec_names().values()
        return cls(name, **{k: v for k, v in d.items() if k in own})


def _options_class(name: str) -> type[HeadOptions]:
    """The options class of a registered head; ConfigError naming the registered heads."""
    try:
        return head_options(name)
    except RegistryError as err:
        raise ConfigError(f"bad value for model.head.name: {err}") from None


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
    # how the step runs (benchmark/train/engine.py): torch.compile of the model (dynamic shapes),
    # channels-last tensors (CNN backbones), deterministic kernels + cuBLAS/cuDNN settings (GPU)
    compile: bool = setting(False, legacy=False)
    channels_last: bool = setting(False, legacy=False)
    deterministic: bool = setting(False, legacy=False)
    # torch's fused optimizer kernels (one pass over each tensor) on every device: the same update
    # up to float rounding, faster; off: torch's default implementation, the one MMSeg runs,
    # except SGD on the CPU, which always runs the fused kernel (benchmark/train/optim.py)
    fused_optimizer: bool = setting(False, legacy=False)


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
        """Readable slug of the row + hash of every setting that changes the result.

        Each component contributes its own settings only (the head: its name and its own
        options), and a setting at its declared `legacy` value (methods/settings.py) is left
        out, so adding an option anywhere changes no existing key. Computed once per cell;
        tables and reports compare it with every record's `cell_key`."""
        digest = hashlib.sha1(json.dumps(key_payload(self), sort_keys=True).encode())
        slug = re.sub(r"[^a-z0-9]+", "-", self.row.lower()).strip("-") or "cell"
        return f"{slug}-{digest.hexdigest()[:10]}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RESULT_SECTIONS = ("data", "model", "train", "eval")
OVERRIDE_SECTIONS = RESULT_SECTIONS + ("resources",)
# Settings that change how a run executes but not its result: left out of the cell key.
EXECUTION_ONLY = ("train.num_workers", "train.log_every", "train.checkpoint_every",
                  "data.root")  # data.root: where the files are, not what they are
KEY_VERSION = 2  # 2: each head hashes only its own options (benchmark/migrate.py moves 1 -> 2)
# A setting added from now on declares, where it is defined, the value that behaves as before:
# `new_field: bool = setting(False, legacy=False)` (methods/settings.py); there is no central
# list, and a cell at that value keeps its key.


def key_payload(cell: Cell) -> dict[str, Any]:
    """What a cell's key hashes: its result sections without execution-only settings and
    without settings at their legacy value; the weights file by kind, not by place."""
    payload = {s: _own_settings(getattr(cell, s)) for s in RESULT_SECTIONS}
    for dotted in EXECUTION_ONLY:
        section, name = dotted.split(".")
        payload[section].pop(name, None)
    if payload["model"].get("pretrained") not in (None, "", "none"):  # which weights, not where
        payload["model"]["pretrained"] = "file"  # records name the file and its sha256
    return payload


def _own_settings(spec: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        if "legacy" in f.metadata and value == f.metadata["legacy"]:
            continue  # added later and set as before: the key it had
        if isinstance(value, HeadSpec):
            out[f.name] = {"name": value.name, **_own_settings(value.options)}
        elif is_dataclass(value):
            out[f.name] = _own_settings(value)
        else:
            out[f.name] = value
    return out


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
        if hints[f.name] is HeadSpec and isinstance(value, dict):
            value = HeadSpec.from_dict(value)
        elif is_dataclass(hints[f.name]) and isinstance(value, dict):
            value = _build(hints[f.name], value)
        kwargs[f.name] = value
    return cls(**kwargs)


# --------------------------------------------------------------------------- overrides


def override_keys(obj: Any = None, prefix: str = "") -> list[str]:
    """The dotted keys `--set` accepts for a cell (default: a default cell), e.g. `train.iters`,
    `model.head.name` and the options of the cell's own head (`model.head.num_prototypes`)."""
    obj = obj if obj is not None else Cell(grid="", row="")
    keys = []
    for f in fields(obj):
        if prefix == "" and f.name not in OVERRIDE_SECTIONS:
            continue
        value = getattr(obj, f.name)
        if isinstance(value, HeadSpec):
            keys += [f"{prefix}{f.name}.{k}" for k in ("name", *value.options.spec_values())]
        elif is_dataclass(value):
            keys += override_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def head_option_keys() -> list[str]:
    """`model.head.<option>` of every registered head (for close-match hints)."""
    return list(dict.fromkeys(f"model.head.{k}" for e in HEADS.entries() if e.options
                              for k in e.options.spec_names().values()))


def get_path(obj: Any, key: str) -> Any:
    """The value at a dotted key, e.g. `train.iters`, of a cell or spec."""
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj
