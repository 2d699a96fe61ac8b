"""Checkpoints the field ships, loaded strictly into the suite's models.

- Backbone (ImageNet) weights, `model.pretrained`: torchvision / timm / Hugging Face files
  (library.py), MMSegmentation's backbone files (mmseg_backbone.py), the authors' original
  SegFormer and Swin releases (original.py); `load_pretrained` (pretrained.py).
- Whole-model checkpoints, `--checkpoint`: MMSegmentation 1.x model-zoo files (mmseg_zoo.py)
  and the released ProtoSeg HRNet (openseg.py); `load_checkpoint` (whole.py).
- `missing_weights(cells)`: the backbones of paper cells that would start from random weights
  (weights.py), checked before any paper-grid run, submission or preflight.
Every load reports loaded / missing / unexpected / mismatched tensors and fails with one line
(`CheckpointError`) when a required part would stay random. The names below load on first use,
so that `missing_weights` and the dry run's weights column import no torch.
"""

from __future__ import annotations

from methods._lazy import lazy_exports

_EXPORTS = {
    "CheckpointError": "coverage", "PretrainedError": "coverage", "LoadReport": "coverage",
    "NONE": "expected", "Expected": "expected", "expected_checkpoint": "expected",
    "load_pretrained": "pretrained", "read_state_dict": "pretrained", "sha256_of": "expected",
    "load_checkpoint": "whole", "find_checkpoint": "whole",
    "missing_weights": "weights", "needs_weights": "weights", "weights_column": "weights",
    "weights_sha256": "identity",
}

__getattr__ = lazy_exports(__name__, {name: f"{__name__}.{module}"
                                      for name, module in _EXPORTS.items()})


__all__ = list(_EXPORTS)
