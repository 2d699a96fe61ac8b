"""Each head's options: one frozen dataclass per head with its defaults and allowed values.

Torch-free on purpose: the head registry (methods/catalog.py) describes each head by its options
class, `benchmark.config.HeadSpec` holds one head's name and options, and `--dry-run` must not
import torch. `--set model.head.<PREFIX><option>` addresses an option (e.g. `contrast_variant`).
Allowed values are the `Literal` types and the `setting(...)` ranges, checked once by `check()`
for the config validation and the heads' constructors alike. Adding an option is one edit here:
declare `legacy=` (the value that behaves as before) and no existing cell key changes.
Options and defaults are those of docs/method.md (released code unless stated).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, Mapping, TypeVar

from methods.settings import range_problem, setting

_O = TypeVar("_O", bound="HeadOptions")
@dataclass(frozen=True)
class HeadOptions:
    """Base of every head's options: what a head is called, how `--set model.head.*` names its
    options, the allowed values (Literal types and `setting` ranges) and its loss terms."""

    HEAD: ClassVar[str] = ""  # the head's registered name (HeadSpec.name)
    DISPLAY: ClassVar[str] = ""  # its name in tables; `label()` may add options (K=10)
    PREFIX: ClassVar[str] = ""  # `--set model.head.<PREFIX><option>`

    @classmethod
    def choices(cls) -> dict[str, tuple[Any, ...]]:
        """Allowed values of each `Literal`-typed option, by option name."""
        hints = typing.get_type_hints(cls)
        return {f.name: typing.get_args(hints[f.name]) for f in fields(cls)
                if typing.get_origin(hints[f.name]) is Literal}

    @classmethod
    def spec_names(cls) -> dict[str, str]:
        """The `--set model.head.*` name of each option, by option name."""
        return {f.name: cls.PREFIX + f.name for f in fields(cls)}

    @classmethod
    def from_values(cls: type[_O], values: Mapping[str, Any]) -> _O:
        """Options from `--set`-style names (prefixed, e.g. contrast_variant); an unknown name
        is a one-line ValueError naming this head's options."""
        by_spec = {v: k for k, v in cls.spec_names().items()}
        unknown = [k for k in values if k not in by_spec]
        if unknown:
            raise ValueError(f"{cls.HEAD} head has no option {', '.join(unknown)}; its options: "
                             f"{', '.join(by_spec) or 'none'}")
        return cls(**{by_spec[k]: v for k, v in values.items()})

    def spec_values(self) -> dict[str, Any]:
        """{`--set` name: value} of every option."""
        return {self.PREFIX + f.name: getattr(self, f.name) for f in fields(self)}

    def problems(self) -> list[str]:
        """One line per option outside its declared choices or range."""
        out = []
        for name, allowed in self.choices().items():
            value = getattr(self, name)
            if value not in allowed:
                out.append(f"{self.PREFIX}{name}: {value!r}; choose one of "
                           f"{', '.join(map(str, allowed))}")
        for f in fields(self):
            problem = range_problem(getattr(self, f.name), f.metadata)
            if problem and problem.endswith("not a finite number"):
                problem += f"; give a finite one, e.g. model.head.{self.PREFIX}{f.name}={f.default}"
            if problem:
                out.append(f"{self.PREFIX}{f.name}: {problem}")
        return out

    def check(self: _O) -> _O:
        """Raise a one-line ValueError for a value outside its choices or range; else self."""
        problems = self.problems()
        if problems:
            raise ValueError(f"{self.HEAD} head: {problems[0]}")
        return self

    def label(self) -> str:
        """The head's row label in tables (DISPLAY; a head may add its key option)."""
        return self.DISPLAY or self.HEAD

    def loss_names(self) -> tuple[str, ...]:
        """Keys of `HeadOutput.losses` a training step produces (the engine adds "ce", "aux")."""
        return ()


@dataclass(frozen=True)
class SoftmaxOptions(HeadOptions):
    """The softmax head (a 1x1 convolution) has no options."""

    HEAD: ClassVar[str] = "softmax"
    DISPLAY: ClassVar[str] = "Softmax"


@dataclass(frozen=True)
class PixelQueryOptions(HeadOptions):
    """Parametric pixel-query head (Segmenter-style mask transformer, docs/method.md)."""

    HEAD: ClassVar[str] = "pixel_query"
    DISPLAY: ClassVar[str] = "Pixel-query"
    PREFIX: ClassVar[str] = "query_"

    layers: int = setting(2, minimum=1)  # transformer layers over pixel and class-query tokens
    heads: int = setting(4, minimum=1)  # attention heads (must divide dim)
    dim: int = setting(0, minimum=0)  # token width; 0 = min(decoder width, 256)


@dataclass(frozen=True)
class PrototypeOptions(HeadOptions):
    """ProtoSeg's nonparametric prototype head; defaults = released code (docs/method.md)."""

    HEAD: ClassVar[str] = "prototype"
    DISPLAY: ClassVar[str] = "Prototype"

    num_prototypes: int = setting(10, minimum=1)  # K prototypes per class
    embed_dim: int = setting(0, minimum=0)  # embedding width; 0 = decoder width
    projection: Literal["mlp", "none"] = "mlp"  # mlp (released code) | none (paper's param count)
    proj_norm_axis: Literal["channel", "width"] = "channel"  # width: released-code quirk
    score_norm: Literal["layernorm", "none"] = "layernorm"  # LayerNorm over the class scores
    update_assign: Literal["argmax", "gumbel"] = "argmax"  # gumbel: released code, randomised
    gamma: float = setting(0.999, minimum=0.0, maximum=1.0)  # prototype momentum
    sinkhorn_eps: float = setting(0.05, above=0.0)  # Sinkhorn-Knopp entropy regularisation
    sinkhorn_iters: int = setting(3, minimum=1)  # Sinkhorn-Knopp iterations
    # process: each process solves its own pixels' problem (released code) | all: one problem
    # over every process's pixels (docs/method.md#sinkhorn)
    sinkhorn_scope: Literal["process", "all"] = "process"
    ppc_weight: float = setting(0.01, minimum=0.0)  # pixel-prototype contrast weight; 0 = off
    ppd_weight: float = setting(0.001, minimum=0.0)  # pixel-prototype distance weight; 0 = off
    ppc_tau: float = setting(1.0, above=0.0)  # PPC temperature: released 1.0, paper maybe 0.1

    def label(self) -> str:
        """"Prototype (K=10)": the number of prototypes names the row."""
        return f"{self.DISPLAY} (K={self.num_prototypes})"

    def loss_names(self) -> tuple[str, ...]:
        """PPC and PPD, each only when weighted > 0."""
        return tuple(n for n, w in (("ppc", self.ppc_weight), ("ppd", self.ppd_weight)) if w > 0)


# Released defaults per pixel-contrast variant (docs/method.md): (temperature, loss weight).
VARIANT_DEFAULTS = {"in_batch": (0.1, 0.1), "memory": (0.07, 1.0)}


@dataclass(frozen=True)
class PixelContrastOptions(HeadOptions):
    """ContrastiveSeg: softmax head + pixel contrast; defaults = its released code."""

    HEAD: ClassVar[str] = "pixel_contrast"
    DISPLAY: ClassVar[str] = "Pixel contrast"
    PREFIX: ClassVar[str] = "contrast_"

    variant: Literal["in_batch", "memory"] = "in_batch"  # anchors of the batch | memory queues
    # loss weight; None = the variant's: 0.1 in_batch, 1.0 memory
    weight: float | None = setting(None, minimum=0.0)
    # temperature; None = the variant's: 0.1 in_batch, 0.07 memory
    tau: float | None = setting(None, above=0.0)
    base_tau: float = setting(0.07, above=0.0)  # the loss is scaled by tau / base_tau
    warmup_iters: int = setting(5000, minimum=0)  # loss weight 0 for the first N steps
    max_anchors: int = setting(1024, minimum=1)  # anchors per batch (per process)
    max_views: int = setting(100, minimum=1)  # anchors per (image, class)
    min_class_pixels: int = setting(100, minimum=0)  # a class takes part above this many pixels
    queue_size: int = setting(5000, minimum=1)  # memory: entries per class in each queue
    queue_pixels: int = setting(10, minimum=1)  # memory: pixels enqueued per image and class
    proj_dim: int = setting(256, minimum=1)  # projection (embedding) width

    def resolved(self) -> tuple[float, float]:
        """(temperature, loss weight), the variant's released defaults where None."""
        default_tau, default_weight = VARIANT_DEFAULTS[self.variant]
        return (default_tau if self.tau is None else self.tau,
                default_weight if self.weight is None else self.weight)

    def loss_names(self) -> tuple[str, ...]:
        """The contrast term, present (weighted 0) during the warm-up too."""
        return ("contrast",)


__all__ = ["HeadOptions", "PixelContrastOptions", "PixelQueryOptions", "PrototypeOptions",
           "SoftmaxOptions", "VARIANT_DEFAULTS", "range_problem", "setting"]
