"""Backbone weights from a local file: torchvision, timm and Hugging Face checkpoint formats.

`load_pretrained(model, path)` reads a state dict from `path`: a `.pth`/`.pt`/`.bin` file
(`torch.load`), a `.safetensors` file, a Hugging Face model folder, or a folder of checkpoints
that holds the backbone's expected file (e.g. `resnet101-63fe2227.pth`, so that one
`--set model.pretrained=DIR` serves a whole grid). It unwraps the usual containers
(`state_dict`, `model`, ...), strips the key prefix (`module.`, `backbone.body.`, ...) that
makes most names match the backbone's library model (`model.backbone.body`; Hugging Face models
go through `from_pretrained`, which knows their legacy key names), loads the tensors whose names
and shapes match, and returns a `LoadReport` of missing, unexpected and mismatched keys. A
missing, unreadable or foreign file raises `PretrainedError`: one line naming the file the
backbone expects. Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

MIN_COVERAGE = 0.5  # below this share of the backbone's tensors, the file is the wrong one


class PretrainedError(ValueError):
    """A checkpoint that is absent, unreadable or does not fit the backbone (one-line message)."""


class Expected(NamedTuple):
    """The checkpoint a backbone expects: its usual file name and where it comes from."""

    name: str  # file or folder name, looked up inside a folder given as model.pretrained
    origin: str


def _torchvision(enum: str, member: str = "IMAGENET1K_V1") -> Expected:
    import torchvision

    url = getattr(getattr(torchvision.models, enum), member).url
    return Expected(url.rsplit("/", 1)[-1], f"torchvision {enum}.{member}, {url}")


def _timm(name: str) -> Expected:
    import timm

    hub = timm.models.get_pretrained_cfg(name).hf_hub_id
    return Expected(f"{hub.split('/')[-1]}/model.safetensors", f"timm {name}, Hugging Face {hub}")


def _hf(repo: str) -> Expected:
    return Expected(repo.split("/")[-1], f"Hugging Face {repo} folder with model.safetensors "
                                         f"or pytorch_model.bin")


# The checkpoint each backbone expects (what the error messages name).
EXPECTED: dict[str, Callable[[], Expected]] = {
    "resnet101_d8": lambda: _torchvision("ResNet101_Weights"),
    "resnet18_d8": lambda: _torchvision("ResNet18_Weights"),
    "hrnetv2_w48": lambda: _timm("hrnet_w48"),
    "hrnetv2_w18_small": lambda: _timm("hrnet_w18_small_v2"),
    "swin_b": lambda: _torchvision("Swin_B_Weights"),
    "swin_t": lambda: _torchvision("Swin_T_Weights"),
    "mit_b4": lambda: _hf("nvidia/mit-b4"),
    "mit_b2": lambda: _hf("nvidia/mit-b2"),
    "mit_b0": lambda: _hf("nvidia/mit-b0"),
}


def expected_checkpoint(backbone: str) -> Expected | None:
    """The checkpoint `backbone` expects, or None for a backbone without a known one."""
    maker = EXPECTED.get(backbone)
    return maker() if maker else None


def _describe(expected: Expected | None) -> str:
    return f"{expected.name} ({expected.origin})" if expected else "a state dict of the backbone"


@dataclass
class LoadReport:
    """What `load_pretrained` did: which tensors it loaded and which it could not match."""

    path: str
    prefix: str  # stripped from the checkpoint's keys ('' = none)
    loaded: int  # tensors copied into the backbone
    expected: int  # tensors of the backbone's library model
    missing: list[str] = field(default_factory=list)  # backbone keys the file lacks
    unexpected: list[str] = field(default_factory=list)  # file keys the backbone lacks
    mismatched: list[str] = field(default_factory=list)  # same name, other shape (not loaded)

    def summary(self, limit: int = 5) -> str:
        """One line, e.g. for the run's log."""

        def few(keys: list[str]) -> str:
            more = f", ... (+{len(keys) - limit})" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        parts = [f"pretrained: loaded {self.loaded}/{self.expected} tensors from {self.path}"
                 + (f" (prefix {self.prefix!r} stripped)" if self.prefix else "")]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape mismatch", self.mismatched)):
            if keys:
                parts.append(f"{name} {len(keys)}: {few(keys)}")
        return "; ".join(parts)


# ----------------------------------------------------------------------------- reading files


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")


def _resolve(path: Path, expected: Expected | None) -> Path:
    """The weights file `path` stands for: a file itself; a Hugging Face model folder's weights;
    or, in a folder of checkpoints, the backbone's expected file. FileNotFoundError otherwise."""
    if path.is_dir():
        for name in HF_WEIGHTS:
            if (path / name).is_file():
                return path / name
        if expected is not None and (path / expected.name).exists():
            return _resolve(path / expected.name, None)
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


def _best_prefix(keys: list[str], target: set[str]) -> str:
    """The prefix whose removal makes most checkpoint keys name a target tensor."""
    candidates = {""}
    for k in keys:
        parts = k.split(".")
        candidates.update(".".join(parts[:n]) + "." for n in (1, 2, 3) if len(parts) > n)

    def hits(prefix: str) -> int:
        return sum(k[len(prefix):] in target for k in keys if k.startswith(prefix))

    return max(sorted(candidates, key=len), key=hits)


# ----------------------------------------------------------------------------- loading


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load backbone weights from a local file into `model` (a Segmentor or a backbone).

    Tensors are matched by name (after stripping the best prefix) and shape; the report lists
    the rest. Raises PretrainedError when the file is absent or unreadable, or when it fills
    less than half of the backbone's tensors (the wrong file).
    """
    module = getattr(model, "backbone", model)
    body = getattr(module, "body", module)
    wanted = expected_checkpoint(getattr(module, "name", ""))
    expected = _describe(wanted)
    try:
        file = _resolve(Path(path).expanduser(), wanted)
    except FileNotFoundError as err:
        raise PretrainedError(
            f"model.pretrained: no checkpoint at {err.args[0]}; expected {expected}"
        ) from None
    try:
        state = read_state_dict(file)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to a user
        raise PretrainedError(
            f"model.pretrained: cannot read {file} as a torch or safetensors state dict "
            f"({type(err).__name__}); expected {expected}"
        ) from None

    is_hf = hasattr(body, "config") and hasattr(type(body), "from_pretrained")
    prefix, loaded, missing, unexpected, mismatched = (
        _load_hf(body, state) if is_hf else _load_by_name(body, state)
    )
    counted = [k for k in body.state_dict() if not k.endswith("num_batches_tracked")]
    if loaded < MIN_COVERAGE * max(len(counted), 1):
        raise PretrainedError(
            f"model.pretrained: {file} fits only {loaded}/{len(counted)} tensors of the "
            f"backbone; expected {expected}"
        )
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    return LoadReport(str(file), prefix, loaded, len(counted), missing, unexpected, mismatched)


Matched = tuple[str, int, list[str], list[str], list[str]]  # prefix, loaded, missing, unexp., mism.


def _load_by_name(body: nn.Module, state: dict[str, Tensor]) -> Matched:
    """torchvision / timm / own checkpoints: strip the best prefix, copy same-name same-shape."""
    own = body.state_dict()
    counted = [k for k in own if not k.endswith("num_batches_tracked")]
    prefix = _best_prefix(list(state), set(counted))
    loadable, mismatched, unexpected = {}, [], []
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else ""
        if name not in own:
            unexpected.append(key)
        elif tuple(own[name].shape) != tuple(value.shape):
            mismatched.append(f"{name} {tuple(value.shape)} vs {tuple(own[name].shape)}")
        else:
            loadable[name] = value
    covered = sum(k in loadable for k in counted)
    if covered >= MIN_COVERAGE * max(len(counted), 1):
        with torch.no_grad():
            for key, value in loadable.items():
                own[key].copy_(value.to(own[key].dtype))
    return prefix, covered, [k for k in counted if k not in loadable], unexpected, mismatched


def _load_hf(body: nn.Module, state: dict[str, Tensor]) -> Matched:
    """Hugging Face models: `from_pretrained` applies the library's own key renaming (its
    checkpoints keep the legacy `segformer.encoder.block...` names) and prefix handling."""
    import transformers

    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        loaded_model, info = type(body).from_pretrained(
            None, config=body.config, state_dict=state, output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    counted = [k for k in body.state_dict() if not k.endswith("num_batches_tracked")]
    missing = sorted(set(info["missing_keys"]))
    mismatched = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in info["mismatched_keys"]]
    loaded = len(counted) - len(missing) - len(mismatched)
    if loaded >= MIN_COVERAGE * max(len(counted), 1):
        body.load_state_dict(loaded_model.state_dict())
    return "", loaded, missing, list(info["unexpected_keys"]), mismatched
