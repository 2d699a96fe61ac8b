"""Configuration: stable cell keys, typed overrides, one-line errors."""

from __future__ import annotations

import pytest

import dataclasses

from benchmark.config import ADDED_SETTINGS, RESULT_SECTIONS, Cell, ConfigError, HeadSpec, \
    ModelSpec, apply_overrides, cell_from_dict, override_keys


def test_key_is_stable_and_ignores_labels() -> None:
    a = Cell(grid="g", row="Prototype", paper_miou=41.1)
    b = Cell(grid="other", row="Prototype", paper_miou=None)
    assert a.key == b.key  # labels and paper numbers do not change the result
    assert a.key == Cell(grid="g", row="Prototype").key
    assert a.key.startswith("prototype-")
    # a hard-coded value: a key must not change between versions unless the specs change
    assert Cell(grid="g", row="Softmax").key == KNOWN_SOFTMAX_KEY


KNOWN_SOFTMAX_KEY = "softmax-0586c08a77"  # update only when a spec default deliberately changes

# Every result setting that existed when the first real records (CamVid) were written. A
# setting added later must go into config.ADDED_SETTINGS so that existing keys stay valid.
FIRST_KEYED_SETTINGS = {
    "data": "name root num_classes ignore_index image_size modes_per_class train_images "
            "val_images data_seed crop_size crop_width val_split format scale_long scale_short "
            "min_scale max_scale cat_max_ratio flip_prob photometric",
    "model": "backbone decoder decoder_channels pretrained aux_weight",
    "model.head": "name num_prototypes embed_dim projection proj_norm_axis score_norm "
                  "update_assign gamma sinkhorn_eps sinkhorn_iters ppc_weight ppd_weight ppc_tau "
                  "query_layers query_heads query_dim",
    "train": "iters batch_size optimizer lr momentum weight_decay poly_power warmup_iters "
             "warmup_ratio grad_clip amp num_workers log_every checkpoint_every recipe",
    "eval": "batch_size mode",
}


def _settings(obj: object, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        name = f"{prefix}.{f.name}"
        out += _settings(value, name) if dataclasses.is_dataclass(value) else [name]
    return out


def test_settings_added_later_are_registered_so_old_keys_stay_valid() -> None:
    first = {f"{sec}.{n}" for sec, names in FIRST_KEYED_SETTINGS.items() for n in names.split()}
    now = {n for sec in RESULT_SECTIONS for n in _settings(getattr(Cell("g", "x"), sec), sec)}
    unregistered = sorted(now - first - set(ADDED_SETTINGS))
    assert not unregistered, f"add these to config.ADDED_SETTINGS with their default: {unregistered}"
    for dotted, value in ADDED_SETTINGS.items():
        default = Cell("g", "x")
        for part in dotted.split("."):
            default = getattr(default, part)
        assert default == value, f"{dotted}: default changed; keep ADDED_SETTINGS as it was"


def test_a_setting_off_its_added_value_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmark.config as config

    def keys() -> tuple[str, str]:  # fresh cells: a cell caches its key
        return Cell(grid="g", row="x").key, apply_overrides(Cell(grid="g", row="x"),
                                                             ["train.amp=true"]).key

    monkeypatch.setattr(config, "ADDED_SETTINGS", {})
    base_hashed, amp_hashed = keys()
    monkeypatch.setattr(config, "ADDED_SETTINGS", {"train.amp": False})
    base_omitted, amp_registered = keys()
    assert base_omitted != base_hashed  # at its added value the setting is left out
    assert amp_registered == amp_hashed != base_omitted  # off it, it is hashed as before


def test_key_changes_with_any_result_setting() -> None:
    base = Cell(grid="g", row="x")
    keys = {base.key}
    for text in ["train.iters=7", "model.head.num_prototypes=3", "data.num_classes=4",
                 "eval.batch_size=2", "model.head.ppc_tau=0.1"]:
        keys.add(apply_overrides(base, [text]).key)
    assert len(keys) == 6


def test_overrides_are_typed() -> None:
    cell = apply_overrides(Cell(grid="g", row="x"), [
        "train.iters=12", "train.lr=0.5", "train.amp=true", "model.head.name=prototype",
        "model.head.gamma=0.9",
    ])
    assert cell.train.iters == 12 and isinstance(cell.train.iters, int)
    assert cell.train.lr == 0.5 and cell.train.amp is True
    assert cell.model.head.name == "prototype" and cell.model.head.gamma == 0.9


@pytest.mark.parametrize("text, message", [
    ("train.iterz=3", "unknown --set key 'train.iterz'; did you mean train.iters"),
    ("train.iters=abc", "bad value for train.iters: 'abc' is not a valid int"),
    ("train.iters", "malformed --set 'train.iters': expected key=value"),
    ("model.head.name=mlp", "bad value for model.head.name: 'mlp'; choose one of softmax"),
    ("train.iters=0", "bad value for train.iters: must be > 0"),
    ("data.ignore_index=2", "bad value for data.ignore_index"),
])
def test_bad_overrides_raise_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(Cell(grid="g", row="x"), [text])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cell_round_trips_through_dict() -> None:
    cell = Cell(grid="g", row="x", model=ModelSpec(head=HeadSpec(name="prototype")))
    assert cell_from_dict(cell.to_dict()) == cell


def test_override_keys_cover_nested_head() -> None:
    keys = override_keys()
    assert "model.head.num_prototypes" in keys and "train.iters" in keys
    assert "grid" not in keys and "row" not in keys


def test_the_torch_free_catalog_names_exactly_the_registered_builders() -> None:
    """config.validate checks names against benchmark.catalog (no torch); the builders live in
    the registries, so the two must list the same names."""
    from benchmark import catalog
    from benchmark.datasets import DATASETS, REAL_DATASETS
    from methods import BACKBONES, DECODERS, HEADS

    assert catalog.BACKBONE_NAMES == tuple(BACKBONES)
    assert catalog.DECODER_NAMES == tuple(DECODERS)
    assert catalog.HEAD_NAMES == tuple(HEADS)
    assert catalog.DATASET_NAMES == tuple(DATASETS)
    for name, definition in REAL_DATASETS.items():
        assert catalog.DATASET_RECIPES[name]["num_classes"] == definition.num_classes


# --------------------------------------------------------------------------- heads' options

# Every grid's cell keys, computed before HeadSpec was composed from the heads' options
# (methods/heads/options.py): a key must not change unless a cell's settings deliberately do.
# Deliberate changes: the paper grids' keys when each recipe followed its source (issue 13:
# pipeline, schedule, parameter groups, loss normalisation, evaluation resize, `model.init=mmseg`;
# experiments/recipes.py, experiments/paper_models.py); CamVid's prototype cell when its
# step-count settings were scaled to the schedule (issue 17, experiments/scaling.py) and the
# smoke grid when its schedule grew to 960 steps (issue 17, experiments/smoke.py); table2's
# HRNet pair when the released recipe read BGR and evaluated like its source (issue 14:
# data.channel_order, eval.logit_resize=openseg).
GRID_KEYS = {
    "smoke": "softmax-d784c5db62 pixel-query-e1b54f78f6 pixel-contrast-eac4020cb0 "
             "prototype-k-1-177e923b29 prototype-k-5-25681a9880",
    "table1": "fcn-ffda5353de ours-fcn-1a4a290955 hrnet-c3e5c2b3bf "
              "ours-hrnet-2be1f82d36 swin-af65871c15 ours-swin-a6152adf6f "
              "segformer-4a546b1bf7 ours-segformer-fd2ea0eb88",
    "table2": "fcn-1f502a0c7c ours-fcn-07b2c7872e hrnet-d8408a3b34 "
              "ours-hrnet-92cfb68e20 swin-b1ca8d12d1 ours-swin-33f4636354 "
              "segformer-5febe7dc14 ours-segformer-86cc59ade3 "
              "contrastiveseg-802bbbd22e",
    "table3": "fcn-5242d56839 ours-fcn-bcff3b0003 hrnet-089433ae0e "
              "ours-hrnet-485af07258 swin-85ee88284f ours-swin-4f592a7237 "
              "segformer-70d9e05398 ours-segformer-721a5ddd9c",
    "ablation_loss": "ce-b808c0e4df ce-ppc-81c5dfaa1e ce-ppd-2e4e85615c "
                     "ce-ppc-ppd-be2443cd8b",
    "ablation_k": "k-1-898a3733c4 k-5-ccac6be046 k-10-be2443cd8b k-20-1add662c1b "
                  "k-50-979f942f3e",
    "camvid": "softmax-5b17d9daa7 pixel-query-0c9d398503 pixel-contrast-7e95b3a793 "
              "prototype-k-10-c85230baa5",
    "discrepancies_camvid": "released-code-15ddd33f5e ppc-temperature-1-0-0-1-9fd9c89b6f "
                            "ppd-weight-0-001-0-01-f8934c9b60 "
                            "prototype-update-gumbel-draw-argmax-bb464f20b8 "
                            "projection-mlp-none-4f0fcb7811 score-layernorm-none-946786ab20 "
                            "embedding-norm-over-width-channels-efec044ae4",
}


@pytest.mark.parametrize("grid", list(GRID_KEYS))
def test_every_grids_cell_keys_are_unchanged(grid: str) -> None:
    from experiments import get_grid

    assert [c.key for c in get_grid(grid).cells] == GRID_KEYS[grid].split()


@pytest.mark.parametrize("grid", ["camvid", "discrepancies_camvid"])
def test_the_committed_records_rebuild_to_their_keys(grid: str) -> None:
    """A committed record's cell, read back into today's specs, hashes to the key it was stored
    under, and each of the grid's cells has its 3 seeds."""
    import json
    from pathlib import Path

    from experiments import get_grid

    runs = Path(__file__).resolve().parents[2] / "results" / "runs" / grid
    paths = sorted(runs.glob("*/seed*.json"))
    assert sorted({p.parent.name for p in paths}) == sorted(c.key for c in get_grid(grid).cells)
    assert len(paths) == 3 * len(get_grid(grid).cells)
    for path in paths:
        record = json.loads(path.read_text())
        cell = cell_from_dict(record["cell"])
        assert cell.key == record["cell_key"] == path.parent.name
        stored, rebuilt = record["cell"]["model"]["head"], cell.to_dict()["model"]["head"]
        assert {k: rebuilt[k] for k in stored} == stored  # every stored head field is read


def test_head_spec_is_composed_from_the_heads_options() -> None:
    from methods.heads.options import HEAD_OPTIONS

    spec_fields = {f.name: f.default for f in dataclasses.fields(HeadSpec)}
    expected = {"name": "softmax"}
    for options in HEAD_OPTIONS.values():
        expected.update({options.PREFIX + f.name: f.default for f in dataclasses.fields(options)})
    assert spec_fields == expected
    assert "contrast_variant" in spec_fields and "query_heads" in spec_fields
    spec = HeadSpec(name="prototype", num_prototypes=3, contrast_variant="memory")
    assert spec.options() == HEAD_OPTIONS["prototype"](num_prototypes=3)
    assert HeadSpec(name="pixel_contrast", contrast_variant="memory").options().variant == "memory"


def test_an_option_added_next_to_a_head_becomes_a_set_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmark.config as config
    from methods.heads.options import HEAD_OPTIONS, PixelQueryOptions

    @dataclasses.dataclass(frozen=True)
    class WithDropout(PixelQueryOptions):
        dropout: float = 0.0  # a new option: one edit next to the head

    monkeypatch.setitem(HEAD_OPTIONS, "pixel_query", WithDropout)
    fields = {name: (hint, f.default) for name, hint, f in config._head_spec_fields()}
    assert fields["query_dropout"] == (float, 0.0)
    assert fields["query_heads"] == (int, 4)


def test_allowed_head_values_are_the_options_declared_choices() -> None:
    from benchmark.validation import CHOICES
    from methods.heads.options import HEAD_OPTIONS

    for options in HEAD_OPTIONS.values():
        for name, allowed in options.choices().items():
            assert CHOICES[f"model.head.{options.PREFIX}{name}"] == allowed
    with pytest.raises(ConfigError, match="bad value for model.head.score_norm: 'batchnorm'; "
                                          "choose one of layernorm, none"):
        apply_overrides(Cell(grid="g", row="x"), ["model.head.score_norm=batchnorm"])


def test_the_key_names_which_weights_not_where_they_are() -> None:
    """Two users with the same checkpoint in different folders share cell keys (the record
    names the file and its SHA-256); from scratch (`none`) and no weights stay distinct."""
    from experiments import get_grid

    cell = get_grid("table1").cells[0]
    here = apply_overrides(cell, ["model.pretrained=/ckpt/a/resnet101_v1c.pth"])
    there = apply_overrides(cell, ["model.pretrained=/other/place/resnet101_v1c.pth"])
    scratch = apply_overrides(cell, ["model.pretrained=none"])
    assert here.key == there.key
    assert len({here.key, scratch.key, cell.key}) == 3
