"""`mmcv._ext` for mmcv-lite (the `fidelity` extra has no compiled ops): a stand-in module whose
every attribute is a function that raises when called, so MMSegmentation imports and any model
that would need a compiled op says so. Used by perf/peer.py and tests/fidelity/conftest.py."""

from __future__ import annotations

import sys
import types
from typing import Any, Callable


def stand_in_ext() -> types.ModuleType:
    """The stand-in module (not registered)."""
    module = types.ModuleType("mmcv._ext")

    def missing(name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"mmcv compiled op {name!r} called; mmcv-lite has none")

        return op

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


def register_stand_in() -> None:
    """Put the stand-in in `sys.modules` unless a real `mmcv._ext` (or the stand-in) is there."""
    sys.modules.setdefault("mmcv._ext", stand_in_ext())
