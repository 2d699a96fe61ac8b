"""The model registries: heads, backbones and decoders, one line per entry (torch-free).

Each entry names its builder lazily ("module:attribute"), so `--dry-run` and `--set` validation
list and check names without importing torch. A plugin package adds entries through the
entry-point groups `protoseg_bench.heads` / `.backbones` / `.decoders` (methods/registry.py).
"""

from __future__ import annotations

from methods.heads.options import (HeadOptions, PixelContrastOptions, PixelQueryOptions,
                                   PrototypeOptions, SoftmaxOptions)
from methods.registry import Registry

HEADS = Registry("head")
BACKBONES = Registry("backbone")
DECODERS = Registry("decoder")


def register_head(options: type[HeadOptions], target: str) -> None:
    """Register a head by its options class (which names it, `options.HEAD`) and builder."""
    HEADS.register(options.HEAD, target, display=options.DISPLAY or options.HEAD,
                   options=options)


def head_options(name: str) -> type[HeadOptions]:
    """The options class of the head called `name` (RegistryError when unknown)."""
    options = HEADS.get(name).options
    if options is None or not issubclass(options, HeadOptions):
        raise TypeError(f"head {name!r} registered without a HeadOptions class")
    return options


register_head(SoftmaxOptions, "methods.heads.softmax:SoftmaxHead")
register_head(PixelQueryOptions, "methods.heads.pixel_query:PixelQueryHead")
register_head(PrototypeOptions, "methods.heads.prototype:PrototypeHead")
register_head(PixelContrastOptions, "methods.heads.pixel_contrast:PixelContrastHead")

for _name in ("resnet101_d8", "hrnetv2_w48", "swin_b", "mit_b4", "mit_b2", "resnet18_d8",
              "hrnetv2_w18_small", "swin_t", "mit_b0", "hrnetv2_w48_openseg"):
    BACKBONES.register(_name, f"methods.backbones:{_name}")

DECODERS.register("fcn", "methods.decoders:FCNDecoder")
DECODERS.register("mlp", "methods.decoders:AllMLPDecoder")
DECODERS.register("hrnetv2", "methods.decoders:HRNetV2Decoder")
DECODERS.register("upernet", "methods.decoders:UperNetDecoder")
DECODERS.register("mlp_mmseg", "methods.decoders:SegformerHeadDecoder")
DECODERS.register("hrnetv2_openseg", "methods.decoders:OpensegHRNetDecoder")
