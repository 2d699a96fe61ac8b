"""Parametric pixel-query head: Segmenter-style mask transformer (docs/method.md#pixel-query-head).

C learnable class queries attend jointly with the pixel tokens in a small transformer; the class
score of a pixel is the scaled cosine between its embedding and the refined query of the class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from methods.heads.base import HeadOutput, SegHead, l2_normalize
from methods.heads.options import HeadOptions, PixelQueryOptions


class PixelQueryHead(SegHead):
    """logits[c] = scale * <normalize(e_c), normalize(i)> after joint query/pixel attention."""

    Options = PixelQueryOptions
    options: PixelQueryOptions

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255,
                 options: HeadOptions | None = None, *, init_scale: float = 10.0,
                 **overrides: object) -> None:
        super().__init__(in_channels, num_classes, ignore_index, options, **overrides)
        opts = self.options
        dim, num_heads, num_layers = opts.dim or min(in_channels, 256), opts.heads, opts.layers
        if dim % num_heads:
            raise ValueError(f"pixel_query: dim {dim} is not divisible by heads {num_heads}")
        self.dim = dim
        self.input_proj = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.queries = nn.Parameter(torch.randn(num_classes, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=num_heads, dim_feedforward=4 * dim, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.pixel_out = nn.Linear(dim, dim, bias=False)
        self.query_out = nn.Linear(dim, dim, bias=False)
        # learnable temperature on the cosine scores, kept in log space (as in CLIP)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:
        b, _, h, w = feats.shape
        pixels = self.input_proj(feats).flatten(2).transpose(1, 2)  # (B, hw, dim)
        queries = self.queries.expand(b, -1, -1)  # (B, C, dim)
        tokens = self.norm(self.blocks(torch.cat([pixels, queries], dim=1)))
        pixels, queries = tokens[:, : h * w], tokens[:, h * w :]
        pixels = l2_normalize(self.pixel_out(pixels))
        queries = l2_normalize(self.query_out(queries))
        scores = self.log_scale.exp() * torch.einsum("bnd,bcd->bcn", pixels, queries)
        logits = scores.reshape(b, self.num_classes, h, w)
        return HeadOutput(logits=logits, state={"queries": queries.detach()})
