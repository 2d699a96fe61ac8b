"""Data sets by name: `build_dataset(spec, split)` returns (image, label) pairs.

Images are float tensors (3, H, W), normalised; labels int64 (H, W) with `spec.ignore_index`
for unlabelled pixels. Real data sets (ade20k, cityscapes, coco_stuff10k, camvid) read the
standard on-disk layouts or a Hugging Face copy (`data.format=hf`); see `base.py`. Training
items accept `ds[(index, sample_seed)]`: the augmentation is then a pure function of both.
Evaluation items keep each image's own label size, so data sets with images of different
sizes (ADE20K, COCO-Stuff) need `eval.batch_size=1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from torch.utils.data import Dataset

from benchmark.catalog import DATASETS
from benchmark.datasets.ade20k import ADE20K
from benchmark.datasets.base import DataError, DatasetDef, SegmentationDataset
from benchmark.datasets.camvid import CAMVID
from benchmark.datasets.cityscapes import CITYSCAPES
from benchmark.datasets.coco_stuff import COCO_STUFF10K
from benchmark.datasets.synthetic import SyntheticConfig, SyntheticSegmentation

__all__ = ["DatasetBuilders", "REAL", "REAL_DATASETS", "SYNTHETIC", "DataError", "DatasetInfo",
           "build_dataset",
           "check_layout", "dataset_info", "get_definition"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the model and the metric need to know about a data set."""

    num_classes: int
    class_names: list[str]
    ignore_index: int = 255


def _synthetic_config(spec: Any, split: str) -> SyntheticConfig:
    return SyntheticConfig(
        num_classes=spec.num_classes,
        image_size=spec.image_size,
        modes_per_class=spec.modes_per_class,
        num_images=spec.train_images if split == "train" else spec.val_images,
        seed=spec.data_seed,
        ignore_index=spec.ignore_index,
    )


def _build_synthetic(spec: Any, split: str) -> Dataset:
    return SyntheticSegmentation(_synthetic_config(spec, split), split)


def _synthetic_info(spec: Any) -> DatasetInfo:
    names = [f"class{i}" for i in range(spec.num_classes)]
    return DatasetInfo(spec.num_classes, names, spec.ignore_index)


# --------------------------------------------------------------------------- real data sets

REAL_DATASETS: dict[str, DatasetDef] = {d.name: d for d in (ADE20K, CITYSCAPES, COCO_STUFF10K,
                                                            CAMVID)}


def get_definition(name: str) -> DatasetDef:
    """The definition of a real data set; DataError listing the names otherwise."""
    if name not in REAL_DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(REAL_DATASETS)}")
    return REAL_DATASETS[name]


def _build_real(spec: Any, split: str) -> Dataset:
    from benchmark.datasets.check import check_classes, open_checked
    from benchmark.datasets.transforms import transforms_from_spec

    definition = get_definition(spec.name)
    check_classes(spec, definition)
    source = open_checked(spec, definition, split)
    return SegmentationDataset(definition, source, split, transforms_from_spec(spec, split),
                               spec.ignore_index)


def _real_info(spec: Any) -> DatasetInfo:
    d = get_definition(spec.name)
    return DatasetInfo(d.num_classes, list(d.class_names), spec.ignore_index)


def check_layout(spec: Any) -> None:
    """The cheap pre-training check of a DataSpec (nothing for generated data); DataError."""
    if spec.name in REAL_DATASETS:
        from benchmark.datasets.check import quick_check

        quick_check(spec, REAL_DATASETS[spec.name])


class DatasetBuilders(NamedTuple):
    """What a data-set registry entry (benchmark/catalog.py) points to: the split builder and
    the class count/names reader (a plugin data set provides the same pair)."""

    build: Callable[[Any, str], Dataset]
    info: Callable[[Any], DatasetInfo]


SYNTHETIC = DatasetBuilders(_build_synthetic, _synthetic_info)
REAL = DatasetBuilders(_build_real, _real_info)  # each name in REAL_DATASETS


def _lookup(name: str) -> DatasetBuilders:
    return DATASETS.get(name).load()


def build_dataset(spec: Any, split: str) -> Dataset:
    """The `split` of the data set described by a DataSpec."""
    return _lookup(spec.name)[0](spec, split)


def dataset_info(spec: Any) -> DatasetInfo:
    """Class count and names of the data set described by a DataSpec."""
    return _lookup(spec.name)[1](spec)
