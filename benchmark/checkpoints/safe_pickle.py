"""Reading `.pth` files that pickle more than tensors, without letting a file run code.

MMSegmentation's training runner (mmengine) saves `iter_160000.pth` as {meta, state_dict,
message_hub, optimizer, param_schedulers}: next to the weights it pickles mmengine objects
(HistoryBuffer, ConfigDict) and numpy arrays and scalars, which `torch.load(weights_only=True)`
refuses, and an unrestricted `torch.load` would let the file call anything (`os.system`).

`load(path)` tries `weights_only=True` first. When that refuses a global, it loads again through
`RestrictedUnpickler`: torch's own weights-only globals (tensors, storages, dtypes, OrderedDict)
are the real thing; the classes and functions of a vetted list of modules (mmengine and the
OpenMMLab packages, numpy, addict) become an inert `Placeholder` that calls nothing and keeps
nothing; any other global (`os.system`, `builtins.eval`, `subprocess.*`) stops the load with
`RefusedGlobal`. So only the weights and plain meta (numbers, strings) are read.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

import torch

# modules whose objects a training runner pickles beside the weights: read as placeholders
VETTED = ("mmengine", "mmseg", "mmcv", "mmdet", "mmpretrain", "numpy", "addict", "_codecs",
          "copyreg", "collections", "datetime", "pathlib", "argparse")
# builtins that numpy's pickles use to name a dtype class (`getattr(numpy.dtypes, ...)`): as a
# placeholder it returns an inert object, never the attribute asked for
INERT_BUILTINS = ("builtins.getattr", "__builtin__.getattr")


class RefusedGlobal(pickle.UnpicklingError):
    """The file asks for a global no checkpoint needs (it could run code); the load stops."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Placeholder(dict):
    """Stands in for a vetted class or function of the file: accepts any construction, state,
    items or list appends, and runs none of the original's code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "Placeholder":
        return Placeholder()


def _torch_globals() -> dict[str, Any]:
    """torch's allowlist for `weights_only=True` (tensor rebuilders, storages, dtypes)."""
    from torch import _weights_only_unpickler

    return dict(_weights_only_unpickler._get_allowed_globals())


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` gives torch's safe globals, placeholders for the vetted
    modules, and refuses everything else."""

    _allowed: dict[str, Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _torch_globals()
        full = f"{module}.{name}"
        if full in RestrictedUnpickler._allowed:
            return RestrictedUnpickler._allowed[full]
        if module.split(".")[0] in VETTED or full in INERT_BUILTINS:
            return Placeholder
        raise RefusedGlobal(full)


# what torch.load takes as `pickle_module`: this module's Unpickler, pickle's load and dump
restricted = types.SimpleNamespace(Unpickler=RestrictedUnpickler, load=pickle.load,
                                   dump=pickle.dump, __name__="restricted_pickle")


def load(path: Path | str) -> Any:
    """The object pickled in `path` (a torch file), tensors on the CPU; `RefusedGlobal` when
    the file asks for a global outside torch's safe set and the vetted modules."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "Unsupported global" not in str(err):
            raise
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted)
