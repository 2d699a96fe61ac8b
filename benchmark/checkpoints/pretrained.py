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

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from benchmark.checkpoints import library, mmseg_backbone, original
from benchmark.checkpoints.coverage import CheckpointError, LoadReport, apply_state

NONE = "none"  # model.pretrained value: train from random weights, explicitly


class Expected(NamedTuple):
    """The checkpoint a backbone expects: its file name, where it comes from, and the glob
    patterns that find it (or an equivalent release) inside a folder."""

    name: str
    origin: str
    patterns: tuple[str, ...] = ()


def _torchvision(enum: str, member: str = "IMAGENET1K_V1") -> Expected:
    import torchvision

    url = getattr(getattr(torchvision.models, enum), member).url
    name = url.rsplit("/", 1)[-1]
    return Expected(name, f"torchvision {enum}.{member}, {url}", (name,))


def _timm(name: str) -> Expected:
    import timm

    hub = timm.models.get_pretrained_cfg(name).hf_hub_id
    file = f"{hub.split('/')[-1]}/model.safetensors"
    return Expected(file, f"timm {name}, Hugging Face {hub}", (file,))


def _hf(repo: str) -> Expected:
    name = repo.split("/")[-1]
    return Expected(name, f"Hugging Face {repo} folder with model.safetensors or "
                          f"pytorch_model.bin", (name,))


MMSEG_PRETRAIN = "https://download.openmmlab.com/pretrain/third_party/"
MMSEG_V05 = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/"

# The checkpoint each backbone expects (what error messages and `missing_weights` name). The
# paper backbones expect the ImageNet files MMSegmentation's configs start from; a folder may
# hold the authors' original release instead (matched by the later patterns).
EXPECTED: dict[str, Callable[[], Expected]] = {
    "resnet101_d8": lambda: Expected(
        "resnet101_v1c-e67eebb6.pth", f"MMSeg open-mmlab://resnet101_v1c, "
        f"{MMSEG_PRETRAIN}resnet101_v1c-e67eebb6.pth", ("resnet101_v1c*.pth",)),
    "hrnetv2_w48": lambda: Expected(
        "hrnetv2_w48-d2186c55.pth", f"MMSeg open-mmlab://msra/hrnetv2_w48, "
        f"{MMSEG_PRETRAIN}hrnetv2_w48-d2186c55.pth", ("hrnetv2_w48*.pth", "hrnet_w48*.pth")),
    "swin_b": lambda: Expected(
        "swin_base_patch4_window7_224_20220317-e9b98025.pth", f"MMSeg Swin-B ImageNet-1K, "
        f"{MMSEG_V05}swin/swin_base_patch4_window7_224_20220317-e9b98025.pth (or Swin's own "
        f"swin_base_patch4_window7_224.pth)", ("swin_base_patch4_window7_224*.pth",)),
    "mit_b4": lambda: Expected(
        "mit_b4_20220624-d588d980.pth", f"MMSeg MiT-B4 ImageNet-1K, "
        f"{MMSEG_V05}segformer/mit_b4_20220624-d588d980.pth (or SegFormer's own mit_b4.pth)",
        ("mit_b4*.pth", "mit-b4")),
    "mit_b2": lambda: Expected(
        "mit_b2.pth", f"MMSeg MiT-B2 ImageNet-1K, {MMSEG_V05}segformer/ (mit_b2_*.pth), or "
        f"SegFormer's own mit_b2.pth", ("mit_b2*.pth", "mit-b2")),
    "resnet18_d8": lambda: _torchvision("ResNet18_Weights"),
    "hrnetv2_w18_small": lambda: _timm("hrnet_w18_small_v2"),
    "swin_t": lambda: _torchvision("Swin_T_Weights"),
    "mit_b0": lambda: _hf("nvidia/mit-b0"),
}


def expected_checkpoint(backbone: str) -> Expected | None:
    """The checkpoint `backbone` expects, or None for a backbone without a known one."""
    maker = EXPECTED.get(backbone)
    return maker() if maker else None


def describe(expected: Expected | None) -> str:
    return f"{expected.name} ({expected.origin})" if expected else "a state dict of the backbone"


# ----------------------------------------------------------------------------- reading files


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")


def resolve(path: Path, expected: Expected | None) -> Path:
    """The weights file `path` stands for: a file itself; a Hugging Face model folder's weights;
    or, in a folder of checkpoints, the backbone's expected file. FileNotFoundError otherwise."""
    if path.is_dir():
        for name in HF_WEIGHTS:
            if (path / name).is_file():
                return path / name
        for pattern in (expected.patterns if expected else ()):
            found = sorted(path.glob(pattern))
            if found:
                return resolve(found[0], None)
        raise FileNotFoundError(path / (expected.name if expected else HF_WEIGHTS[0]))
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, containers (`state_dict`, `model`, ...) unwrapped."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
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


def sha256_of(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (records and the dry run's weights column name files by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
        raise CheckpointError(f"{err}; expected {expected}") from None
    report.prefix = prefix
    return report


def resolve_or_fail(path: str | Path, wanted: Expected | None,
                    what: str = "model.pretrained") -> Path:
    try:
        return resolve(Path(path).expanduser(), wanted)
    except FileNotFoundError as err:
        raise CheckpointError(
            f"{what}: no checkpoint at {err.args[0]}; expected {describe(wanted)}"
        ) from None


def read_or_fail(file: Path, expected: str, what: str = "model.pretrained") -> dict[str, Tensor]:
    try:
        return read_state_dict(file)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to a user
        raise CheckpointError(
            f"{what}: cannot read {file} as a torch or safetensors state dict "
            f"({type(err).__name__}); expected {expected}"
        ) from None
