"""Backbones by name, built from the field's libraries (torchvision, timm, transformers).

Every backbone returns a list of feature maps (B, C_i, H/s_i, W/s_i) and exposes
`out_channels` and `strides` so any decoder can sit on top. The library model lives under
`self.body` with the library's own parameter names, so the library's checkpoints load into it
(benchmark/pretrained.py does that; file I/O does not belong in methods/). No weights are loaded
here.

Paper backbones (docs/method.md#backbones-and-parameter-counts): `resnet101_d8`,
`hrnetv2_w48`, `swin_b`, `mit_b4` (and `mit_b2` for the ablations); small CPU variants of each
family: `resnet18_d8`, `hrnetv2_w18_small`, `swin_t`, `mit_b0`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.catalog import BACKBONES  # the registry names this module's builders

# timm, torchvision and transformers are imported by the builders that need them: importing
# them costs seconds (timm pulls in torchvision and torch._dynamo), which commands that never
# build a model (`run_all.py --dry-run`, `--tables-only`) should not pay.


class Backbone(nn.Module):
    """A feature extractor with known output channels and strides; the library model is `body`."""

    out_channels: list[int]
    strides: list[int]
    body: nn.Module
    name: str = ""  # registry name, set by build_backbone


class TimmFeatures(Backbone):
    """A timm model in `features_only` mode (ResNet with dilation, HRNet, ...)."""

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__()
        import timm

        self.body = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        self.out_channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))


class HRNetFeatures(TimmFeatures):
    """timm's HRNet in `features_only` mode with the segmentation HRNet's fuse layers.

    timm upsamples a lower-resolution branch by a fixed factor (nearest), which breaks at inputs
    not divisible by 32 (branch sizes 171 vs 2 x 86); MMSeg's HRModule upsamples bilinearly and
    then resizes to the target branch's size. `BilinearFuse` does that (docs/fidelity.md).
    """

    def __init__(self, name: str, align_corners: bool = False, **kwargs) -> None:
        super().__init__(name, **kwargs)
        from timm.models.hrnet import HighResolutionModule

        for parent in list(self.body.modules()):
            for child_name, child in parent.named_children():
                if isinstance(child, HighResolutionModule):
                    setattr(parent, child_name, BilinearFuse(child, align_corners))


class BilinearFuse(nn.Module):
    """A timm `HighResolutionModule` (same submodules, same parameter names) whose fuse step is
    MMSeg's: branch j > i is 1x1 conv + BN, bilinear x2^(j-i), then resized to branch i's size.
    `align_corners=True`: the released ProtoSeg's (openseg) fuse, conv + BN resized straight to
    branch i's size with align_corners=True (the zoo's ProtoSeg cell, benchmark/checkpoints).
    """

    def __init__(self, module: nn.Module, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.num_branches: int = module.num_branches
        self.branches = module.branches
        self.fuse_layers = module.fuse_layers
        self.fuse_act = module.fuse_act
        for up in self.fuse_layers.modules():
            if isinstance(up, nn.Upsample):  # no parameters: only the interpolation changes
                up.mode, up.align_corners = "bilinear", False

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        fused = []
        for i, layers in enumerate(self.fuse_layers):
            y = None
            for j, layer in enumerate(layers):  # summed in branch order, as MMSeg does
                if j > i and self.align_corners:
                    z = F.interpolate(layer[1](layer[0](x[j])), size=x[i].shape[-2:],
                                      mode="bilinear", align_corners=True)
                else:
                    z = layer(x[j])
                if j > i and z.shape[-2:] != x[i].shape[-2:]:
                    z = F.interpolate(z, size=x[i].shape[-2:], mode="bilinear",
                                      align_corners=False)
                y = z if y is None else y + z
            fused.append(self.fuse_act(y))
        return fused


class DilatedResNet(Backbone):
    """torchvision ResNet with layer3/layer4 dilated (output stride 8); returns [layer3, layer4].

    layer3 feeds the auxiliary FCN head, layer4 the decoder (MMSeg's `in_index` 2 and 3).
    torchvision's dilation (first block of a dilated layer at the previous layer's rate) equals
    MMSeg's `contract_dilation`. `deep_stem` replaces the 7x7 stem with MMSeg ResNetV1c's three
    3x3 convs (32, 32, 64 ch; +19K parameters), the stem of the `resnet101_v1c` ImageNet weights
    that MMSeg's FCN starts from (docs/fidelity.md).
    """

    def __init__(self, name: str, deep_stem: bool = False) -> None:
        super().__init__()
        import torchvision

        body = getattr(torchvision.models, name)(
            weights=None, replace_stride_with_dilation=[False, True, True]
        )
        body.fc = nn.Identity()  # the ImageNet classifier is not part of the backbone
        if deep_stem:
            del body.conv1, body.bn1  # torchvision's 7x7 stem
            body.stem = v1c_stem(body.layer1[0].conv1.in_channels)
        self.body = body
        self.out_channels = [body.layer3[-1].conv3.out_channels, body.layer4[-1].conv3.out_channels]
        self.strides = [8, 8]

    def forward(self, x: Tensor) -> list[Tensor]:
        b = self.body
        x = b.stem(x) if hasattr(b, "stem") else b.relu(b.bn1(b.conv1(x)))
        c3 = b.layer3(b.layer2(b.layer1(b.maxpool(x))))
        return [c3, b.layer4(c3)]


def v1c_stem(out_channels: int = 64) -> nn.Sequential:
    """ResNetV1c's deep stem: 3x3 convs (stride 2, 1, 1) to out/2, out/2, out channels, each with
    BN + ReLU; names `conv{i}` / `bn{i}` (benchmark/checkpoints maps MMSeg's `stem.{0..7}`)."""
    widths = [3, out_channels // 2, out_channels // 2, out_channels]
    layers: dict[str, nn.Module] = {}
    for i in range(3):
        layers[f"conv{i + 1}"] = nn.Conv2d(widths[i], widths[i + 1], 3, stride=2 if i == 0 else 1,
                                           padding=1, bias=False)
        layers[f"bn{i + 1}"] = nn.BatchNorm2d(widths[i + 1])
        layers[f"relu{i + 1}"] = nn.ReLU(inplace=True)
    return nn.Sequential(OrderedDict(layers))


class SwinFeatures(Backbone):
    """torchvision Swin Transformer `features` at its four stages, NHWC -> NCHW.

    As in MMSeg's Swin backbone, each output stage gets its own LayerNorm (`norms`, outside the
    library model); torchvision's final `norm` and classifier are dropped. Inputs are padded to a
    multiple of 4 and the window attention is MMSeg's (`MMSegWindowAttention`), as
    docs/fidelity.md lists.
    """

    STAGES = (1, 3, 5, 7)  # indices in `features`: patch embed, stage, merge, stage, ...

    def __init__(self, name: str, drop_path: float = 0.3) -> None:
        super().__init__()
        import torchvision

        body = getattr(torchvision.models, name)(weights=None)
        _set_drop_path(body, drop_path)
        body.norm = nn.Identity()
        body.head = nn.Identity()
        for block in body.modules():
            if isinstance(block, torchvision.models.swin_transformer.SwinTransformerBlock):
                block.attn = MMSegWindowAttention(block.attn)
        self.body = body
        embed = body.features[0][0].out_channels
        self.out_channels = [embed * 2**i for i in range(4)]
        self.strides = [4, 8, 16, 32]
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.out_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        # MMSeg's PatchEmbed pads the bottom/right to a multiple of the patch size (4);
        # torchvision's strided conv would drop those rows and columns (docs/fidelity.md)
        x = F.pad(x, (0, -x.shape[-1] % 4, 0, -x.shape[-2] % 4))
        outs = []
        for i, layer in enumerate(self.body.features):
            x = layer(x)
            if i in self.STAGES:
                norm = self.norms[self.STAGES.index(i)]
                outs.append(norm(x).permute(0, 3, 1, 2).contiguous())
        return outs


class MMSegWindowAttention(nn.Module):
    """torchvision's ShiftedWindowAttention (same tensors and names) computed as MMSeg's
    ShiftWindowMSA: torchvision skips the shift when the padded map fits one window (inputs under
    225 px reach that in stage 4), MMSeg always shifts a shifted block (docs/fidelity.md)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.window_size: list[int] = list(attn.window_size)
        self.shift_size: list[int] = list(attn.shift_size)
        self.num_heads: int = attn.num_heads
        self.attention_dropout, self.dropout = attn.attention_dropout, attn.dropout
        self.qkv, self.proj = attn.qkv, attn.proj
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index)

    def _bias(self) -> Tensor:
        n = self.window_size[0] * self.window_size[1]
        table = self.relative_position_bias_table[self.relative_position_index]
        return table.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        x = F.pad(x, (0, 0, 0, -w % ww, 0, -h % wh))
        ph, pw = x.shape[1:3]
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        x = x.view(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, wh * ww, c)  # (B * windows, N, C)
        qkv = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.num_heads) ** -0.5) @ k.transpose(-2, -1) + self._bias()
        if sh or sw:
            mask = _shift_mask(ph, pw, (wh, ww), (sh, sw), x)
            n = wh * ww
            attn = attn.view(b, mask.shape[0], self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        attn = F.dropout(attn.softmax(-1), self.attention_dropout, self.training)
        x = (attn @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], c)
        x = F.dropout(self.proj(x), self.dropout, self.training)
        x = x.view(b, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x[:, :h, :w].contiguous()


def _shift_mask(ph: int, pw: int, window: tuple[int, int], shift: tuple[int, int],
                like: Tensor) -> Tensor:
    """(windows, N, N) additive mask: -100 between tokens of different regions after the roll."""
    regions = like.new_zeros(ph, pw)
    count = 0
    for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            regions[hs[0]:hs[1], ws[0]:ws[1]] = count
            count += 1
    regions = regions.view(ph // window[0], window[0], pw // window[1], window[1])
    regions = regions.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    diff = regions[:, None, :] - regions[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _set_drop_path(model: nn.Module, rate: float) -> None:
    """Rescale torchvision's linearly increasing stochastic depth so the last block has `rate`.

    (torchvision fixes the rate per model size: swin_b 0.5; MMSeg's Swin configs use 0.3.)
    """
    import torchvision

    layers = [m for m in model.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    top = max((m.p for m in layers), default=0.0)
    for m in layers:
        m.p = m.p * rate / top if top > 0 else 0.0


def channels_last_depthwise(conv: nn.Conv2d) -> None:
    """Give a depthwise conv's (C, 1, k, k) weight channels-last strides, in place.

    MiT's Mix-FFN runs its depthwise conv on a transposed view of the tokens, i.e. a
    channels-last input. With the weight's default strides, oneDNN's CPU backward copies the
    hidden activation and its gradient to NCHW (each copy a slow transpose); with these strides it
    stays channels-last: the same result to float rounding, about 15x faster on MiT-B0's first
    stage (perf/README.md). The strides survive `load_state_dict`, `.to()` and deepcopy.
    """
    conv.weight.data = conv.weight.data.to(memory_format=torch.channels_last)


class MixTransformer(Backbone):
    """SegFormer's MiT encoder (transformers `SegformerModel` built from a config, no download).

    `use_mmseg_eps()` gives every LayerNorm MMSeg's eps 1e-6 (docs/fidelity.md; `model.init=
    mmseg`); transformers uses 1e-5 in the patch embeddings, blocks and spatial reduction.
    """

    def __init__(self, hidden_sizes: list[int], depths: list[int], num_heads: list[int]) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerModel

        config = SegformerConfig(
            hidden_sizes=hidden_sizes, depths=depths, num_attention_heads=num_heads,
            drop_path_rate=0.1,
        )
        self.body = SegformerModel(config)
        self.out_channels = list(hidden_sizes)
        self.strides = [4, 8, 16, 32]
        for m in self.body.modules():
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1:
                channels_last_depthwise(m)

    def use_mmseg_eps(self) -> None:
        """MMSeg's MiT: LayerNorm eps 1e-6 everywhere."""
        for m in self.body.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = 1e-6

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.body(pixel_values=x, output_hidden_states=True)
        return list(out.hidden_states)


# ----------------------------------------------------------------------------- paper backbones


def resnet101_d8() -> Backbone:
    """FCN's backbone: ResNet-101 with ResNetV1c's deep stem (MMSeg's `resnet101_v1c`), output
    stride 8 (42.5M)."""
    return DilatedResNet("resnet101", deep_stem=True)


def hrnetv2_w48() -> Backbone:
    """HRNetV2-W48 (65.3M): timm `hrnet_w48`, the four branches (48/96/192/384 ch, strides 4-32).

    `feature_location=''` returns the raw branch outputs; timm's default feature mode passes them
    through the classification "incre" blocks, which is not HRNetV2.
    """
    return HRNetFeatures("hrnet_w48", feature_location="", out_indices=(1, 2, 3, 4))


def hrnetv2_w48_openseg() -> Backbone:
    """HRNetV2-W48 as the released ProtoSeg code (openseg) runs it: the same parameters as
    `hrnetv2_w48`, fuse layers resized with align_corners=True (the zoo's ProtoSeg cell)."""
    return HRNetFeatures("hrnet_w48", align_corners=True, feature_location="",
                         out_indices=(1, 2, 3, 4))


def swin_b() -> Backbone:
    """Swin-Base, window 7 (86.7M): torchvision `swin_b`."""
    return SwinFeatures("swin_b", drop_path=0.3)


def mit_b4() -> Backbone:
    """SegFormer's MiT-B4 (60.8M)."""
    return MixTransformer([64, 128, 320, 512], [3, 8, 27, 3], [1, 2, 5, 8])


def mit_b2() -> Backbone:
    """MiT-B2 (24.2M), the most likely backbone of the paper's ablations
    (docs/method.md#hyperparameters)."""
    return MixTransformer([64, 128, 320, 512], [3, 4, 6, 3], [1, 2, 5, 8])


# ----------------------------------------------------------------------------- small CPU variants


def resnet18_d8() -> Backbone:
    """Small CPU backbone: ResNet-18 dilated to output stride 8 (layer3 and layer4 outputs).

    timm, because torchvision's BasicBlock refuses dilation.
    """
    return TimmFeatures("resnet18", output_stride=8, out_indices=(3, 4))


def hrnetv2_w18_small() -> Backbone:
    """HRNetV2-W18-Small (3.9M): timm `hrnet_w18_small_v2`, branches 18/36/72/144 ch.

    (timm's `hrnet_w18_small` is the narrower v1 with 16/32/64/128 channels.)
    """
    return HRNetFeatures("hrnet_w18_small_v2", feature_location="", out_indices=(1, 2, 3, 4))


def swin_t() -> Backbone:
    """Swin-Tiny (27.5M): torchvision `swin_t`."""
    return SwinFeatures("swin_t", drop_path=0.2)


def mit_b0() -> Backbone:
    """Small CPU backbone: MiT-B0 (3.3M params), four stages at strides 4-32."""
    return MixTransformer([32, 64, 160, 256], [2, 2, 2, 2], [1, 2, 5, 8])


def build_backbone(name: str) -> Backbone:
    """The backbone registered as `name` (methods/catalog.py, or a plugin's)."""
    backbone = BACKBONES.build(name)
    backbone.name = name  # lets benchmark/pretrained.py name the checkpoint it expects
    return backbone
