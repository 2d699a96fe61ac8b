"""Loaders of ADE20K, Cityscapes, COCO-Stuff-10K and CamVid on miniature trees: known raw
label values become the right classes, root resolution, registry and the seeding contract."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import (ADE_EXPECT, CAMVID_EXPECT, CITY_EXPECT, CITY_TRAIN_IDS_EXPECT,
                           COCO_EXPECT, expected, write_ade20k, write_camvid, write_cityscapes,
                           write_coco_stuff10k)
from PIL import Image
from torch.utils.data import DataLoader

from benchmark.catalog import DATASETS
from benchmark.config import DataSpec
from benchmark.datasets import (REAL_DATASETS, DatasetBuilders, DataError, build_dataset,
                                dataset_info, get_definition)
from benchmark.datasets.base import read_png_label
from benchmark.datasets.coco_stuff import read_mat_label
from benchmark.datasets.roots import ENV_VAR


def spec_for(name: str, root: Path, **kw) -> DataSpec:
    classes = get_definition(name).num_classes
    split = "test" if name == "coco_stuff10k" else "val"
    return DataSpec(name=name, root=str(root), num_classes=classes, val_split=split, **kw)


WRITERS = {
    "ade20k": (write_ade20k, ADE_EXPECT),
    "cityscapes": (write_cityscapes, CITY_EXPECT),
    "coco_stuff10k": (write_coco_stuff10k, COCO_EXPECT),
    "camvid": (write_camvid, CAMVID_EXPECT),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_known_pixels_decode_to_their_classes(name, tmp_path) -> None:
    write, mapping = WRITERS[name]
    write(tmp_path)
    spec = spec_for(name, tmp_path)
    for split in ("train", spec.val_split):
        ds = build_dataset(spec, split)
        assert len(ds) == {"train": 3, "val": 2, "test": 2}[split] + (name == "camvid" and
                                                                     split == "train")
        for i in range(len(ds)):
            pair = ds.source.pairs[i]
            reader = read_mat_label if name == "coco_stuff10k" else read_png_label
            raw = reader(pair.label)
            image, label = ds.load(i)
            assert image.dtype == torch.uint8 and image.shape[0] == 3
            assert label.dtype == torch.int64 and label.shape == image.shape[1:]
            np.testing.assert_array_equal(label.numpy(), expected(raw, mapping))
            assert label.ne(255).any()


@pytest.mark.parametrize("name", list(WRITERS))
def test_check_command_passes_on_each_miniature_tree(name, tmp_path, capsys) -> None:
    from benchmark.datasets.__main__ import main as datasets_cli

    WRITERS[name][0](tmp_path)
    assert datasets_cli(["check", name, "--root", str(tmp_path), "--full"]) == 0
    out = capsys.readouterr().out
    splits = get_definition(name).splits
    assert out.count("the official release has") == len(splits)  # a subset: a warning only
    assert out.count("pairs decoded: sizes match, label values valid") == len(splits)
    assert out.rstrip().endswith("OK") and " error " not in out


def test_class_tables_match_the_label_maps() -> None:
    ade = get_definition("ade20k")
    assert ade.num_classes == 150 and ade.class_names[0] == "wall" and ade.class_names[-1] == "flag"
    city = get_definition("cityscapes")
    assert city.class_names[CITY_EXPECT[26]] == "car" and city.class_names[0] == "road"
    coco = get_definition("coco_stuff10k")
    assert coco.num_classes == 171
    assert [coco.class_names[COCO_EXPECT[r]] for r in (1, 13, 92, 182)] == [
        "person", "stop sign", "banner", "wood"]
    camvid = get_definition("camvid")
    assert camvid.class_names == ("sky", "building", "pole", "road", "pavement", "tree",
                                  "sign_symbol", "fence", "car", "pedestrian", "bicyclist")
    for d in REAL_DATASETS.values():
        assert len(d.palette) == d.num_classes
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in d.palette)
        assert len(set(d.class_names)) == d.num_classes


def test_cityscapes_pre_converted_train_ids(tmp_path) -> None:
    write_cityscapes(tmp_path, train_ids=True)
    ds = build_dataset(spec_for("cityscapes", tmp_path), "val")
    pair = ds.source.pairs[0]
    assert pair.label.name.endswith("_gtFine_labelTrainIds.png") and pair.encoding == "train_ids"
    _, label = ds.load(0)
    np.testing.assert_array_equal(label.numpy(),
                                  expected(read_png_label(pair.label), CITY_TRAIN_IDS_EXPECT))


def test_coco_stuff_unused_id_is_an_error(tmp_path) -> None:
    import scipy.io

    root = write_coco_stuff10k(tmp_path)
    bad = root / "annotations" / "COCO_train2014_000000000001.mat"
    scipy.io.savemat(bad, {"S": np.full((10, 14), 12, np.uint16)})  # 12: unused COCO id
    ds = build_dataset(spec_for("coco_stuff10k", tmp_path), "train")
    with pytest.raises(DataError, match=f"label value 12 in {bad} is outside \\[0, 171\\)"):
        ds.load(0)


def test_registry_keeps_synthetic_and_lists_the_real_sets() -> None:
    assert set(DATASETS.names()) == {"synthetic", "ade20k", "cityscapes", "coco_stuff10k",
                                     "camvid"}
    assert all(isinstance(DATASETS.get(n).load(), DatasetBuilders) for n in DATASETS.names())
    syn = DataSpec()
    assert dataset_info(syn).num_classes == 6
    image, label = build_dataset(syn, "train")[(3, 99)]
    assert image.shape == (3, 64, 64) and label.shape == (64, 64)
    info = dataset_info(DataSpec(name="camvid", num_classes=11))
    assert info.num_classes == 11 and info.class_names[0] == "sky" and info.ignore_index == 255


def test_wrong_num_classes_names_the_fix(tmp_path) -> None:
    write_camvid(tmp_path)
    with pytest.raises(DataError, match="set data.num_classes=11"):
        build_dataset(DataSpec(name="camvid", root=str(tmp_path), num_classes=6), "train")


def test_missing_split_names_the_valid_ones(tmp_path) -> None:
    write_coco_stuff10k(tmp_path)
    with pytest.raises(DataError, match="has no split 'val'; it has train, test"):
        build_dataset(replace(spec_for("coco_stuff10k", tmp_path), val_split="val"), "val")


def test_root_is_the_folder_itself_a_parent_or_the_environment(tmp_path, monkeypatch) -> None:
    root = write_camvid(tmp_path / "parent")
    for given in (root, root.parent):
        ds = build_dataset(spec_for("camvid", given), "train")
        assert ds.source.pairs[0].image.parent == root / "train"
    monkeypatch.setenv(ENV_VAR, f"{tmp_path / 'elsewhere'}:{root.parent}")
    ds = build_dataset(spec_for("camvid", ""), "val")
    assert ds.source.pairs[0].image.parent == root / "val"


def test_train_items_have_the_crop_size_and_eval_items_keep_the_label_size(tmp_path) -> None:
    write_ade20k(tmp_path)  # images 12x20 and 12x22
    spec = spec_for("ade20k", tmp_path, scale_long=40, scale_short=24, min_scale=0.5,
                    max_scale=2.0, crop_size=16, crop_width=24, cat_max_ratio=0.75,
                    photometric="mmseg")
    train = build_dataset(spec, "train")
    for i in range(len(train)):
        image, label = train[(i, 7 + i)]
        assert image.shape == (3, 16, 24) and image.dtype == torch.float32
        assert label.shape == (16, 24) and label.dtype == torch.int64
    val = build_dataset(spec, "val")
    for i in range(len(val)):
        image, label = val[i]
        raw = read_png_label(val.source.pairs[i].label)
        assert label.shape == raw.shape  # original size for the metric
        assert image.shape[1:] == ((24, 40) if raw.shape[1] == 20 else (22, 40))  # fit 40x24
        np.testing.assert_array_equal(label.numpy(), expected(raw, ADE_EXPECT))


def test_a_seeded_item_is_a_pure_function_of_index_and_seed(tmp_path) -> None:
    write_camvid(tmp_path)
    spec = spec_for("camvid", tmp_path, min_scale=0.5, max_scale=2.0, crop_size=12,
                    cat_max_ratio=0.75, photometric="mmseg")
    ds = build_dataset(spec, "train")
    first = ds[(1, 1234)]
    torch.manual_seed(0)
    ambient_before = torch.rand(3)
    torch.manual_seed(0)
    ds[(2, 55)]  # other seeded calls in between do not matter ...
    again = ds[(1, 1234)]
    assert torch.equal(torch.rand(3), ambient_before)  # ... nor touch the ambient RNG
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    others = [ds[(1, s)] for s in range(1235, 1240)]
    assert any(not torch.equal(first[0], o[0]) for o in others), "seed must change the sample"
    # plain ints use the ambient RNG
    torch.manual_seed(3)
    a = ds[1]
    torch.manual_seed(3)
    b = ds[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_seeded_items_are_the_same_in_a_worker_process(tmp_path) -> None:
    write_camvid(tmp_path)
    spec = spec_for("camvid", tmp_path, min_scale=0.5, max_scale=2.0, crop_size=12,
                    photometric="mmseg")
    ds = build_dataset(spec, "train")
    keys = [(0, 11), (3, 12), (1, 13), (0, 14)]
    inline = [ds[k] for k in keys]
    loader = DataLoader(ds, batch_size=2, sampler=keys, num_workers=1)
    batches = list(loader)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert torch.equal(images, torch.stack([x for x, _ in inline]))
    assert torch.equal(labels, torch.stack([y for _, y in inline]))


def test_eval_split_is_deterministic_and_ignores_a_seed(tmp_path) -> None:
    write_camvid(tmp_path)
    ds = build_dataset(spec_for("camvid", tmp_path, scale_long=12, scale_short=8), "test")
    a, b = ds[0], ds[(0, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 8, 12) and a[1].shape == (16, 24)


def test_palette_png_labels_are_read_as_indices(tmp_path) -> None:
    root = write_camvid(tmp_path)
    label_path = root / "trainannot" / "0001TP_train000.png"
    ids = np.asarray(Image.open(label_path))
    pal = Image.new("P", (ids.shape[1], ids.shape[0]))
    pal.putdata(ids.flatten().tolist())
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    pal.save(label_path)
    assert Image.open(label_path).mode == "P"
    assert np.array_equal(read_png_label(label_path), ids)


def test_a_camvid_grid_cell_trains_and_evaluates_on_a_miniature_tree(tmp_path) -> None:
    from benchmark.overrides import apply_overrides
    from benchmark.train.engine import train_and_evaluate
    from experiments import get_grid

    write_camvid(tmp_path / "data")
    prototype = get_grid("camvid").cells[2]
    cell = apply_overrides(prototype, [
        f"data.root={tmp_path / 'data'}", "train.iters=2", "train.batch_size=2",
        "data.scale_long=48", "data.scale_short=32", "data.crop_size=32", "data.crop_width=32"])
    result = train_and_evaluate(cell, seed=0, progress=False)
    metrics = result.metrics
    assert set(metrics.per_class_iou) == set(get_definition("camvid").class_names)
    assert metrics.pixels == 2 * 16 * 24 - 2 * 16 * 6  # the 2 test images, void left out
    assert 0 <= metrics.miou <= 100
