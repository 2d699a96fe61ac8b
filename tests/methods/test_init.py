"""`model.init`: `library` keeps torch's / transformers' defaults (what the smoke and CamVid
records were made with), `mmseg` initialises the heads as MMSegmentation and sets MiT's
LayerNorm eps to 1e-6 (tests/fidelity/test_models.py compares it with MMSeg itself)."""

from __future__ import annotations

import torch
from torch import nn

from benchmark.config import ModelSpec
from methods import build_model


def _build(init: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=32,
                                 init=init), 6)


def test_library_init_is_the_default_and_mmseg_differs() -> None:
    default, library, mmseg = _build("library"), _build("library"), _build("mmseg")
    torch.manual_seed(0)
    unset = build_model(ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=32), 6)
    for (name, a), (_, b) in zip(library.state_dict().items(), unset.state_dict().items()):
        assert torch.equal(a, b), name
    eps = {m.eps for m in mmseg.backbone.modules() if isinstance(m, nn.LayerNorm)}
    assert eps == {1e-6}
    assert 1e-5 in {m.eps for m in default.backbone.modules() if isinstance(m, nn.LayerNorm)}
    w = mmseg.head.classifier.weight.detach()
    assert abs(float(w.std()) - 0.01) < 0.003
    assert torch.count_nonzero(mmseg.head.classifier.bias) == 0
    assert not torch.equal(w, library.head.classifier.weight)
