"""Each head's options: one frozen dataclass per head with its defaults and allowed values.

Torch-free on purpose: `benchmark.config` composes its `HeadSpec` (what `--set model.head.*`
addresses) from these classes, and `--dry-run` must not import torch. A HeadSpec field is the
head's `PREFIX` + the option's name (e.g. `contrast_` + `variant`), so adding an option to a head
is one edit here. Allowed values are the `Literal` types: `choices()` reads them for the config
validation and `check()` for the heads' constructors (one list, one check).
Options and defaults are those of docs/method.md (released code unless stated).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

_O = TypeVar("_O", bound="HeadOptions")


@dataclass(frozen=True)
class HeadOptions:
    """Base of every head's options: what a head is called, how HeadSpec names its fields,
    the allowed values of its string options and which loss terms it produces."""

    HEAD: ClassVar[str] = ""  # the head's name (HeadSpec.name, `methods.HEADS`)
    PREFIX: ClassVar[str] = ""  # HeadSpec field name = PREFIX + option name

    @classmethod
    def choices(cls) -> dict[str, tuple[Any, ...]]:
        """Allowed values of each `Literal`-typed option, by option name."""
        hints = typing.get_type_hints(cls)
        return {f.name: typing.get_args(hints[f.name]) for f in fields(cls)
                if typing.get_origin(hints[f.name]) is Literal}

    @classmethod
    def spec_names(cls) -> dict[str, str]:
        """HeadSpec field name of each option, by option name."""
        return {f.name: cls.PREFIX + f.name for f in fields(cls)}

    @classmethod
    def from_spec(cls: type[_O], spec: Any) -> _O:
        """This head's options read from a HeadSpec-like object (its prefixed fields)."""
        return cls(**{name: getattr(spec, key) for name, key in cls.spec_names().items()})

    def check(self: _O) -> _O:
        """Raise a one-line ValueError for a value outside its declared choices; else self."""
        for name, allowed in self.choices().items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{self.HEAD} head: {name}={value!r}; choose one of "
                                 f"{', '.join(map(str, allowed))}")
        return self

    def loss_names(self) -> tuple[str, ...]:
        """Keys of `HeadOutput.losses` a training step produces (the engine adds "ce", "aux")."""
        return ()


@dataclass(frozen=True)
class SoftmaxOptions(HeadOptions):
    """The softmax head (a 1x1 convolution) has no options."""

    HEAD: ClassVar[str] = "softmax"


@dataclass(frozen=True)
class PixelQueryOptions(HeadOptions):
    """Parametric pixel-query head (Segmenter-style mask transformer, docs/method.md)."""

    HEAD: ClassVar[str] = "pixel_query"
    PREFIX: ClassVar[str] = "query_"

    layers: int = 2  # transformer layers over the pixel and class-query tokens
    heads: int = 4  # attention heads (must divide dim)
    dim: int = 0  # token width; 0 = min(decoder width, 256)


@dataclass(frozen=True)
class PrototypeOptions(HeadOptions):
    """ProtoSeg's nonparametric prototype head; defaults = released code (docs/method.md)."""

    HEAD: ClassVar[str] = "prototype"

    num_prototypes: int = 10  # K prototypes per class
    embed_dim: int = 0  # embedding width; 0 = decoder width
    projection: Literal["mlp", "none"] = "mlp"  # mlp (released code) | none (paper's param count)
    proj_norm_axis: Literal["channel", "width"] = "channel"  # width: released-code quirk
    score_norm: Literal["layernorm", "none"] = "layernorm"  # LayerNorm over the class scores
    update_assign: Literal["argmax", "gumbel"] = "argmax"  # gumbel: released code, randomised
    gamma: float = 0.999  # prototype momentum
    sinkhorn_eps: float = 0.05  # Sinkhorn-Knopp entropy regularisation
    sinkhorn_iters: int = 3  # Sinkhorn-Knopp iterations
    # process: each process solves its own pixels' problem (released code) | all: one problem
    # over every process's pixels (docs/method.md#sinkhorn)
    sinkhorn_scope: Literal["process", "all"] = "process"
    ppc_weight: float = 0.01  # pixel-prototype contrast loss weight; 0 = term off
    ppd_weight: float = 0.001  # pixel-prototype distance loss weight; 0 = term off
    ppc_tau: float = 1.0  # PPC temperature: released code 1.0, the paper reportedly 0.1

    def loss_names(self) -> tuple[str, ...]:
        """PPC and PPD, each only when weighted > 0."""
        return tuple(n for n, w in (("ppc", self.ppc_weight), ("ppd", self.ppd_weight)) if w > 0)


# Released defaults per pixel-contrast variant (docs/method.md): (temperature, loss weight).
VARIANT_DEFAULTS = {"in_batch": (0.1, 0.1), "memory": (0.07, 1.0)}


@dataclass(frozen=True)
class PixelContrastOptions(HeadOptions):
    """ContrastiveSeg: softmax head + pixel contrast; defaults = its released code."""

    HEAD: ClassVar[str] = "pixel_contrast"
    PREFIX: ClassVar[str] = "contrast_"

    variant: Literal["in_batch", "memory"] = "in_batch"  # anchors of the batch | memory queues
    weight: float | None = None  # loss weight; None = the variant's: 0.1 in_batch, 1.0 memory
    tau: float | None = None  # temperature; None = the variant's: 0.1 in_batch, 0.07 memory
    base_tau: float = 0.07  # the loss is scaled by tau / base_tau
    warmup_iters: int = 5000  # loss weight 0 for the first N training steps
    max_anchors: int = 1024  # anchors per batch (per process)
    max_views: int = 100  # anchors per (image, class)
    min_class_pixels: int = 100  # a class takes part with more labelled pixels than this
    queue_size: int = 5000  # memory: entries per class in each queue
    queue_pixels: int = 10  # memory: pixels enqueued per image and class
    proj_dim: int = 256  # projection (embedding) width

    def resolved(self) -> tuple[float, float]:
        """(temperature, loss weight), the variant's released defaults where None."""
        default_tau, default_weight = VARIANT_DEFAULTS[self.variant]
        return (default_tau if self.tau is None else self.tau,
                default_weight if self.weight is None else self.weight)

    def loss_names(self) -> tuple[str, ...]:
        """The contrast term, present (weighted 0) during the warm-up too."""
        return ("contrast",)


# Every head's options by head name, in the order of `methods.HEADS` and `catalog.HEAD_NAMES`.
HEAD_OPTIONS: dict[str, type[HeadOptions]] = {
    cls.HEAD: cls for cls in (SoftmaxOptions, PixelQueryOptions, PrototypeOptions,
                              PixelContrastOptions)
}


def options_for(spec: Any) -> HeadOptions:
    """The options of the head named `spec.name`, read from a HeadSpec-like object."""
    if spec.name not in HEAD_OPTIONS:
        raise ValueError(f"unknown head {spec.name!r}; choose one of {', '.join(HEAD_OPTIONS)}")
    return HEAD_OPTIONS[spec.name].from_spec(spec)


__all__ = ["HEAD_OPTIONS", "HeadOptions", "PixelContrastOptions", "PixelQueryOptions",
           "PrototypeOptions", "SoftmaxOptions", "VARIANT_DEFAULTS", "options_for"]
