"""The checkpoint each backbone expects, and finding it on disk; no torch imported.

The paper backbones expect the ImageNet files MMSegmentation's configs start from (named with
their download URL in error messages and `missing_weights`); a folder given as
`model.pretrained` may hold those or the authors' original releases (found by glob patterns).
The small CPU backbones expect their library's (torchvision / timm / Hugging Face) file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, NamedTuple

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


def sha256_of(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (records and the dry run's weights column name files by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
