"""Checkpoints the field ships, loaded strictly into the suite's models.

- Backbone (ImageNet) weights, `model.pretrained`: torchvision / timm / Hugging Face files
  (library.py), MMSegmentation's backbone files (mmseg_backbone.py), the authors' original
  SegFormer and Swin releases (original.py); `load_pretrained` (pretrained.py).
- Whole-model checkpoints, `--checkpoint`: MMSegmentation 1.x model-zoo files (mmseg_zoo.py)
  and the released ProtoSeg HRNet (openseg.py); `load_checkpoint` (whole.py).
- `missing_weights(cells)`: the backbones of paper cells that would start from random weights
  (weights.py), checked before any paper-grid run, submission or preflight.
Every load reports loaded / missing / unexpected / mismatched tensors and fails with one line
(`CheckpointError`) when a required part would stay random.
"""

from benchmark.checkpoints.coverage import CheckpointError, LoadReport, PretrainedError
from benchmark.checkpoints.pretrained import (
    NONE,
    Expected,
    expected_checkpoint,
    load_pretrained,
    read_state_dict,
    sha256_of,
)

__all__ = ["CheckpointError", "Expected", "LoadReport", "NONE", "PretrainedError",
           "expected_checkpoint", "load_pretrained", "read_state_dict", "sha256_of"]
