"""Pure-PyTorch models of protoseg-bench: backbones, decoders and the four pixel classifiers."""

from methods.backbones import BACKBONES
from methods.decoders import DECODERS
from methods.heads import HEADS, HeadOutput, SegHead
from methods.segmentor import Segmentor, build_model, count_params

__all__ = ["BACKBONES", "DECODERS", "HEADS", "HeadOutput", "SegHead", "Segmentor", "build_model",
           "count_params"]
