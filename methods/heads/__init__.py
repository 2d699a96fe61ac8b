"""Pixel classifiers behind one interface: `forward(feats, target=None) -> HeadOutput`.

Each head's options are a frozen dataclass in methods/heads/options.py (torch-free);
`build_head` (methods/heads/registry.py) looks the head up by name and passes its options.
The exports load on first use (methods/_lazy.py), so the options import without torch.
"""

from methods._lazy import lazy_exports

_EXPORTS = {
    "HEADS": "methods.heads.registry",
    "build_head": "methods.heads.registry",
    "HeadOutput": "methods.heads.base",
    "SegHead": "methods.heads.base",
    "SoftmaxHead": "methods.heads.softmax",
    "PixelQueryHead": "methods.heads.pixel_query",
    "PrototypeHead": "methods.heads.prototype",
    "PixelContrastHead": "methods.heads.pixel_contrast",
    "HEAD_OPTIONS": "methods.heads.options",
    "HeadOptions": "methods.heads.options",
    "options_for": "methods.heads.options",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
