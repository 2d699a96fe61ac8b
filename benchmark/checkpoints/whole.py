"""Whole-model checkpoints (`--checkpoint FILE_OR_DIR`): evaluate a published model.

`load_checkpoint(model, path, names)` finds the file (a folder is searched for the cell's file
names), recognises its format (MMSegmentation 1.x model zoo: benchmark/checkpoints/mmseg_zoo.py;
the released ProtoSeg HRNet: benchmark/checkpoints/openseg.py; this suite's own `final.pt`),
converts it to the Segmentor's names and loads it strictly: every tensor of the model filled, every tensor of the file used
(buffers the suite computes itself aside), else a one-line CheckpointError.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from benchmark.checkpoints.coverage import CheckpointError, LoadReport, apply_state
from benchmark.checkpoints.files import find_file
from benchmark.checkpoints.mmseg_zoo import convert_mmseg_zoo, is_mmseg_zoo
from benchmark.checkpoints.expected import sha256_of
from benchmark.checkpoints.openseg import ALIAS, convert_openseg_hrnet, is_openseg
from benchmark.checkpoints.pretrained import read_state_dict
from methods.catalog import DECODERS, HEADS
from methods.registry import Registry, RegistryError

WHAT = "--checkpoint"
COMPUTED = re.compile(r"relative_position_index$|attn_mask$")  # buffers the suite computes


def find_checkpoint(path: str | Path, names: tuple[str, ...] = ()) -> Path:
    """`path` itself when a file; in a folder, the first file matching one of `names` (globs,
    e.g. 'fcn_r101-d8_512x512_160k_ade20k*.pth'). CheckpointError naming them otherwise."""
    found = find_file(path, names)
    if found is not None:
        return found
    path = Path(path).expanduser()
    wanted = f" (looked for {', '.join(names)})" if names and path.is_dir() else ""
    raise CheckpointError(f"{WHAT}: no checkpoint at {path}{wanted}")


def _names_of(model: nn.Module) -> tuple[str, str, str]:
    """(backbone, decoder, head) registry names of a Segmentor."""
    return (getattr(model.backbone, "name", ""), _registered_name(DECODERS, model.decoder),
            _registered_name(HEADS, model.head))


def _registered_name(registry: Registry, module: nn.Module) -> str:
    """The name `module`'s class is registered under; "" when none (a plugin that cannot be
    imported here is not it: the module exists, so its class was importable)."""
    for name in registry.names():
        try:
            if type(module) is registry.get(name).load():
                return name
        except RegistryError:
            continue
    return ""


def _unprefixed(state: dict) -> dict:
    """Without the `module.` prefix DataParallel/DDP saves."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _is_suite(state: dict, model: nn.Module) -> bool:
    """This suite's own weights (a run's `final.pt`): every tensor of the model by its name."""
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    return bool(own) and own <= set(_unprefixed(state))


def load_checkpoint(model: nn.Module, path: str | Path,
                    names: tuple[str, ...] = ()) -> LoadReport:
    """Load a whole-model checkpoint into `model` (a Segmentor), strictly; the report carries
    the file's format and SHA-256."""
    file = find_checkpoint(path, names)
    try:
        state = read_state_dict(file)
    except CheckpointError as err:  # a global that could run code, refused
        raise CheckpointError(f"{WHAT}: {err}") from None
    except Exception as err:  # noqa: BLE001 - any reader failure means the same to a user
        raise CheckpointError(f"{WHAT}: cannot read {file} as a torch or safetensors state "
                              f"dict ({type(err).__name__})") from None
    backbone, decoder, head = _names_of(model)
    if _is_suite(state, model):
        fmt, converted = "suite", _unprefixed(state)
    elif is_openseg(state):
        fmt, converted = "openseg", convert_openseg_hrnet(state)
    elif is_mmseg_zoo(state):
        fmt, converted = "mmseg-zoo", convert_mmseg_zoo(state, backbone, decoder, head)
    else:
        raise CheckpointError(f"{WHAT}: {file} is not a whole-model checkpoint (no "
                              f"decode_head.* of MMSegmentation's zoo, no cls_head/prototypes "
                              f"of the released ProtoSeg, not this suite's own final.pt); "
                              f"backbone-only files go to --set model.pretrained=FILE")
    report = apply_state(model, converted, str(file), fmt,
                         optional=lambda k: bool(COMPUTED.search(k)),
                         ignorable=lambda k: bool(COMPUTED.search(k)) or k.startswith(ALIAS),
                         strict_unexpected=True, what=WHAT)
    report.sha256 = sha256_of(file)
    return report
