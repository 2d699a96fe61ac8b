"""The training pipeline against MMSegmentation 1.2.2's (docs/fidelity.md): with the same random
draws, `data.pipeline=mmseg` makes the samples MMSeg's train pipeline + SegDataPreProcessor make.

MMSeg's side is built from the data sets' configs (`_base_/datasets/<name>.py` train_pipeline,
the model config's data_preprocessor). Its numpy draws are scripted (`Script`: seeded values,
photometric coins forced where a case asks) and recorded; the suite's `MMSegPipeline` replays
the record (`Replay`), which also checks that it draws the same numbers in the same order. Small
synthetic images (97x131, PNG and JPEG) in tmp_path keep it fast; the rescaled image is smaller
than the crop at low ratios (the padding case). Images must agree within one grey level,
labels exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.datasets.ade20k import ADE20K
from benchmark.datasets.base import decode_label, make_lut, read_image, read_png_label
from benchmark.datasets.cityscapes import CITYSCAPES
from benchmark.datasets.mmseg_pipeline import MMSEG_STD, MMSegPipeline
from experiments.recipes import recipe_for

H, W = 97, 131
# case -> (data set, paper model whose recipe it is, MMSeg dataset config, LUT of the label
# files, number of label values in them); COCO-Stuff-10K files as MMSeg's converter writes them
# (0 = unlabelled, reduce_zero_label), ADE20K's own, Cityscapes' labelTrainIds. The model config
# (its data preprocessor) is the recipe's source.
CASES = {
    "ade20k": ("ade20k", "fcn", "ade20k", ADE20K.luts["raw"], 151),
    "cityscapes": ("cityscapes", "fcn", "cityscapes", CITYSCAPES.luts["train_ids"], 19),
    "cityscapes_1024": ("cityscapes", "segformer", "cityscapes_1024x1024",
                        CITYSCAPES.luts["train_ids"], 19),
    "coco_stuff10k": ("coco_stuff10k", "fcn", "coco-stuff10k",
                      make_lut({i: i - 1 for i in range(1, 172)}, ignore=(0,)), 172),
}
# PhotoMetricDistortion's coins in draw order: brightness, mode, then contrast, saturation, hue
# (mode 1: contrast first) or saturation, hue, contrast (mode 0)
ALL_ON = [1, 1, 1, 1, 1]
# MMSeg's own configs set LoadAnnotations(reduce_zero_label=True), which 1.2.2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:`reduce_zero_label` will be deprecated")


class Script:
    """numpy.random stand-in for MMSeg's transforms: draws from a seeded RandomState (the
    photometric coins `randint(2)` and the flip from `coins` / `flip` when given), recorded."""

    def __init__(self, seed: int, coins: list[int] | None = None, flip: bool | None = None):
        self.rs, self.coins, self.flip, self.log = np.random.RandomState(seed), coins, flip, []

    def random_sample(self) -> float:
        value = float(self.rs.random_sample())
        self.log.append(("random", value))
        return value

    def randint(self, low: int, high: int | None = None) -> int:
        if high is None:  # PhotoMetricDistortion's coins and contrast mode: randint(2)
            low, high = 0, low
            if self.coins:
                value = self.coins.pop(0)
                self.log.append(("randint", low, high, value))
                return value
        value = int(self.rs.randint(low, high))
        self.log.append(("randint", low, high, value))
        return value

    def uniform(self, low: float, high: float) -> float:
        value = float(self.rs.uniform(low, high))
        self.log.append(("uniform", low, high, value))
        return value

    def choice(self, options: list, p: list[float]) -> Any:  # RandomFlip._choose_direction
        flip = self.flip if self.flip is not None else bool(self.rs.random_sample() < p[0])
        self.log.append(("flip", flip))
        return options[0] if flip else options[-1]


class Replay:
    """The suite's draws: the values `Script` recorded, checked to be asked in the same order."""

    def __init__(self, log: list[tuple]) -> None:
        self.log = list(log)

    def _next(self, kind: str, *args: float) -> Any:
        assert self.log, f"the suite draws more than MMSeg (an extra {kind})"
        entry = self.log.pop(0)
        assert entry[:1 + len(args)] == (kind, *args), f"suite draws {kind}{args}, MMSeg {entry}"
        return entry[-1]

    def random(self) -> float:
        return self._next("random")

    def randint(self, low: int, high: int) -> int:
        return self._next("randint", low, high)

    def uniform(self, low: float, high: float) -> float:
        return self._next("uniform", low, high)

    def flip(self, prob: float) -> bool:
        return self._next("flip")


def _write_pair(folder: Path, values: int, seed: int, suffix: str) -> tuple[Path, Path]:
    """A smooth colourful image (hue, saturation and value all vary) and a blocky label map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, 3)
    img = np.stack([127.5 + 127.5 * np.sin(xx / (9 + 4 * c) + yy / (13 - 3 * c) + phases[c])
                    for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    classes = rng.choice(np.arange(values), 5, replace=False)
    label = classes[rng.integers(0, 5, (H // 16 + 1, W // 16 + 1))]
    label = label.repeat(16, 0).repeat(16, 1)[:H, :W].astype(np.uint8)
    image_path, label_path = folder / f"img{seed}{suffix}", folder / f"lbl{seed}.png"
    Image.fromarray(img).save(image_path, quality=90)
    Image.fromarray(label).save(label_path)
    return image_path, label_path


@functools.lru_cache(maxsize=None)
def _mmseg_pipeline(oracle, dataset: str, model: str) -> tuple[Any, Any]:
    """MMSeg's train pipeline of `dataset` and the data preprocessor of `model` (its crop)."""
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope
    from mmseg.models.data_preprocessor import SegDataPreProcessor

    init_default_scope("mmseg")
    cfg = oracle._config.fromfile(oracle.configs / "_base_" / "datasets" / f"{dataset}.py")
    pre_cfg = dict(oracle.model_cfg(model).data_preprocessor)
    pre_cfg.pop("type")
    pre_cfg["size"] = tuple(cfg.crop_size)  # the model config sets it to the data set's crop
    return Compose(cfg.train_pipeline), SegDataPreProcessor(**pre_cfg)


def _mmseg_sample(oracle, dataset: str, model: str, image: Path, label: Path,
                  reduce_zero_label: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MMSeg's normalised, padded training input and label of one file pair."""
    pipeline, preprocessor = _mmseg_pipeline(oracle, dataset, model)
    packed = pipeline({"img_path": str(image), "seg_map_path": str(label), "seg_fields": [],
                       "reduce_zero_label": reduce_zero_label})
    out = preprocessor({"inputs": [packed["inputs"]], "data_samples": [packed["data_samples"]]},
                       training=True)
    return out["inputs"][0], out["data_samples"][0].gt_sem_seg.data[0].long()


def _compare(oracle, monkeypatch, tmp_path: Path, name: str, seed: int, suffix: str = ".png",
             coins: list[int] | None = None, flip: bool | None = None) -> dict[str, Any]:
    data, paper_model, dataset, lut, values = CASES[name]
    recipe = recipe_for(data, paper_model)
    image_path, label_path = _write_pair(tmp_path, values, seed, suffix)
    script = Script(seed, coins, flip)
    for fn in ("random_sample", "randint", "uniform", "choice"):
        monkeypatch.setattr(np.random, fn, getattr(script, fn))
    theirs, their_label = _mmseg_sample(oracle, dataset, recipe.mmseg_config, image_path,
                                        label_path, reduce_zero_label=data != "cityscapes")
    monkeypatch.undo()
    spec = recipe.data(data)
    assert spec.pipeline == "mmseg", "the paper recipes use MMSeg's pipeline"
    replay = Replay(script.log)
    suite = MMSegPipeline((spec.scale_long, spec.scale_short), (spec.min_scale, spec.max_scale),
                          (spec.crop_size, spec.crop_width), spec.ignore_index,
                          spec.cat_max_ratio, spec.flip_prob, spec.photometric, draws=replay)
    label = decode_label(read_png_label(label_path), lut, 255, str(label_path), ADE20K)
    ours, our_label = suite(read_image(image_path), label)
    assert not replay.log, f"MMSeg drew more than the suite: {replay.log}"
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
    grey = ((ours - theirs).abs() * torch.tensor(MMSEG_STD).view(-1, 1, 1)).max().item()
    assert grey <= 1.0 + 1e-3, f"images differ by {grey:.2f} grey levels"
    assert torch.equal(our_label, their_label)
    return {"log": script.log, "padded": bool((our_label == 255).all(0).any()
                                              or (our_label == 255).all(1).any())}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", range(3))
def test_training_samples_equal_mmsegs(mmseg, monkeypatch, tmp_path, name, seed) -> None:
    _compare(mmseg, monkeypatch, tmp_path, name, seed)


@pytest.mark.parametrize("name", list(CASES))
def test_a_crop_smaller_than_the_crop_size_is_padded_after_normalisation(
        mmseg, monkeypatch, tmp_path, name) -> None:
    # ratio 0.5 + 1.5 u with u < 0.1: the rescaled image is smaller than the crop
    seed = next(s for s in range(100) if np.random.RandomState(s).random_sample() < 0.1)
    out = _compare(mmseg, monkeypatch, tmp_path, name, seed, coins=list(ALL_ON), flip=True)
    assert out["padded"], "the case must exercise the padding"


@pytest.mark.parametrize("coins", [
    [1, 1, 1, 1, 1],  # every op, contrast first
    [1, 0, 1, 1, 1],  # every op, contrast last
    [1, 0, 0, 0, 0],  # brightness alone
    [0, 1, 1, 0, 0],  # contrast alone
    [0, 0, 1, 0, 0],  # saturation alone
    [0, 0, 0, 1, 0],  # hue alone
    [0, 0, 0, 0, 0],  # none
])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_each_photometric_op_equals_mmsegs(mmseg, monkeypatch, tmp_path, coins, suffix) -> None:
    out = _compare(mmseg, monkeypatch, tmp_path, "ade20k", 7, suffix, coins=list(coins))
    uniforms = [entry[1:3] for entry in out["log"] if entry[0] == "uniform"]
    hue = [entry for entry in out["log"] if entry[0] == "randint" and entry[1] == -18]
    expected = sum(coins) - coins[1]  # ops switched on (the mode draw is not an op)
    assert len(uniforms) + len(hue) == expected


@pytest.mark.parametrize("name", ["ade20k", "cityscapes"])
def test_evaluation_input_equals_mmsegs_test_pipeline(mmseg, tmp_path, name) -> None:
    """Resize to the scale (cv2 bilinear, no antialiasing) and normalisation; no draws."""
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope

    data, paper_model, dataset, lut, values = CASES[name]
    recipe = recipe_for(data, paper_model)
    image_path, label_path = _write_pair(tmp_path, values, 11, ".jpg")
    init_default_scope("mmseg")
    cfg = mmseg._config.fromfile(mmseg.configs / "_base_" / "datasets" / f"{dataset}.py")
    packed = Compose(cfg.test_pipeline)({"img_path": str(image_path),
                                         "seg_map_path": str(label_path), "seg_fields": [],
                                         "reduce_zero_label": data != "cityscapes"})
    _, preprocessor = _mmseg_pipeline(mmseg, dataset, recipe.mmseg_config)
    theirs = preprocessor({"inputs": [packed["inputs"]], "data_samples": [packed["data_samples"]]},
                          training=False)["inputs"][0]
    spec = recipe.data(data)
    suite = MMSegPipeline((spec.scale_long, spec.scale_short), train=False)
    label = torch.zeros(H, W, dtype=torch.long)
    ours, our_label = suite(read_image(image_path), label)
    assert ours.shape == theirs.shape and our_label is label
    assert ((ours - theirs).abs() * torch.tensor(MMSEG_STD).view(-1, 1, 1)).max() <= 1.0 + 1e-3
