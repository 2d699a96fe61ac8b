"""Tests for the generated segmentation data set (benchmark/datasets/synthetic.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from benchmark.datasets.synthetic import (
    SyntheticConfig,
    SyntheticSegmentation,
    build_appearance,
    item_seed,
)

CFG = SyntheticConfig()
C, M, S = CFG.num_classes, CFG.modes_per_class, CFG.image_size


@pytest.fixture(scope="module")
def train40() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(image, label, mode) of the first 40 training items at the default config."""
    ds = SyntheticSegmentation(CFG, "train")
    return [ds.sample(i) for i in range(40)]


Pixels = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _pixels(items: list[tuple[torch.Tensor, ...]]) -> Pixels:
    """Flatten items to (N, 3) colours, (N,) labels, (N,) modes, dropping ignored pixels."""
    x = torch.cat([it[0].flatten(1).T for it in items])
    y = torch.cat([it[1].flatten() for it in items])
    m = torch.cat([it[2].flatten() for it in items]) if len(items[0]) > 2 else torch.zeros_like(y)
    keep = y != CFG.ignore_index
    return x[keep], y[keep], m[keep]


# ---------------------------------------------------------------- shapes, dtypes, ranges


def test_item_shapes_dtypes_and_ranges(train40: list) -> None:
    ds = SyntheticSegmentation(CFG)
    assert len(ds) == CFG.num_images
    image, label = ds[0]
    assert image.shape == (3, S, S) and image.dtype == torch.float32
    assert label.shape == (S, S) and label.dtype == torch.int64
    for image, label, mode in train40:
        assert torch.isfinite(image).all()
        assert label.min() >= 0 and label.max() < C  # no ignore pixels by default
        assert mode.shape == (S, S) and mode.dtype == torch.int64
        assert mode.min() >= 0 and mode.max() < M
    assert ds.class_names == [f"class{c}" for c in range(C)]
    assert len(ds.palette) == C and len(set(ds.palette)) == C
    assert all(len(p) == 3 and all(0 <= v <= 255 for v in p) for p in ds.palette)


def test_images_roughly_normalised(train40: list) -> None:
    x = torch.cat([it[0].flatten(1) for it in train40], dim=1)
    assert x.mean(dim=1).abs().max() < 0.35, x.mean(dim=1)
    std = x.std(dim=1)
    assert ((std > 0.7) & (std < 1.3)).all(), std


def test_every_split_and_length_follow_config() -> None:
    cfg = SyntheticConfig(num_images=7, image_size=32)
    for split in ("train", "val", "test"):
        ds = SyntheticSegmentation(cfg, split)
        assert len(ds) == 7
        assert ds[6][0].shape == (3, 32, 32)
        assert torch.equal(ds[-1][0], ds[6][0])
        with pytest.raises(IndexError):
            ds[7]


def test_ignore_borders_use_ignore_index() -> None:
    cfg = SyntheticConfig(image_size=32, ignore_fraction=0.1, ignore_index=-1, num_classes=4)
    ds = SyntheticSegmentation(cfg)
    labels = torch.stack([ds[i][1] for i in range(10)])
    ignored = labels == -1
    assert 0.02 < ignored.float().mean() < 0.6
    assert labels[~ignored].min() >= 0 and labels[~ignored].max() < 4
    # the band only removes labels: outside it the labels equal the unbordered ones
    plain = SyntheticSegmentation(dataclasses.replace(cfg, ignore_fraction=0.0))
    plain_labels = torch.stack([plain[i][1] for i in range(10)])
    assert (plain_labels != -1).all()
    assert torch.equal(labels[~ignored], plain_labels[~ignored])


# ---------------------------------------------------------------- determinism


def test_same_item_is_bitwise_identical() -> None:
    ds = SyntheticSegmentation(CFG)
    a, b = ds[3], ds[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # a fresh object, another call order and an unrelated global RNG state change nothing
    torch.manual_seed(1234)
    other = SyntheticSegmentation(SyntheticConfig())
    for i in (5, 4, 3):
        x, y = other[i]
        x0, y0 = ds[i]
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_items_are_independent_of_worker_processes() -> None:
    cfg = SyntheticConfig(image_size=32, num_images=6)
    ds = SyntheticSegmentation(cfg)
    loader = DataLoader(ds, batch_size=None, num_workers=2, shuffle=False)
    for i, (x, y) in enumerate(loader):
        x0, y0 = ds[i]
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_split_seed_and_index_change_the_image() -> None:
    x_train = SyntheticSegmentation(CFG, "train")[0][0]
    assert not torch.equal(x_train, SyntheticSegmentation(CFG, "val")[0][0])
    assert not torch.equal(x_train, SyntheticSegmentation(CFG, "test")[0][0])
    other_seed = SyntheticSegmentation(dataclasses.replace(CFG, seed=1), "train")
    assert not torch.equal(x_train, other_seed[0][0])
    assert not torch.equal(x_train, SyntheticSegmentation(CFG, "train")[1][0])


def test_item_seed_is_stable_and_distinct() -> None:
    # golden values: a salted hash() or any change to the hashing would change every data set
    assert item_seed(0, "train", 0) == 2679851379387476558
    assert item_seed(3, "val", 17) == 6061571618390820262
    splits = ("train", "val", "test")
    seeds = {item_seed(s, sp, i) for s in (0, 1) for sp in splits for i in range(50)}
    assert len(seeds) == 2 * 3 * 50
    assert all(0 <= s < 2**63 for s in seeds)


def test_appearance_is_shared_across_seeds_and_splits() -> None:
    a = SyntheticSegmentation(CFG, "train").appearance
    b = SyntheticSegmentation(dataclasses.replace(CFG, seed=99), "val").appearance
    assert torch.equal(a.colours, b.colours) and torch.equal(a.texture, b.texture)
    assert a.colours.shape == (C * M, 3)


# ---------------------------------------------------------------- content


def test_all_classes_appear_in_first_40_images(train40: list) -> None:
    seen = torch.unique(torch.cat([it[1].flatten() for it in train40]))
    assert seen.tolist() == list(range(C))
    # every image has a background and at least one visible shape of some class or mode
    assert all(len(torch.unique(it[1] * M + it[2])) >= 2 for it in train40)


def test_all_classes_appear_with_more_classes() -> None:
    ds = SyntheticSegmentation(SyntheticConfig(num_classes=10, image_size=32))
    seen = torch.unique(torch.cat([ds[i][1].flatten() for i in range(40)]))
    assert seen.tolist() == list(range(10))


def test_modes_of_a_class_are_distinct_and_prototypes_help(train40: list) -> None:
    x, y, m = _pixels(train40)
    mode_mean = torch.stack([x[(y == c) & (m == k)].mean(0) for c in range(C) for k in range(M)])
    class_mean = torch.stack([x[y == c].mean(0) for c in range(C)])

    # modes of every class sit clearly apart (normalised colour units, ~1 = one channel std)
    per_class = mode_mean.view(C, M, 3)
    for c in range(C):
        assert torch.pdist(per_class[c]).min() > 1.0, (c, per_class[c])

    # some mode is nearer to another class's mode than to its own class's other modes
    d = torch.cdist(mode_mean, mode_mean).fill_diagonal_(float("inf"))
    nearest_class = d.argmin(dim=1) // M
    assert (nearest_class != torch.arange(C * M) // M).any()

    # held-out pixels: one colour prototype per class is far worse than one per (class, mode)
    vx, vy, _ = _pixels([SyntheticSegmentation(CFG, "val")[i] for i in range(20)])
    vx, vy = vx[::5], vy[::5]  # ~16k pixels are plenty and keep the distances cheap
    acc_class = (torch.cdist(vx, class_mean).argmin(1) == vy).float().mean().item()
    acc_mode = (torch.cdist(vx, mode_mean).argmin(1) // M == vy).float().mean().item()
    assert acc_mode > 0.8, (acc_mode, acc_class)
    assert acc_mode > acc_class + 0.3, (acc_mode, acc_class)


def test_palette_builder_spreads_modes_for_other_sizes() -> None:
    for c, m in ((2, 4), (19, 3), (5, 1)):
        app = build_appearance(c, m)
        assert app.colours.shape == (c * m, 3)
        assert ((app.colours >= 0) & (app.colours <= 1)).all()
        assert torch.pdist(app.colours).min() > 0.05  # all C*M colours distinct
        if m > 1:
            # class mean colours lie closer together than the modes within a class
            per_class = app.colours.view(c, m, 3)
            intra = torch.stack([torch.pdist(per_class[k]).mean() for k in range(c)]).mean()
            assert torch.pdist(per_class.mean(dim=1)).max() < intra


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_classes", 1),
        ("modes_per_class", 0),
        ("image_size", 8),
        ("num_images", 0),
        ("ignore_index", 0),
        ("ignore_index", 5),
        ("ignore_fraction", -0.1),
        ("ignore_fraction", 0.5),
    ],
)
def test_bad_config_raises_naming_field(field: str, value: object) -> None:
    cfg = dataclasses.replace(CFG, **{field: value})
    with pytest.raises(ValueError, match=field):
        SyntheticSegmentation(cfg)


def test_bad_split_names_valid_splits() -> None:
    with pytest.raises(ValueError, match="train.*val.*test"):
        SyntheticSegmentation(CFG, "validation")


def test_items_are_kept_and_returned_as_copies() -> None:
    ds = SyntheticSegmentation(SyntheticConfig(num_classes=3, image_size=16, num_images=4), "train")
    image, label = ds[(2, 123)]
    again_image, again_label = ds[2]
    assert torch.equal(image, again_image) and torch.equal(label, again_label)
    assert 2 in ds._cache  # generated once
    image.zero_()
    label.fill_(0)
    fresh_image, fresh_label = ds[2]  # a caller's in-place edit does not reach the cache
    assert torch.equal(fresh_image, again_image) and torch.equal(fresh_label, again_label)
    assert torch.equal(fresh_image, ds._generate(2)[0])
