"""Named training recipes of the paper grids, one per (data set, baseline), each following its
source (docs/fidelity.md).

A recipe fixes everything a cell needs besides the model: crop, global batch, iterations,
optimizer, learning rate, schedule, parameter groups, loss normalisation, augmentation and
evaluation protocol, plus the GPU count of the reference set-up (which only splits the global
batch). Cells carry the recipe's name in `train.recipe`, so a changed recipe changes their keys.

`source` names what the recipe follows: `mmseg:<config>` an MMSegmentation 1.2.2 config
(`configs/<config>.py` of the package; tests/fidelity/test_training.py reads it), or
`protoseg:<file>` the released ProtoSeg code (tfzhou/ProtoSeg; the Cityscapes HRNet pair).
Where MMSegmentation has no config for a model on a data set, `adaptation` says what changed
from the named one; `deviations` lists where the suite still differs from the source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from benchmark.catalog import dataset_recipe
from benchmark.config import DataSpec, EvalSpec, ResourceSpec, TrainSpec

HOST_GB_PER_GPU = 32  # host memory a training process and its DataLoader workers may take
DATASETS = ("ade20k", "cityscapes", "coco_stuff10k")  # the paper grids' data sets
MODELS = ("fcn", "hrnet", "swin", "segformer")  # the paper pairs (experiments/paper_models.py)

AUG_MMSEG = ("random rescale of the (long, short) scale by 0.5-2.0, random crop (cat_max_ratio "
             "0.75), horizontal flip p=0.5, photometric distortion (brightness, contrast, "
             "saturation, hue), ImageNet mean/std, padding to the crop (mean colour, ignore "
             "label); MMSeg's own operations (data.pipeline=mmseg)")
EVAL_WHOLE_512 = "whole image resized to fit 2048x512 (aspect kept), single scale, no flip"
EVAL_WHOLE_1024 = "whole 2048x1024 image, single scale, no flip"
EVAL_SLIDE_1024 = "sliding window 1024x1024, stride 768, on the 2048x1024 image"

# MMSegmentation 1.2.2 configs (configs/<name>.py of the pip package)
FCN_ADE = "mmseg:fcn/fcn_r101-d8_4xb4-160k_ade20k-512x512"
HRNET_ADE = "mmseg:hrnet/fcn_hr48_4xb4-160k_ade20k-512x512"
SWIN_ADE = "mmseg:swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512"
SEGFORMER_ADE = "mmseg:segformer/segformer_mit-b4_8xb2-160k_ade20k-512x512"
FCN_CITY = "mmseg:fcn/fcn_r101-d8_4xb2-80k_cityscapes-512x1024"
SEGFORMER_CITY = "mmseg:segformer/segformer_mit-b4_8xb1-160k_cityscapes-1024x1024"
PROTOSEG_CITY = "protoseg:configs/cityscapes/H_48_D_4_proto.json"
COCO_80K = ("no MMSeg config for this model on COCO-Stuff-10K: its ADE20K config with MMSeg's "
            "COCO-Stuff-10K data (_base_/datasets/coco-stuff10k.py, 171 classes) and 80K "
            "iterations (the poly decay ends at 80K, as in schedule_80k)")
PROTOSEG_DEVIATIONS = ("fp16 AMP there, bf16 here; the training loss upsamples the logits with "
                       "align_corners=False here, True there; its openseg pipeline's bicubic "
                       "resize and aspect jitter are not replicated (docs/fidelity.md)")


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
    source: str  # mmseg:<config> | protoseg:<file> (module docstring)
    adaptation: str = ""  # what changed from `source` where it is another data set's config
    deviations: str = ""  # where this suite differs from the source, if anywhere
    eval: EvalSpec = EvalSpec(batch_size=1, mode="whole", logit_resize="via_input")
    data_overrides: tuple[tuple[str, Any], ...] = ()  # DataSpec fields beyond the data set's

    @property
    def per_gpu_batch(self) -> int:
        return max(1, self.train.batch_size // self.gpus)

    @property
    def mmseg_config(self) -> str | None:
        """The MMSegmentation config name (e.g. 'fcn/fcn_r101-d8_4xb4-160k_ade20k-512x512')."""
        kind, _, name = self.source.partition(":")
        return name if kind == "mmseg" else None

    def data(self, name: str) -> DataSpec:
        """The DataSpec of data set `name`: its MMSeg-style defaults (classes, split, scale,
        augmentation; benchmark.catalog) with this recipe's crop and overrides."""
        fields = {**dataset_recipe(name), "crop_size": self.crop[0],
                  "crop_width": self.crop[1], **dict(self.data_overrides)}
        return DataSpec(name=name, **fields)

    def resources(self) -> ResourceSpec:
        """One process per GPU, each with its CPUs and host memory (decoding workers, CUDA's
        host allocations): a node's memory request grows with its GPUs."""
        return ResourceSpec(gpus=self.gpus, mem_gb=HOST_GB_PER_GPU * max(1, self.gpus))

    def describe(self) -> str:
        """One line for `--dry-run`: crop, batch, schedule, optimizer, groups, loss, source."""
        t = self.train
        opt = (f"SGD lr {t.lr:g} m {t.momentum:g}" if t.optimizer == "sgd"
               else f"AdamW lr {t.lr:g}")
        warm = f"warm-up {t.warmup_iters}" if t.warmup_iters else "no warm-up"
        style = "mmengine " if t.lr_schedule == "mmengine" else ""
        return (f"{self.name}: crop {self.crop[0]}x{self.crop[1]}, batch {t.batch_size} "
                f"({self.gpus} GPU x {self.per_gpu_batch}), {t.iters // 1000}k it, {opt}, "
                f"wd {t.weight_decay:g}, {style}poly {t.poly_power:g} to {t.min_lr:g}, "
                f"{warm}, groups {t.param_groups}, CE over {t.ce_average}"
                + (", AMP" if t.amp else "") + f"; source {self.source}")


def _sgd_mmseg(iters: int, batch: int, name: str) -> TrainSpec:
    """MMSeg's SGD schedules (schedule_80k/160k): PolyLR to eta_min 1e-4, no paramwise_cfg."""
    return TrainSpec(iters=iters, batch_size=batch, optimizer="sgd", lr=0.01, momentum=0.9,
                     weight_decay=5e-4, poly_power=0.9, warmup_iters=0, log_every=50,
                     recipe=name, lr_schedule="mmengine", min_lr=1e-4, param_groups="decay_all",
                     ce_average="all_pixels")


def _adamw_mmseg(iters: int, batch: int, name: str, groups: str) -> TrainSpec:
    """MMSeg's SegFormer / Swin optimizer: AdamW, LinearLR 1500 then PolyLR (power 1) to 0."""
    return TrainSpec(iters=iters, batch_size=batch, optimizer="adamw", lr=6e-5,
                     weight_decay=0.01, poly_power=1.0, warmup_iters=1500, warmup_ratio=1e-6,
                     log_every=50, recipe=name, lr_schedule="mmengine", min_lr=0.0,
                     param_groups=groups, ce_average="all_pixels")


def _protoseg(name: str) -> TrainSpec:
    """The released ProtoSeg HRNet recipe: SGD, lambda_poly (power 0.9, to 0), AMP, every
    parameter decayed (no group_method), the config's class-weighted cross-entropy (ce_weight)
    averaged over labelled pixels."""
    return TrainSpec(iters=80_000, batch_size=8, optimizer="sgd", lr=0.01, momentum=0.9,
                     weight_decay=5e-4, poly_power=0.9, warmup_iters=0, amp=True, log_every=50,
                     recipe=name, lr_schedule="poly", min_lr=0.0, param_groups="decay_all",
                     ce_average="labelled", ce_weights="protoseg_cityscapes")


def _ade20k(summary: str, train: TrainSpec, gpus: int, source: str) -> Recipe:
    return Recipe(name=train.recipe, summary=summary, crop=(512, 512), train=train, gpus=gpus,
                  augmentation=AUG_MMSEG + "; scale (2048, 512)", eval_protocol=EVAL_WHOLE_512,
                  source=source, data_overrides=(("pipeline", "mmseg"),))


def _coco(ade: Recipe, model: str) -> Recipe:
    """The model's ADE20K recipe on COCO-Stuff-10K for 80K iterations (COCO_80K)."""
    name = f"coco_stuff10k_{model}_80k"
    return replace(ade, name=name, summary=ade.summary.replace("ADE20K", "COCO-Stuff-10K"),
                   train=replace(ade.train, iters=80_000, recipe=name), adaptation=COCO_80K)


_ADE = {
    "fcn": _ade20k("FCN (ResNet-101-D8) on ADE20K",
                   _sgd_mmseg(160_000, 16, "ade20k_fcn_160k"), 4, FCN_ADE),
    "hrnet": _ade20k("HRNetV2-W48 on ADE20K",
                     _sgd_mmseg(160_000, 16, "ade20k_hrnet_160k"), 4, HRNET_ADE),
    "swin": _ade20k("Swin-B on ADE20K",
                    _adamw_mmseg(160_000, 16, "ade20k_swin_160k", "swin"), 8, SWIN_ADE),
    "segformer": _ade20k("SegFormer (MiT-B4, and MiT-B2 for the ablations: "
                         "the same optimizer and schedule) on ADE20K",
                         _adamw_mmseg(160_000, 16, "ade20k_segformer_160k", "segformer"), 8,
                         SEGFORMER_ADE),
}
_AUG_CITY = AUG_MMSEG + "; scale (2048, 1024)"
_SLIDE = EvalSpec(batch_size=1, mode="slide", window_h=1024, window_w=1024, stride_h=768,
                  stride_w=768, logit_resize="via_input")
_CITY = {
    "fcn": Recipe(name="cityscapes_fcn_80k", summary="FCN (ResNet-101-D8) on Cityscapes",
                  crop=(512, 1024), train=_sgd_mmseg(80_000, 8, "cityscapes_fcn_80k"), gpus=4,
                  augmentation=_AUG_CITY, eval_protocol=EVAL_WHOLE_1024, source=FCN_CITY,
                  data_overrides=(("pipeline", "mmseg"),)),
    "hrnet": Recipe(
        name="cityscapes_hrnet_80k",
        summary="HRNetV2-W48 on Cityscapes (the released ProtoSeg recipe, baseline and ours)",
        crop=(512, 1024), train=_protoseg("cityscapes_hrnet_80k"), gpus=4,
        augmentation=("BGR input (input_mode BGR), random rescale 0.5-2.0 of (2048, 1024), "
                      "random crop padded with the ignore value, horizontal flip p=0.5, "
                      "brightness shift +-10, ImageNet mean/std applied by position"),
        eval_protocol=EVAL_WHOLE_1024, source=PROTOSEG_CITY,
        adaptation=("the baseline: configs/cityscapes/H_48_D_4.json; both run by "
                    "scripts/cityscapes/hrnet/run_h_48_d_4*.sh (80K iterations, batch 8, "
                    "lr 0.01)"),
        deviations=PROTOSEG_DEVIATIONS,
        eval=EvalSpec(batch_size=1, mode="whole", logit_resize="openseg"),
        data_overrides=(("photometric", "brightness"), ("cat_max_ratio", 1.0),
                        ("channel_order", "bgr")),
    ),
    "swin": Recipe(name="cityscapes_swin_160k", summary="Swin-B on Cityscapes", crop=(1024, 1024),
                   train=_adamw_mmseg(160_000, 8, "cityscapes_swin_160k", "swin"), gpus=8,
                   augmentation=_AUG_CITY, eval_protocol=EVAL_SLIDE_1024, eval=_SLIDE,
                   source=SWIN_ADE,
                   adaptation=("no MMSeg Swin config for Cityscapes: data, 1024x1024 crop, batch "
                               "8 and sliding-window evaluation of " + SEGFORMER_CITY),
                   data_overrides=(("pipeline", "mmseg"),)),
    "segformer": Recipe(name="cityscapes_segformer_160k",
                        summary="SegFormer (MiT-B4) on Cityscapes", crop=(1024, 1024), gpus=8,
                        augmentation=_AUG_CITY,
                        train=_adamw_mmseg(160_000, 8, "cityscapes_segformer_160k", "segformer"),
                        eval_protocol=EVAL_SLIDE_1024, eval=_SLIDE, source=SEGFORMER_CITY,
                        data_overrides=(("pipeline", "mmseg"),)),
}
_COCO = {model: _coco(recipe, model) for model, recipe in _ADE.items()}

RECIPES: dict[str, Recipe] = {r.name: r for table in (_ADE, _CITY, _COCO) for r in table.values()}
BY_DATASET = {"ade20k": _ADE, "cityscapes": _CITY, "coco_stuff10k": _COCO}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_for(data: str, model: str) -> Recipe:
    """The recipe of paper model `model` (a pair: fcn, hrnet, swin, segformer) on `data`."""
    if model not in MODELS:
        raise KeyError(f"recipe_for takes a paper model ({', '.join(MODELS)}), not {model!r}: "
                       "each model's recipe follows its own source")
    return BY_DATASET[data][model]


def recipe_specs(recipe: Recipe, data: str) -> dict:
    """Cell keyword arguments the recipe fixes on data set `data`: data, train, eval, resources."""
    return {"data": recipe.data(data), "train": recipe.train, "eval": recipe.eval,
            "resources": recipe.resources()}


__all__ = ["DATASETS", "MODELS", "RECIPES", "Recipe", "get_recipe", "recipe_for", "recipe_specs"]
