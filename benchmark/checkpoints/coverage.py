"""Strict loading: copy converted tensors into a module and account for every one of them.

Every format's conversion (one function per format, in this package) ends in `apply_state`:
tensors are matched by name and shape, and the `LoadReport` says what was loaded, what the
module still lacks (missing), what the file holds that nothing took (unexpected, or ignored
when it is a part the suite never builds, such as an ImageNet classifier), and which shapes
disagree. A required tensor left random, or a shape mismatch, is a `CheckpointError`: one line
naming the file, the format and the parts that are missing: no model starts from random
weights by accident (README, "Check the suite against published checkpoints first").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn


class CheckpointError(ValueError):
    """A checkpoint that is absent, unreadable, or does not fill the model (one-line message)."""


class PretrainedError(CheckpointError):
    """A backbone weights file (`model.pretrained`) that is absent, unreadable or partial."""


def skipped(key: str) -> bool:
    """Bookkeeping tensors that carry no weights: never required, never loaded."""
    return key.endswith("num_batches_tracked")


@dataclass
class LoadReport:
    """What a load did: tensors loaded, missing, unexpected, ignored and mismatched."""

    path: str
    format: str = ""  # e.g. torchvision, mmseg-swin, segformer, mmseg-zoo, openseg
    loaded: int = 0  # tensors copied into the model
    expected: int = 0  # tensors the model holds (bookkeeping excluded)
    prefix: str = ""  # stripped from the file's keys ('' = none)
    missing: list[str] = field(default_factory=list)  # model keys nothing filled
    unexpected: list[str] = field(default_factory=list)  # file keys nothing took
    ignored: list[str] = field(default_factory=list)  # file keys of parts the suite never builds
    mismatched: list[str] = field(default_factory=list)  # same name, other shape (not loaded)
    sha256: str = ""  # of the file, when computed

    def summary(self, limit: int = 5) -> str:
        """One line, e.g. for the run's log."""
        if self.path == "none":
            return "pretrained: none (random initialisation, as requested)"
        fmt = f" ({self.format})" if self.format else ""
        parts = [f"pretrained: loaded {self.loaded}/{self.expected} tensors from {self.path}{fmt}"
                 + (f", sha256 {self.sha256[:12]}" if self.sha256 else "")
                 + (f", prefix {self.prefix!r} stripped" if self.prefix else "")]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape mismatch", self.mismatched), ("ignored", self.ignored)):
            if keys:
                parts.append(f"{name} {len(keys)}: {few(keys, limit)}")
        return "; ".join(parts)


def few(keys: list[str], limit: int = 5) -> str:
    """The first `limit` keys, and how many more."""
    more = f", ... (+{len(keys) - limit})" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def parts_of(keys: list[str], depth: int = 3) -> str:
    """Missing tensors grouped by their module (first `depth` name components), e.g.
    'body.stem (6 tensors), norms.0 (2 tensors)': what a one-line error names."""
    groups: dict[str, int] = {}
    for k in keys:
        head = ".".join(k.split(".")[:-1][:depth]) or k
        groups[head] = groups.get(head, 0) + 1
    return few([f"{g} ({n} tensor{'s' * (n > 1)})" for g, n in groups.items()], 4)


def apply_state(module: nn.Module, state: dict[str, Tensor], path: str, fmt: str,
                optional: Callable[[str], bool] = lambda k: False,
                ignorable: Callable[[str], bool] = lambda k: False,
                strict_unexpected: bool = False, what: str = "model.pretrained") -> LoadReport:
    """Copy `state` (already in `module`'s names) into `module`, strictly.

    `optional(key)`: a module tensor that may stay at its initial value (e.g. MMSeg's own
    additions to an ImageNet backbone); `ignorable(key)`: a file tensor of a part the suite does
    not build. Raises CheckpointError, before copying anything, when a required tensor would
    stay random, a shape disagrees, or (`strict_unexpected`) the file holds tensors nothing takes.
    """
    own = module.state_dict()
    counted = [k for k in own if not skipped(k)]
    report = LoadReport(path=path, format=fmt, expected=len(counted))
    loadable: dict[str, Tensor] = {}
    for key, value in state.items():
        if skipped(key):
            continue
        if key not in own:
            (report.ignored if ignorable(key) else report.unexpected).append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            loadable[key] = value
    report.missing = [k for k in counted if k not in loadable]
    report.loaded = len(counted) - len(report.missing)
    required = [k for k in report.missing if not optional(k)]
    if report.mismatched:
        raise CheckpointError(f"{what}: {path} ({fmt}) has tensors of the wrong shape: "
                              f"{few(report.mismatched, 3)}")
    if required:
        raise CheckpointError(
            f"{what}: {path} ({fmt}) leaves {len(required)} of {len(counted)} tensors random: "
            f"{parts_of(required)}")
    if strict_unexpected and report.unexpected:
        raise CheckpointError(f"{what}: {path} ({fmt}) holds {len(report.unexpected)} tensors "
                              f"the model has no place for: {parts_of(report.unexpected)}")
    with torch.no_grad():
        for key, value in loadable.items():
            own[key].copy_(value.to(own[key].dtype))
    return report
