"""Data sets by name: `build_dataset(spec, split)` returns (image, label) pairs.

Images are float tensors (3, H, W), normalised; labels int64 (H, W) with `spec.ignore_index`
for unlabelled pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch.utils.data import Dataset

from benchmark.datasets.synthetic import SyntheticConfig, SyntheticSegmentation


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


DATASETS: dict[str, tuple[Callable[[Any, str], Dataset], Callable[[Any], DatasetInfo]]] = {
    "synthetic": (_build_synthetic, _synthetic_info),
}


def _lookup(name: str) -> tuple[Callable[[Any, str], Dataset], Callable[[Any], DatasetInfo]]:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def build_dataset(spec: Any, split: str) -> Dataset:
    """The `split` of the data set described by a DataSpec."""
    return _lookup(spec.name)[0](spec, split)


def dataset_info(spec: Any) -> DatasetInfo:
    """Class count and names of the data set described by a DataSpec."""
    return _lookup(spec.name)[1](spec)
