"""MMSegmentation 1.2.2 as the test oracle (docs/fidelity.md): the `mmseg` fixture.

The `fidelity` extra installs mmcv-lite, which has no compiled ops; importing mmseg still loads
`mmcv._ext`, so a stand-in module is registered whose functions raise if ever called (none of
the compared models calls one). Without the extra the tests skip with the reason, except in CI
(env var CI set), where a missing oracle is a failure.
"""

from __future__ import annotations

import copy
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

INSTALL = "install it with `pip install -e '.[fidelity]'` (make test does)"


def _stand_in_ext() -> types.ModuleType:
    """`mmcv._ext` for mmcv-lite: every attribute is a function that raises when called."""
    module = types.ModuleType("mmcv._ext")

    def missing(name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"mmcv compiled op {name!r} called; mmcv-lite has none")

        return op

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


class MMSeg:
    """Builds MMSegmentation models from the configs shipped in the pip package."""

    def __init__(self) -> None:
        import mmseg
        import mmseg.models  # noqa: F401  (registers the model classes)
        from mmengine import Config
        from mmseg.registry import MODELS

        self.version = mmseg.__version__
        self.configs = Path(mmseg.__file__).parent / ".mim" / "configs"
        self._config, self._models = Config, MODELS

    def model_cfg(self, config: str) -> Any:
        """The `model` dict of config `config` (e.g. 'hrnet/fcn_hr48_4xb4-160k_ade20k-512x512')."""
        return copy.deepcopy(self._config.fromfile(self.configs / f"{config}.py").model)

    def build(self, cfg: Any) -> nn.Module:
        """An EncoderDecoder from a model dict: BN instead of SyncBN, no pretrained weights."""
        cfg = copy.deepcopy(cfg)
        cfg.pop("pretrained", None)
        cfg.pop("data_preprocessor", None)
        _replace_sync_bn(cfg)
        return self._models.build(cfg)

    @staticmethod
    def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The decode head's logits at feature resolution (before any resize)."""
        return model.decode_head(model.extract_feat(images))


def _replace_sync_bn(cfg: Any) -> None:
    """SyncBN -> BN everywhere in a (nested) config dict (CPU, one process)."""
    if isinstance(cfg, dict):
        if cfg.get("type") == "SyncBN":
            cfg["type"] = "BN"
        for value in cfg.values():
            _replace_sync_bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _replace_sync_bn(value)


@pytest.fixture(scope="session")
def mmseg() -> MMSeg:
    """The oracle, or a skip (a failure in CI) naming what is missing and how to install it."""
    sys.modules.setdefault("mmcv._ext", _stand_in_ext())
    try:
        oracle = MMSeg()
    except ImportError as err:
        reason = f"MMSegmentation oracle unavailable ({err}); {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert oracle.version == "1.2.2", f"mmsegmentation {oracle.version}; the oracle is 1.2.2"
    return oracle
