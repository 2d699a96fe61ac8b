"""Named training recipes of the paper grids (METHOD-SPEC §6), one documented object each.

A recipe fixes everything a cell needs besides the model: crop, global batch, iterations,
optimizer, learning rate, schedule, warm-up, weight decay, augmentation and evaluation protocol,
plus the GPU count of the reference set-up (which only splits the global batch). Cells carry
the recipe's name in `train.recipe`, so a changed recipe changes their keys.

Sources: the released ProtoSeg code (Cityscapes, HRNet-W48) and MMSegmentation's configs for
each baseline (most likely what the paper's other rows used; *unverified*, METHOD-SPEC §6).
Where this suite cannot follow a recipe yet, `deviations` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.catalog import DATASET_RECIPES
from benchmark.config import DataSpec, EvalSpec, ResourceSpec, TrainSpec

DATASETS = ("ade20k", "cityscapes", "coco_stuff10k")  # the paper grids' data sets

AUG_MMSEG = ("random rescale of the (long, short) scale by 0.5-2.0, random crop (cat_max_ratio "
             "0.75, padded with the ignore value), horizontal flip p=0.5, photometric distortion "
             "(brightness, contrast, saturation, hue), ImageNet mean/std")


@dataclass(frozen=True)
class Recipe:
    """A named, documented training and evaluation recipe."""

    name: str
    summary: str  # which models and data, one line
    crop: tuple[int, int]  # training crop (height, width)
    train: TrainSpec
    gpus: int  # GPUs of the reference set-up; batch per GPU = train.batch_size // gpus
    augmentation: str
    eval_protocol: str
    source: str
    deviations: str = ""  # where this suite differs from the source, if anywhere
    eval: EvalSpec = EvalSpec(batch_size=1, mode="whole")
    data_overrides: tuple[tuple[str, Any], ...] = ()  # DataSpec fields beyond the data set's

    @property
    def per_gpu_batch(self) -> int:
        return max(1, self.train.batch_size // self.gpus)

    def data(self, name: str) -> DataSpec:
        """The DataSpec of data set `name`: its MMSeg-style defaults (classes, split, scale,
        augmentation; benchmark.catalog) with this recipe's crop and overrides."""
        fields = {**DATASET_RECIPES[name], "crop_size": self.crop[0],
                  "crop_width": self.crop[1], **dict(self.data_overrides)}
        return DataSpec(name=name, **fields)

    def resources(self) -> ResourceSpec:
        return ResourceSpec(gpus=self.gpus)

    def describe(self) -> str:
        """One line for `--dry-run`: crop, batch, schedule, optimizer."""
        t = self.train
        opt = (f"SGD lr {t.lr:g} m {t.momentum:g}" if t.optimizer == "sgd"
               else f"AdamW lr {t.lr:g}")
        warm = f"warm-up {t.warmup_iters}" if t.warmup_iters else "no warm-up"
        return (f"{self.name}: crop {self.crop[0]}x{self.crop[1]}, batch {t.batch_size} "
                f"({self.gpus} GPU x {self.per_gpu_batch}), {t.iters // 1000}k it, {opt}, "
                f"wd {t.weight_decay:g}, poly {t.poly_power:g}, {warm}"
                + (", AMP" if t.amp else ""))


def _sgd(iters: int, batch: int, name: str, amp: bool = False) -> TrainSpec:
    return TrainSpec(iters=iters, batch_size=batch, optimizer="sgd", lr=0.01, momentum=0.9,
                     weight_decay=5e-4, poly_power=0.9, warmup_iters=0, amp=amp, log_every=50,
                     recipe=name)


def _adamw(iters: int, batch: int, name: str) -> TrainSpec:
    return TrainSpec(iters=iters, batch_size=batch, optimizer="adamw", lr=6e-5,
                     weight_decay=0.01, poly_power=1.0, warmup_iters=1500, warmup_ratio=1e-6,
                     log_every=50, recipe=name)


EVAL_WHOLE_512 = "whole image resized to fit 2048x512 (aspect kept), single scale, no flip"
EVAL_WHOLE_1024 = "whole 2048x1024 image, single scale, no flip"
ADAMW_DEVIATION = ("MMSeg multiplies the decoder's lr by 10 (SegFormer) and exempts position "
                   "tables from weight decay; this suite uses one lr and exempts norms and biases")

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        name="ade20k_cnn_160k",
        summary="FCN (ResNet-101-D8) and HRNetV2-W48 on ADE20K",
        crop=(512, 512), train=_sgd(160_000, 16, "ade20k_cnn_160k"), gpus=4,
        augmentation=AUG_MMSEG + "; scale (2048, 512)", eval_protocol=EVAL_WHOLE_512,
        source="mmseg configs fcn_r101-d8_512x512_160k_ade20k, fcn_hr48_512x512_160k_ade20k",
        deviations="MMSeg's poly schedule stops at min_lr 1e-4; here it decays to 0",
    ),
    Recipe(
        name="ade20k_transformer_160k",
        summary="Swin-B and SegFormer (MiT-B4, and MiT-B2 for the ablations) on ADE20K",
        crop=(512, 512), train=_adamw(160_000, 16, "ade20k_transformer_160k"), gpus=8,
        augmentation=AUG_MMSEG + "; scale (2048, 512)", eval_protocol=EVAL_WHOLE_512,
        source="mmseg configs segformer_mit-b4_512x512_160k_ade20k, "
               "upernet_swin_base_patch4_window7_512x512_160k_ade20k",
        deviations=ADAMW_DEVIATION,
    ),
    Recipe(
        name="cityscapes_cnn_80k",
        summary="FCN and HRNetV2-W48 on Cityscapes (the released ProtoSeg HRNet recipe)",
        crop=(512, 1024), train=_sgd(80_000, 8, "cityscapes_cnn_80k", amp=True), gpus=4,
        augmentation=("random rescale 0.5-2.0 of (2048, 1024), random crop padded with the "
                      "ignore value, horizontal flip p=0.5, brightness shift +-10, ImageNet "
                      "mean/std"),
        eval_protocol=EVAL_WHOLE_1024,
        source="released ProtoSeg code (H_48_D_4_proto, 1024x512 crop, 4 GPUs x 2), "
               "mmseg fcn_r101-d8_512x1024_80k_cityscapes",
        deviations="released code: SyncBN and fp16 AMP; here BN per GPU and bf16 AMP",
        data_overrides=(("photometric", "brightness"), ("cat_max_ratio", 1.0)),
    ),
    Recipe(
        name="cityscapes_transformer_160k",
        summary="Swin-B and SegFormer (MiT-B4) on Cityscapes",
        crop=(1024, 1024), train=_adamw(160_000, 8, "cityscapes_transformer_160k"), gpus=8,
        augmentation=AUG_MMSEG + "; scale (2048, 1024)",
        eval_protocol="sliding window 1024x1024, stride 768, on the 2048x1024 image",
        eval=EvalSpec(batch_size=1, mode="slide", window_h=1024, window_w=1024, stride_h=768,
                      stride_w=768),
        source="mmseg config segformer_mit-b4_8x1_1024x1024_160k_cityscapes "
               "(Swin-B: same recipe, *unverified*)",
        deviations=ADAMW_DEVIATION,
    ),
    Recipe(
        name="coco_stuff10k_cnn_80k",
        summary="FCN and HRNetV2-W48 on COCO-Stuff-10K (9K train / 1K test, 171 classes)",
        crop=(512, 512), train=_sgd(80_000, 16, "coco_stuff10k_cnn_80k"), gpus=4,
        augmentation=AUG_MMSEG + "; scale (2048, 512)", eval_protocol=EVAL_WHOLE_512,
        source="METHOD-SPEC §6 (512x512, 80K iterations; *unverified*), schedule of mmseg's "
               "coco-stuff10k configs",
    ),
    Recipe(
        name="coco_stuff10k_transformer_80k",
        summary="Swin-B and SegFormer (MiT-B4) on COCO-Stuff-10K",
        crop=(512, 512), train=_adamw(80_000, 16, "coco_stuff10k_transformer_80k"), gpus=8,
        augmentation=AUG_MMSEG + "; scale (2048, 512)", eval_protocol=EVAL_WHOLE_512,
        source="METHOD-SPEC §6 (512x512, 80K iterations, AdamW 6e-5; *unverified*)",
        deviations=ADAMW_DEVIATION,
    ),
)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_for(data: str, family: str) -> Recipe:
    """The recipe of a data set for a model family: 'cnn' (FCN, HRNet) or 'transformer'."""
    iters = {"ade20k": "160k", "cityscapes": "80k" if family == "cnn" else "160k",
             "coco_stuff10k": "80k"}[data]
    return RECIPES[f"{data}_{family}_{iters}"]


def recipe_specs(recipe: Recipe, data: str) -> dict:
    """Cell keyword arguments the recipe fixes on data set `data`: data, train, eval, resources."""
    return {"data": recipe.data(data), "train": recipe.train, "eval": recipe.eval,
            "resources": recipe.resources()}


__all__ = ["DATASETS", "RECIPES", "Recipe", "get_recipe", "recipe_for", "recipe_specs"]
