"""MMSegmentation 1.2.2 as the test oracle (docs/fidelity.md): the `mmseg` fixture.

The `fidelity` extra installs mmcv-lite, which has no compiled ops; importing mmseg still loads
`mmcv._ext`, so a stand-in module is registered whose functions raise if ever called (none of
the compared models calls one). Without the extra the tests skip with the reason, except in CI
(env var CI set), where a missing oracle is a failure.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from perf.mmcv_lite import register_stand_in

INSTALL = "install it with `pip install -e '.[fidelity]'` (make test does)"


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
    register_stand_in()
    try:
        oracle = MMSeg()
    except ImportError as err:
        reason = f"MMSegmentation oracle unavailable ({err}); {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert oracle.version == "1.2.2", f"mmsegmentation {oracle.version}; the oracle is 1.2.2"
    return oracle
