"""`zoo`: published checkpoints of the paper's baselines, evaluated by this suite (no training).

Before spending GPU-days on Table 1, check that the suite's data layout, label mapping, resizing
and metric reproduce a published number: one cell per checkpoint, each with its file name,
origin, published single-scale mIoU (`Cell.paper_miou`) and its source's evaluation protocol.
`python run_all.py --grid zoo --checkpoint DIR` evaluates the cells whose file is in DIR and
tables "published vs this suite"; a missing file is a `missing` row naming the download.
Target on real data: every cell within 0.1 mIoU of its published number.

MMSegmentation 1.x model zoo (configs/<method>/README.md holds each config's download link;
the files keep the 0.x names, e.g. `fcn_r101-d8_512x512_160k_ade20k_20200615_105816-fd192bd5.pth`,
found here by the name's start) and the released ProtoSeg HRNet-W48 (tfzhou/ProtoSeg README).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.config import Cell, EvalSpec, HeadSpec, ModelSpec, ResourceSpec, TrainSpec
from experiments import Grid
from experiments.recipes import RECIPES

MMSEG_ZOO = "https://github.com/open-mmlab/mmsegmentation/tree/main/configs/"
PROTOSEG = "https://github.com/tfzhou/pretrained_weights/releases/download/v.cvpr22/"


@dataclass(frozen=True)
class Published:
    """A published whole-model checkpoint and the number its authors report."""

    config: str  # the model-zoo config name (MMSeg 1.x) or the release's name
    old_name: str  # the file's name stem as downloaded (MMSeg 0.x naming)
    origin: str  # where to download it
    miou: float  # published single-scale mIoU (%)
    protocol: str  # the source's evaluation protocol
    source: str  # mmseg-zoo | protoseg

    @property
    def patterns(self) -> tuple[str, ...]:
        """Globs that find the file in a folder (either name, any date/hash suffix)."""
        return (f"{self.config}*.pth", f"{self.old_name}*.pth")


FCN = ModelSpec(backbone="resnet101_d8", decoder="fcn", decoder_channels=512, aux_weight=0.4,
                init="mmseg")
HRNET = ModelSpec(backbone="hrnetv2_w48", decoder="hrnetv2", decoder_channels=720, init="mmseg")
SWIN = ModelSpec(backbone="swin_b", decoder="upernet", decoder_channels=512, aux_weight=0.4,
                 init="mmseg")
# MMSeg's SegformerHead: conv + BN + ReLU per level, 256 channels (*unverified* for MiT-B4)
SEGFORMER = ModelSpec(backbone="mit_b4", decoder="mlp_mmseg", decoder_channels=256,
                      init="mmseg")
# released ProtoSeg: openseg fuse and cls_head, projection MLP, L2 over the width axis
# (docs/method.md#paper-vs-released-code)
PROTOSEG_HRNET = ModelSpec(backbone="hrnetv2_w48_openseg", decoder="hrnetv2_openseg",
                           decoder_channels=720,
                           head=HeadSpec(name="prototype", projection="mlp",
                                         proj_norm_axis="width"))

WHOLE_1024 = "whole 2048x1024 image, single scale, no flip, batch 1"
# configs/cityscapes/H_48_D_4_proto.json of the release: val mode ss_test at 2048x1024 (padded
# only), images read with cv2 as BGR (input_mode BGR) and normalised by position with the
# ImageNet mean/std; the recipe's data.channel_order=bgr feeds it the same.
PROTOSEG_PROTOCOL = ("whole 2048x1024 image, single scale (openseg ss_test), BGR input "
                     "normalised by position (input_mode BGR)")
ENTRIES: tuple[tuple[str, str, ModelSpec, Published], ...] = (
    ("ade20k", "ade20k_fcn_160k", FCN, Published(
        "fcn_r101-d8_4xb4-160k_ade20k-512x512", "fcn_r101-d8_512x512_160k_ade20k",
        MMSEG_ZOO + "fcn", 39.91, RECIPES["ade20k_fcn_160k"].eval_protocol, "mmseg-zoo")),
    ("ade20k", "ade20k_hrnet_160k", HRNET, Published(
        "fcn_hr48_4xb4-160k_ade20k-512x512", "fcn_hr48_512x512_160k_ade20k",
        MMSEG_ZOO + "hrnet", 42.02, RECIPES["ade20k_hrnet_160k"].eval_protocol, "mmseg-zoo")),
    ("ade20k", "ade20k_swin_160k", SWIN, Published(
        "swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512",
        "upernet_swin_base_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K",
        MMSEG_ZOO + "swin", 47.99, RECIPES["ade20k_swin_160k"].eval_protocol,
        "mmseg-zoo")),
    ("ade20k", "ade20k_segformer_160k", SEGFORMER, Published(
        "segformer_mit-b4_8xb2-160k_ade20k-512x512", "segformer_mit-b4_512x512_160k_ade20k",
        MMSEG_ZOO + "segformer", 48.46, RECIPES["ade20k_segformer_160k"].eval_protocol,
        "mmseg-zoo")),
    ("cityscapes", "cityscapes_fcn_80k", FCN, Published(
        "fcn_r101-d8_4xb2-80k_cityscapes-512x1024", "fcn_r101-d8_512x1024_80k_cityscapes",
        MMSEG_ZOO + "fcn", 75.13, WHOLE_1024, "mmseg-zoo")),
    ("cityscapes", "cityscapes_fcn_80k", HRNET, Published(
        "fcn_hr48_4xb2-160k_cityscapes-512x1024", "fcn_hr48_512x1024_160k_cityscapes",
        MMSEG_ZOO + "hrnet", 80.65, WHOLE_1024, "mmseg-zoo")),
    ("cityscapes", "cityscapes_segformer_160k", SEGFORMER, Published(
        "segformer_mit-b4_8xb1-160k_cityscapes-1024x1024",
        "segformer_mit-b4_8x1_1024x1024_160k_cityscapes", MMSEG_ZOO + "segformer", 81.89,
        RECIPES["cityscapes_segformer_160k"].eval_protocol, "mmseg-zoo")),
    ("cityscapes", "cityscapes_hrnet_80k", PROTOSEG_HRNET, Published(
        "hrnet_w48_proto_lr1x_hrnet_proto_80k_latest", "hrnet_w48_proto_lr1x_hrnet_proto_80k",
        PROTOSEG + "hrnet_w48_proto_lr1x_hrnet_proto_80k_latest.pth", 80.1,
        PROTOSEG_PROTOCOL, "protoseg")),
)
# evaluated, never trained (the CLI evaluates every zoo cell from its checkpoint); no recipe,
# so no ImageNet weights are asked for; iters must be > 0 to validate
NO_TRAINING = TrainSpec(iters=1, batch_size=1)
RESOURCES = ResourceSpec(gpus=1, cpus_per_task=8, mem_gb=32, timeout_min=120)


def _cell(data: str, recipe: str, model: ModelSpec, published: Published) -> Cell:
    r = RECIPES[recipe]
    eval_spec = EvalSpec(**{**r.eval.__dict__, "batch_size": 1})  # sizes vary: batch 1
    return Cell(grid="zoo", row=published.config, column=data, paper_miou=published.miou,
                data=r.data(data), model=model, train=NO_TRAINING, eval=eval_spec,
                resources=RESOURCES)


PUBLISHED: dict[str, Published] = {p.config: p for _, _, _, p in ENTRIES}


def published_for(cell: Cell) -> Published | None:
    """The published checkpoint a zoo cell evaluates (by its row), None for other cells."""
    return PUBLISHED.get(cell.row) if cell.grid == "zoo" else None


def zoo() -> Grid:
    return Grid("zoo", "published checkpoints of the paper's baselines (and the released "
                "ProtoSeg HRNet) evaluated by this suite: published vs this suite",
                tuple(_cell(*entry) for entry in ENTRIES), seeds=1, layout="published")
