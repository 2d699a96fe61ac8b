"""Real CamVid from ../shared/data/camvid (read in place, never copied): checksums, counts,
the layout check, loader output, and the `camvid` grid built on it."""

from __future__ import annotations

import hashlib

import pytest
import torch
from fixtures_data import CAMVID_SHARED

from benchmark.overrides import apply_overrides
from benchmark.datasets import build_dataset, check_layout, get_definition
from benchmark.datasets.check import check_dataset
from experiments import get_grid

pytestmark = pytest.mark.skipif(
    not (CAMVID_SHARED / "SHA256SUMS").is_file(),
    reason=f"CamVid not found at {CAMVID_SHARED} (the shared data folder is absent); these "
           f"tests read the real data set in place")


def test_every_file_matches_its_sha256() -> None:
    entries = [line.split(maxsplit=1) for line in
               (CAMVID_SHARED / "SHA256SUMS").read_text().splitlines() if line.strip()]
    listed = {name.strip().removeprefix("./") for _, name in entries}
    on_disk = {str(p.relative_to(CAMVID_SHARED)) for p in CAMVID_SHARED.rglob("*")
               if p.is_file() and p.name not in ("SHA256SUMS", "README.md")}
    assert listed == on_disk
    assert len(entries) == 2 * (367 + 101 + 233)
    for digest, name in entries:
        data = (CAMVID_SHARED / name.strip()).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name


def test_check_reports_the_official_counts_and_clean_samples() -> None:
    report = check_dataset(get_definition("camvid"), str(CAMVID_SHARED), per_split=3)
    assert report.ok, report.render()
    counts = [t for level, t in report.lines if "official count" in t]
    assert counts == ["train: 367 pairs (official count 367)",
                      "val: 101 pairs (official count 101)",
                      "test: 233 pairs (official count 233)"]
    assert all(level == "ok" for level, _ in report.lines)


def test_the_camvid_grid_reads_the_real_data() -> None:
    grid = get_grid("camvid")
    assert [c.row for c in grid.cells] == ["Softmax", "Pixel-query", "Pixel contrast",
                                           "Prototype (K=10)"]
    assert grid.seeds == 3 and grid.cells[3].model.head.num_prototypes == 10
    assert [c.tag for c in grid.cells] == ["baseline", "", "", "ours"]
    cell = apply_overrides(grid.cells[0], [f"data.root={CAMVID_SHARED.parent}"])
    assert cell.key == grid.cells[0].key  # the data root is not part of the key
    check_layout(cell.data)
    train = build_dataset(cell.data, "train")
    image, label = train[(0, 1)]
    crop = (cell.data.crop_size, cell.data.crop_width)
    assert image.shape == (3, *crop) and label.shape == crop and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= set(range(11)) | {255}
    test = build_dataset(cell.data, cell.data.val_split)
    assert len(test) == 233
    image, label = test[0]
    assert image.shape == (3, 180, 240) and label.shape == (360, 480)
    assert (label == 255).any() and set(label.unique().tolist()) <= set(range(11)) | {255}
