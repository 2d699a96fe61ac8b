"""Backbone weights from a local file, in any of the formats the field ships.

`load_pretrained(model, path)` reads a state dict from `path`: a `.pth`/`.pt`/`.bin` file
(`torch.load`), a `.safetensors` file, a Hugging Face model folder, or a folder of checkpoints
that holds the backbone's expected file (e.g. `resnet101_v1c-e67eebb6.pth`, so that one
`--set model.pretrained=DIR` serves a whole grid). It unwraps the usual containers
(`state_dict`, `model`, ...), recognises the format by its key names, converts it (one function
per format: benchmark/checkpoints/{library,mmseg_backbone,original}.py) and loads it strictly
(benchmark/checkpoints/coverage.py): a required tensor left random is a one-line
`CheckpointError` naming the part and the file the backbone expects. `model.pretrained=none`
trains from random weights on purpose. Nothing is ever downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from torch import Tensor, nn

from benchmark.checkpoints import library, mmseg_backbone, original, safe_pickle
from benchmark.checkpoints.coverage import (
    CheckpointError,
    LoadReport,
    PretrainedError,
    apply_state,
)
from benchmark.checkpoints.expected import (
    NONE,
    Expected,
    describe,
    expected_checkpoint,
    resolve,
    sha256_of,
)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, containers (`state_dict`, `model`, ...) unwrapped; a
    training runner's file (mmengine: meta, message_hub, optimizer) is read without running its
    objects' code (benchmark/checkpoints/safe_pickle.py)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        try:  # tensors and plain meta only: a runner's objects become inert placeholders
            obj = safe_pickle.load(path)
        except safe_pickle.RefusedGlobal as err:
            raise CheckpointError(f"{path} asks to call {err.name} while it loads, which no "
                                  f"checkpoint needs: refused (a file could run code that way)"
                                  ) from None
    for _ in range(3):  # e.g. {"state_dict": {...}} or {"model": {"module": {...}}}
        if isinstance(obj, dict) and obj and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model", "module", "state_dict_ema")
                          if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise ValueError("not a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


# ----------------------------------------------------------------------------- formats

# (format, marker of one of its keys, converter). The marker's match also gives the prefix.
FORMATS: tuple[tuple[str, str, Callable[[dict[str, Tensor]], dict[str, Tensor]]], ...] = (
    ("segformer", r"patch_embed1\.proj\.weight", original.convert_segformer),
    ("mmseg-mit", r"layers\.0\.0\.projection\.weight", mmseg_backbone.convert_mmseg_mit),
    ("swin", r"layers\.0\.blocks\.0\.attn\.qkv\.weight", original.convert_swin),
    ("mmseg-swin", r"stages\.0\.blocks\.0\.attn\.w_msa\.qkv\.weight",
     mmseg_backbone.convert_mmseg_swin),
    ("mmseg-resnet-v1c", r"stem\.0\.weight", mmseg_backbone.convert_mmseg_resnet_v1c),
)
# File tensors of parts the suite never builds (ImageNet classifiers, HRNet's classification
# branches, Swin's final norm) and buffers it computes itself.
IGNORABLE = re.compile(r"^(body\.)?(fc|head|classifier|incre_modules|downsamp_modules|"
                       r"final_layer|norm)\.|(attn_mask|relative_position_index)$")
# Backbone tensors an ImageNet file does not hold, by design: MMSeg's Swin output norms (new
# LayerNorms in MMSeg too) and Swin's computed position index.
OPTIONAL = re.compile(r"^norms\.|relative_position_index$")


def detect(state: dict[str, Tensor]) -> tuple[str, str, Callable | None]:
    """(format, prefix, converter) of a state dict, by its key names; ('library', '', None)
    for torchvision / timm / Hugging Face / MMSeg HRNet / the suite's own names."""
    for fmt, marker, convert in FORMATS:
        for key in state:
            m = re.fullmatch(rf"(.*?){marker}", key)
            if m:
                return fmt, m[1], convert
    return "library", "", None


def convert(backbone: nn.Module, state: dict[str, Tensor]) -> tuple[str, str, dict[str, Tensor]]:
    """The file's tensors under the suite backbone's names: (format, prefix, converted)."""
    body = getattr(backbone, "body", backbone)
    fmt, prefix, converter = detect(state)
    if converter is not None:
        inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        converted = converter(inner)
        converted.update({k: v for k, v in state.items() if not k.startswith(prefix)})
        return fmt, prefix, converted
    if hasattr(body, "config") and hasattr(type(body), "from_pretrained"):
        return "huggingface", "", library.convert_hf(body, state)
    prefix, converted = library.convert_by_name(body, state)
    return "torchvision/timm", prefix, converted


# ----------------------------------------------------------------------------- loading


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load backbone weights from a local file into `model` (a Segmentor or a backbone).

    `path` = 'none' loads nothing (random initialisation, asked for). Raises CheckpointError
    when the file is absent or unreadable, or leaves a required backbone tensor random.
    """
    if str(path) == NONE:
        return LoadReport(path=NONE)
    backbone = getattr(model, "backbone", model)
    wanted = expected_checkpoint(getattr(backbone, "name", ""))
    expected = describe(wanted)
    file = resolve_or_fail(path, wanted)
    state = read_or_fail(file, expected)
    fmt, prefix, converted = convert(backbone, state)
    try:
        report = apply_state(backbone, converted, str(file), fmt,
                             optional=lambda k: bool(OPTIONAL.search(k)),
                             ignorable=lambda k: bool(IGNORABLE.search(k)))
    except CheckpointError as err:
        raise PretrainedError(f"{err}; expected {expected}") from None
    report.prefix, report.sha256 = prefix, sha256_of(file)
    return report


def resolve_or_fail(path: str | Path, wanted: Expected | None,
                    what: str = "model.pretrained") -> Path:
    try:
        return resolve(Path(path).expanduser(), wanted)
    except FileNotFoundError as err:
        raise PretrainedError(
            f"{what}: no checkpoint at {err.args[0]}; expected {describe(wanted)}"
        ) from None


def read_or_fail(file: Path, expected: str, what: str = "model.pretrained") -> dict[str, Tensor]:
    try:
        return read_state_dict(file)
    except CheckpointError as err:  # a refused global: its own words
        raise PretrainedError(f"{what}: {err}") from None
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to a user
        raise PretrainedError(
            f"{what}: cannot read {file} as a torch or safetensors state dict "
            f"({type(err).__name__}); expected {expected}"
        ) from None
