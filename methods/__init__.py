"""Pure-PyTorch models of protoseg-bench: backbones, decoders and the pixel classifiers (heads).

The exports load on first use (methods/_lazy.py): importing `methods.heads.options` (torch-free)
must not import torch.
"""

from methods._lazy import lazy_exports

_EXPORTS = {
    "BACKBONES": "methods.catalog",
    "DECODERS": "methods.catalog",
    "HEADS": "methods.catalog",
    "HeadOutput": "methods.heads.base",
    "SegHead": "methods.heads.base",
    "Segmentor": "methods.segmentor",
    "build_model": "methods.segmentor",
    "count_params": "methods.segmentor",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
