"""Hugging Face copies: CamVid round-trips through save_to_disk unchanged, parquet copies of
Cityscapes (train ids) and COCO-Stuff (.mat) give the native items, and a hub-style ADE20K
(scene_parse_150 columns, `validation` split) loads with reduce-zero-label."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from fixtures_data import (ADE_EXPECT, ADE_RAW, CAMVID_SHARED, expected, rgb, snapshot, stripes,
                           write_camvid, write_cityscapes, write_coco_stuff10k)
from PIL import Image

from benchmark.config import DataSpec
from benchmark.datasets import DataError, build_dataset, get_definition
from benchmark.datasets.__main__ import main as datasets_cli
from benchmark.datasets.check import check_dataset
from benchmark.datasets.hf import convert


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def spec(name: str, root: Path, fmt: str = "native", **kw) -> DataSpec:
    classes = get_definition(name).num_classes
    return DataSpec(name=name, root=str(root), num_classes=classes, format=fmt,
                    val_split="test" if name == "coco_stuff10k" else "val", **kw)


def assert_same_items(a, b, keys) -> None:
    assert len(a) == len(b)
    for key in keys:
        (xa, ya), (xb, yb) = a[key], b[key]
        assert torch.equal(xa, xb) and torch.equal(ya, yb), key


@pytest.mark.skipif(not CAMVID_SHARED.is_dir(),
                    reason=f"CamVid not found at {CAMVID_SHARED} (shared data folder absent)")
def test_camvid_round_trips_through_save_to_disk(tmp_path, capsys) -> None:
    out = tmp_path / "camvid_hf"
    assert datasets_cli(["convert", "camvid", "--root", str(CAMVID_SHARED), "--out",
                         str(out)]) == 0
    assert "train 367, val 101, test 233" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camvid_hf"]  # no leftovers
    copy = datasets.load_from_disk(str(out))
    native_spec = spec("camvid", CAMVID_SHARED, scale_long=240, scale_short=180, min_scale=0.5,
                       max_scale=2.0, crop_size=64, photometric="mmseg")
    hf_spec = spec("camvid", out, "hf", scale_long=240, scale_short=180, min_scale=0.5,
                   max_scale=2.0, crop_size=64, photometric="mmseg")
    for split in ("train", "val", "test"):
        native = build_dataset(native_spec, split)
        rows = copy[split].cast_column("image", datasets.Image(decode=False)).cast_column(
            "annotation", datasets.Image(decode=False))
        assert len(rows) == len(native)
        for pair, row in zip(native.source.pairs, rows):  # every file, byte for byte
            assert row["image"]["bytes"] == pair.image.read_bytes()
            assert row["annotation"]["bytes"] == pair.label.read_bytes()
        hf = build_dataset(hf_spec, split)
        keys = [(i, 17 * i) for i in (0, len(native) - 1)] if split == "train" else [0, 50]
        assert_same_items(native, hf, keys)
    report = check_dataset(get_definition("camvid"), str(out), "hf", per_split=2)
    assert report.ok and sum("official count" in t for _, t in report.lines) == 3


@pytest.mark.parametrize("name, write", [
    ("cityscapes", lambda p: write_cityscapes(p, train_ids=True)),
    ("coco_stuff10k", write_coco_stuff10k),
])
def test_parquet_copy_gives_the_native_items(name, write, tmp_path) -> None:
    root = write(tmp_path / "data")
    out = tmp_path / f"{name}_hf"
    counts = convert(get_definition(name), root, out, fmt="parquet")
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(
        f"{s}-00000-of-00001.parquet" for s in counts)
    for split in counts:
        native = build_dataset(spec(name, root), split)
        hf = build_dataset(spec(name, out, "hf"), split)
        keys = [(i, 100 + i) for i in range(len(native))] if split == "train" else range(
            len(native))
        assert_same_items(native, hf, keys)


def test_hub_style_ade20k_copy(tmp_path) -> None:
    def rows(n: int) -> dict:
        maps = [stripes(ADE_RAW, 6, 10, i) for i in range(n)]
        return {"image": [Image.fromarray(rgb(6, 10, i)) for i in range(n)],
                "annotation": [Image.fromarray(m) for m in maps], "scene_category": [3] * n}
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image(),
                                  "scene_category": datasets.Value("int64")})
    hub = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows(n), features=features)
                                for s, n in (("train", 3), ("validation", 2))})
    hub.save_to_disk(str(tmp_path / "ade20k_hf"))
    pq = tmp_path / "parquet"  # the hub's parquet conversion: <config>/<split>/0000.parquet
    for split in hub:
        hub[split].to_parquet(str(pq / "scene_parsing" / split / "0000.parquet"))
    for root in (tmp_path, pq):  # tmp_path: found as <root>/ade20k_hf
        val = build_dataset(spec("ade20k", root, "hf"), "val")
        assert len(val) == 2
        for i in range(2):
            _, label = val[i]
            np.testing.assert_array_equal(label.numpy(), expected(stripes(ADE_RAW, 6, 10, i),
                                                                   ADE_EXPECT))


def test_hf_errors_name_the_problem(tmp_path) -> None:
    d = datasets.Dataset.from_dict({"image": [Image.fromarray(rgb(4, 4, 0))], "label": [1]},
                                   features=datasets.Features({"image": datasets.Image(),
                                                               "label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": d, "val": d}).save_to_disk(str(tmp_path / "camvid_hf"))
    with pytest.raises(DataError, match="lacks column\\(s\\) annotation .* expected image and"):
        build_dataset(spec("camvid", tmp_path / "camvid_hf", "hf"), "train")
    with pytest.raises(DataError, match="has no split 'test' \\(it has train, val\\)"):
        build_dataset(spec("camvid", tmp_path / "camvid_hf", "hf"), "test")


def test_convert_refuses_a_non_empty_output_and_writes_nothing(tmp_path, capsys) -> None:
    root = write_camvid(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert datasets_cli(["convert", "camvid", "--root", str(root), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: output {out} already exists and is not empty; choose a new folder " \
                  f"or delete it\n"
    assert snapshot(tmp_path) == before
