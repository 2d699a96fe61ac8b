"""Pixel classifiers behind one interface: `forward(feats, target=None) -> HeadOutput`.

Each head's options are a frozen dataclass in methods/heads/options.py (torch-free), each head
registered by one line in methods/catalog.py; `build_head` looks it up and passes its options.
The exports load on first use (methods/_lazy.py), so the options import without torch.
"""

from methods._lazy import lazy_exports

_EXPORTS = {
    "HEADS": "methods.catalog",
    "build_head": "methods.heads.registry",
    "HeadOutput": "methods.heads.base",
    "SegHead": "methods.heads.base",
    "SoftmaxHead": "methods.heads.softmax",
    "PixelQueryHead": "methods.heads.pixel_query",
    "PrototypeHead": "methods.heads.prototype",
    "PixelContrastHead": "methods.heads.pixel_contrast",
    "HeadOptions": "methods.heads.options",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
