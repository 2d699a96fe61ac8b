"""`setting(...)`: a spec or option field with its allowed range and the value it had before it
existed, declared once where the field is defined (torch-free; benchmark/config.py and the heads'
options use it)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

_NOT_ADDED = object()


def setting(default: Any, *, minimum: float | None = None, maximum: float | None = None,
            above: float | None = None, legacy: Any = _NOT_ADDED) -> Any:
    """A spec or option field with its allowed range and, for a field added after records
    exist, `legacy`: the value that reproduces the behaviour from before it existed. A cell at
    its legacy value keeps the key it had (benchmark/config.py), so adding a field re-keys
    nothing; `legacy` is declared once, here, next to the field."""
    meta: dict[str, Any] = {}
    for name, bound in (("minimum", minimum), ("maximum", maximum), ("above", above)):
        if bound is not None:
            meta[name] = bound
    if legacy is not _NOT_ADDED:
        meta["legacy"] = legacy
    return dataclasses.field(default=default, metadata=meta)


def range_problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a number against a field's declared range, or None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    if "above" in meta and not value > meta["above"]:
        return f"must be > {meta['above']}"
    if "minimum" in meta and value < meta["minimum"]:
        return f"must be >= {meta['minimum']}"
    if "maximum" in meta and value > meta["maximum"]:
        return f"must be <= {meta['maximum']}"
    return None
