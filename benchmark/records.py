"""The typed payloads of a run record (`benchmark.store.Record`): metrics, parameter counts,
timings, memory and provenance, each a dataclass whose fields are the keys the code writes.

On disk each payload is the same JSON object as ever (`to_json` / `from_dict` round-trip it key
for key): a known key is a field, `None` meaning absent (left out when written); a known key the
file stored as null is remembered in `nulls` and written back as null; a key this version does
not know (written by an older or newer one) is kept in `extra` and written back unchanged, so a
read-write round trip loses nothing. Values are taken as stored, never converted: validation
stays in store.py (`_problem`) and sense.py. Pure Python, no torch; imports nothing of the
project (store.py imports it, never the other way).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

P = TypeVar("P", bound="Payload")


@dataclass(kw_only=True)
class Payload:
    """What every payload shares: unknown keys and keys stored as null, kept for the round trip."""

    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know
    nulls: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def known(cls) -> tuple[str, ...]:
        """The JSON keys this payload has fields for."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "nulls"))

    @classmethod
    def from_dict(cls: type[P], data: Mapping[str, Any] | Payload | None) -> P:
        """The payload of a parsed JSON object (a payload of this type is returned as is)."""
        if isinstance(data, cls):
            return data
        if isinstance(data, Payload):
            data = data.to_json()
        data = dict(data or {})
        names = cls.known()
        values = {k: data[k] for k in names if data.get(k) is not None}
        nulls = frozenset(k for k in names if k in data and data[k] is None)
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**values, extra=extra, nulls=nulls)

    def to_json(self) -> dict[str, Any]:
        """The JSON object as stored: set fields, fields stored as null, then unknown keys."""
        out = {}
        for name in self.known():
            value = getattr(self, name)
            if value is not None or name in self.nulls:
                out[name] = value
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}


@dataclass(kw_only=True)
class Metrics(Payload):
    """What the evaluation measured, in percent (`benchmark.train.evaluate`), and for prototype
    heads their health per class (`benchmark.train.telemetry`)."""

    miou: float | None = None
    aacc: float | None = None
    per_class_iou: dict[str, float | None] | None = None  # class name -> IoU; null: absent class
    pixels: int | None = None  # labelled pixels evaluated: the confusion matrix's total
    prototype_health: dict[str, Any] | None = None  # prototype heads only


@dataclass(kw_only=True)
class Params(Payload):
    """Parameter counts of the model (`methods.count_params`): learnable, and all of them."""

    learnable: int | None = None
    total: int | None = None  # all parameters plus the head's prototypes (not BN statistics)


@dataclass(kw_only=True)
class Timings(Payload):
    """Seconds and throughputs of a run, and the step it resumed from (`train.engine`)."""

    train_s: float | None = None
    eval_s: float | None = None
    step_s_median: float | None = None  # trained runs only, as the two below
    train_img_per_s: float | None = None
    eval_img_per_s: float | None = None
    resumed_from_step: int | None = None


@dataclass(kw_only=True)
class Memory(Payload):
    """The peak memory of a run and what the number means (`train.telemetry.peak_record`)."""

    device: str | None = None  # "cpu" or "cuda"
    peak_bytes: int | None = None
    note: str | None = None


@dataclass(kw_only=True)
class Provenance(Payload):
    """Where and with what a run was made (`benchmark.provenance`): commit, libraries, hardware,
    the pretrained backbone file, and the diff of uncommitted code."""

    git_commit: str | None = None  # "<sha>", "<sha>-dirty" or "unknown"
    versions: dict[str, str] | None = None  # library -> version
    hardware: dict[str, Any] | None = None  # host, machine, cpu, cpu_count, torch_threads, gpu
    pretrained: dict[str, Any] | None = None  # trained runs: backbone file, sha256, tensors
    diff: dict[str, Any] | None = None  # uncommitted code: {file, sha256, bytes}


PAYLOADS = {"metrics": Metrics, "params": Params, "timings": Timings, "memory": Memory,
            "provenance": Provenance}  # the Record field each payload type fills
