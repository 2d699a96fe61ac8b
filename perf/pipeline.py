"""Figure 7: training-pipeline throughput, data.pipeline=mmseg vs the torchvision pipeline.

Issue 13 asks that following MMSegmentation's pipeline (benchmark/datasets/transforms.py,
`MMSegPipeline`) not make data loading slower. One call loads every item of a generated
ADE20K-like split once, as a DataLoader worker does (`SegmentationDataset[(i, seed)]`: JPEG and
PNG decoding, label lookup, then the ADE20K FCN recipe's training transform: rescale of
(2048, 512) by 0.5-2.0, 512x512 crop with cat_max_ratio 0.75, flip, photometric distortion,
normalisation), once per pipeline; a second table times the transform alone on decoded items.
Images: smooth colour fields with noise at ADE20K's typical sizes (short side 375-512, some
larger), labels of 150 classes in blocks with unlabelled ones (0). Both run with one torch
thread and one OpenCV thread, as in a worker process. Target: the MMSeg pipeline's images/s at
least 0.90x the torchvision pipeline's.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from perf.common import Report, Table, alternate, paired_ratio, ratio_spread, standalone, verdict

TARGET = 0.90
SIZES = [(512, 683), (683, 512), (375, 500), (512, 512), (427, 640), (512, 768), (768, 1024),
         (480, 640)]


def write_split(folder: Path, count: int, scale: float = 1.0, seed: int = 0) -> list[Any]:
    """`count` ADE20K-like pairs (JPEG image, PNG label of raw values 0-150) under `folder`."""
    from benchmark.datasets.base import Pair

    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        h, w = (max(8, int(s * scale)) for s in SIZES[i % len(SIZES)])
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = rng.uniform(0, 6.3, 3)
        img = np.stack([127 + 120 * np.sin(xx / (40 + 9 * c) + yy / (57 - 8 * c) + phase[c])
                        for c in range(3)], -1)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        coarse = rng.integers(0, 151, (h // 48 + 1, w // 48 + 1))
        label = coarse.repeat(48, 0).repeat(48, 1)[:h, :w].astype(np.uint8)
        image_path, label_path = folder / f"{i:03d}.jpg", folder / f"{i:03d}.png"
        Image.fromarray(img).save(image_path, quality=90)
        Image.fromarray(label).save(label_path)
        pairs.append(Pair(image_path, label_path))
    return pairs


def datasets(pairs: list[Any], quick: bool) -> dict[str, Any]:
    """The ADE20K FCN recipe's training split over `pairs`, once per pipeline."""
    from benchmark.datasets.ade20k import ADE20K
    from benchmark.datasets.base import NativeSource, SegmentationDataset
    from benchmark.datasets.transforms import transforms_from_spec
    from experiments.recipes import recipe_for

    spec = recipe_for("ade20k", "fcn").data("ade20k")
    if quick:  # tiny images: a proportionally smaller recipe
        spec = dataclasses.replace(spec, scale_long=512, scale_short=128, crop_size=128,
                                   crop_width=128)
    out = {}
    for pipeline in ("torchvision", "mmseg"):
        transform = transforms_from_spec(dataclasses.replace(spec, pipeline=pipeline), "train")
        out[pipeline] = SegmentationDataset(ADE20K, NativeSource(ADE20K, pairs), "train",
                                            transform, spec.ignore_index)
    return out


def load_all(dataset: Any) -> Callable[[], None]:
    """One pass over the split as a worker makes it: item i with seed i (a staged pipeline's
    uint8 part, benchmark/datasets/staging.py; its normalisation runs on the device)."""
    from benchmark.datasets.staging import staged

    items, _ = staged(dataset)
    return lambda: [items[(i, i)] for i in range(len(dataset))]


def transform_all(dataset: Any, decoded: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable:
    from benchmark.datasets.staging import is_staged

    transform = dataset.transform.host if is_staged(dataset.transform) else dataset.transform

    def call() -> None:
        for i, (image, label) in enumerate(decoded):
            torch.default_generator.manual_seed(i)
            transform(image, label)
    return call


def _row(what: str, t: dict, n: int) -> list[str]:
    speed = paired_ratio(t["torchvision"], t["mmseg"])  # torchvision time / mmseg time
    lo, hi = ratio_spread(t["torchvision"], t["mmseg"])
    return [what, f"{n / t['torchvision'].median:.1f}", f"{n / t['mmseg'].median:.1f}",
            f"{speed:.2f}x ({lo:.2f}-{hi:.2f})", f">= {TARGET:.2f}x",
            verdict(speed, TARGET, better="higher")]


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Training-pipeline images/s: data.pipeline=mmseg vs torchvision (ADE20K FCN recipe)."""
    import cv2

    count, repeats = (4, 3) if quick else (16, 7)
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pairs = write_split(Path(tmp), count, scale=0.25 if quick else 1.0)
            sets = datasets(pairs, quick)
            loads = alternate({k: load_all(d) for k, d in sets.items()}, repeats, warmup=1)
            decoded = [sets["mmseg"].load(i) for i in range(count)]
            transforms = alternate({k: transform_all(d, decoded) for k, d in sets.items()},
                                   repeats, warmup=1)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    headers = ["One pass over the split", "torchvision (images/s)", "mmseg (images/s)",
               "mmseg speed (IQR)", "Target", "Verdict"]
    rows = [_row("decode + label lookup + transform (a worker's item)", loads, count),
            _row("transform only", transforms, count)]
    sizes = sorted({f"{h}x{w}" for h, w in SIZES}) if not quick else ["1/4 of them"]
    notes = [f"{count} generated ADE20K-like pairs (JPEG q90 images of {', '.join(sizes)}; "
             f"150-class PNG labels), the ADE20K FCN recipe's training transform "
             f"{'(quick: scale 512x128, crop 128)' if quick else '(scale 2048x512, crop 512)'}; "
             f"1 torch thread, 1 OpenCV thread (a DataLoader worker); median of {repeats} "
             f"alternated rounds; speed = torchvision time / mmseg time (median over rounds)",
             "torchvision = the default pipeline every cell before data.pipeline ran (antialiased "
             "resize, float photometric ops); mmseg = MMSegmentation's own operations (cv2 "
             "resize, uint8 photometric ops), which the paper recipes use"]
    return Report("pipeline", "7. Training pipeline throughput: mmseg vs torchvision",
                  [Table(headers, rows)], notes)


if __name__ == "__main__":
    raise SystemExit(standalone("pipeline", run))
