"""Configuration: stable cell keys, typed overrides, one-line errors."""

from __future__ import annotations

import pytest

import dataclasses

from benchmark.config import (Cell, ConfigError, HeadSpec, ModelSpec, TrainSpec, cell_from_dict,
                              key_payload, override_keys)
from benchmark.overrides import apply_overrides, apply_to_grid
from methods.settings import setting


def test_key_is_stable_and_ignores_labels() -> None:
    a = Cell(grid="g", row="Prototype", paper_miou=41.1)
    b = Cell(grid="other", row="Prototype", paper_miou=None)
    assert a.key == b.key  # labels and paper numbers do not change the result
    assert a.key == Cell(grid="g", row="Prototype").key
    assert a.key.startswith("prototype-")
    # a hard-coded value: a key must not change between versions unless the specs change
    assert Cell(grid="g", row="Softmax").key == KNOWN_SOFTMAX_KEY


KNOWN_SOFTMAX_KEY = "softmax-c72b212aca"  # update only when a spec default deliberately changes


def _fresh(cell: Cell) -> Cell:
    """A copy that computes its key again (a cell caches it)."""
    return dataclasses.replace(cell)


def test_the_key_hashes_only_the_named_heads_own_options() -> None:
    payload = key_payload(Cell(grid="g", row="x", model=ModelSpec(head=HeadSpec("prototype"))))
    head = payload["model"]["head"]
    assert head["name"] == "prototype" and "num_prototypes" in head
    assert not any(k.startswith(("contrast_", "query_", "variant")) for k in head)
    assert key_payload(Cell(grid="g", row="x"))["model"]["head"] == {"name": "softmax"}


def test_an_option_added_with_its_legacy_value_re_keys_nothing(monkeypatch) -> None:
    """A new head option (declared with `legacy=`) and a new recipe setting leave every grid's
    keys as they were; set off its legacy value, each changes the key of the cells it is in."""
    from experiments import get_grid
    from methods.catalog import HEADS, head_options
    from methods.heads.options import PrototypeOptions

    @dataclasses.dataclass(frozen=True)
    class WithDropout(PrototypeOptions):
        dropout: float = setting(0.0, minimum=0.0, legacy=0.0)  # the one edit a new option is

    for grid in GRID_KEYS:  # the grids' modules, imported before the option exists
        get_grid(grid)
    entry = HEADS.get("prototype")
    patched = dataclasses.replace(entry, options=WithDropout)
    monkeypatch.setitem(HEADS._entries, "prototype", patched)
    assert head_options("prototype") is WithDropout
    for grid, keys in GRID_KEYS.items():
        assert [c.key for c in get_grid(grid).cells] == keys.split(), grid
    proto = next(c for c in get_grid("smoke").cells if c.tag == "ours")
    assert proto.model.head.options.dropout == 0.0
    assert apply_overrides(proto, ["model.head.dropout=0.1"]).key != proto.key

    @dataclasses.dataclass(frozen=True)
    class NewTrain(TrainSpec):
        compile_mode: str = setting("off", legacy="off")  # a new recipe setting

    cell = get_grid("smoke").cells[0]
    renewed = dataclasses.replace(cell, train=NewTrain(**dataclasses.asdict(cell.train)))
    assert renewed.key == cell.key
    changed = dataclasses.replace(renewed, train=dataclasses.replace(renewed.train,
                                                                     compile_mode="max"))
    assert changed.key != cell.key


def test_a_new_head_re_keys_nothing_and_gets_keys_of_its_own(monkeypatch) -> None:
    from experiments import get_grid
    from methods.catalog import HEADS
    from methods.heads.options import HeadOptions

    @dataclasses.dataclass(frozen=True)
    class FixtureOptions(HeadOptions):
        HEAD = "fixture_head"
        DISPLAY = "Fixture"
        width: int = setting(4, minimum=1)

    HEADS.register("fixture_head", "methods.heads.softmax:SoftmaxHead", options=FixtureOptions)
    try:
        for grid, keys in GRID_KEYS.items():
            assert [c.key for c in get_grid(grid).cells] == keys.split(), grid
        cell = apply_overrides(get_grid("smoke").cells[0], ["model.head.name=fixture_head",
                                                            "model.head.width=8"])
        assert cell.row == "Fixture" and cell.key.startswith("fixture-")
        assert cell.model.head.options == FixtureOptions(width=8)
    finally:
        HEADS.unregister("fixture_head")


def test_key_changes_with_any_result_setting() -> None:
    base = Cell(grid="g", row="x", model=ModelSpec(head=HeadSpec("prototype")))
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
    ("model.head.name=mlp", "bad value for model.head.name: unknown head 'mlp'"),
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
    assert cell.to_dict()["model"]["head"]["options"]["num_prototypes"] == 10


def test_override_keys_are_the_cells_own_head_options() -> None:
    keys = override_keys()
    assert "model.head.name" in keys and "train.iters" in keys
    assert "model.head.num_prototypes" not in keys  # the default head (softmax) has none
    proto = override_keys(Cell(grid="g", row="x", model=ModelSpec(head=HeadSpec("prototype"))))
    assert "model.head.num_prototypes" in proto and "model.head.contrast_tau" not in proto
    assert "grid" not in keys and "row" not in keys


def test_one_registry_per_kind_describes_every_builder_without_torch() -> None:
    """Names and descriptions come from the registries (torch-free); each entry's lazy builder
    resolves to the thing that builds it."""
    import subprocess
    import sys

    from benchmark import catalog
    from benchmark.datasets import REAL_DATASETS, DatasetBuilders
    from experiments import GRIDS
    from methods.heads.base import SegHead

    for entry in catalog.HEADS.entries():
        assert issubclass(entry.load(), SegHead) and entry.load().Options is entry.options
    for entry in [*catalog.BACKBONES.entries(), *catalog.DECODERS.entries(), *GRIDS.entries()]:
        assert callable(entry.load()), entry
    for entry in catalog.DATASETS.entries():
        assert isinstance(entry.load(), DatasetBuilders)
    for name, definition in REAL_DATASETS.items():
        assert catalog.dataset_recipe(name)["num_classes"] == definition.num_classes
    code = ("import sys, benchmark.catalog, experiments; from benchmark.validation import "
            "validate; from experiments import get_grid; [validate(c) for c in "
            "get_grid('table1').cells]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr[-500:]


# --------------------------------------------------------------------------- heads' options

# Every grid's cell keys since key version 2 (each head hashes only its own options; the keys
# before it are listed in docs/extending.md and moved by benchmark/migrate.py). A key must not
# change unless a cell's settings deliberately do: a new option declares `legacy=`.
GRID_KEYS = {
    "smoke": "softmax-aa13d040dc pixel-query-3a60053a8f pixel-contrast-5012540082 "
             "prototype-k-1-132d72fa88 prototype-k-5-365b5d8361",
    "table1": "fcn-86de8ed87f ours-fcn-5af87d7deb hrnet-f3b909afd0 ours-hrnet-e96d573a05 "
              "swin-41853eb5ef ours-swin-28ad88d74f segformer-8fc4e6a33f ours-segformer-6e60e1e130",
    "table2": "fcn-75113e52e3 ours-fcn-abc8710307 hrnet-fad4ed7c88 ours-hrnet-90abb3b961 "
              "swin-b2ac127bbc ours-swin-457f30cfa9 segformer-f4bc73fcf7 "
              "ours-segformer-80b275874d contrastiveseg-03e4bad263",
    "table3": "fcn-aaa0890d0a ours-fcn-d092719f3e hrnet-84dfba21e3 ours-hrnet-bf15981bf8 "
              "swin-9bf45be316 ours-swin-27808522fa segformer-ec2d0882f0 ours-segformer-232ce884d3",
    "ablation_loss": "ce-49fa096f48 ce-ppc-41ebc6abab ce-ppd-61d1fcab81 ce-ppc-ppd-788f8b6fa2",
    "ablation_k": "k-1-a618a0d8a6 k-5-040f680494 k-10-788f8b6fa2 k-20-4f8c14517c "
                  "k-50-ce50412b7e",
    "camvid": "softmax-a941a0de16 pixel-query-1d9bd7edeb pixel-contrast-f41519a01e "
              "prototype-k-10-2a452d2fcc",
    "discrepancies_camvid": "released-code-3b48171cca ppc-temperature-1-0-0-1-959f3b1cd7 "
                            "ppd-weight-0-001-0-01-4d1011d3c9 "
                            "prototype-update-gumbel-draw-argmax-506bf47673 "
                            "projection-mlp-none-439f71efb9 score-layernorm-none-7db82b4369 "
                            "embedding-norm-over-width-channels-f29fddc0a9",
}
# The committed records' keys before version 2 (the folders benchmark/migrate.py moved).
V1_KEYS = {"softmax-5b17d9daa7": "softmax-a941a0de16",
           "prototype-k-10-c85230baa5": "prototype-k-10-2a452d2fcc",
           "released-code-15ddd33f5e": "released-code-3b48171cca"}


@pytest.mark.parametrize("grid", list(GRID_KEYS))
def test_every_grids_cell_keys_are_unchanged(grid: str) -> None:
    from experiments import get_grid

    assert [c.key for c in get_grid(grid).cells] == GRID_KEYS[grid].split()


def _committed(grid: str) -> list:
    from pathlib import Path

    runs = Path(__file__).resolve().parents[2] / "results" / "runs" / grid
    return sorted(runs.glob("*/seed*.json"))


@pytest.mark.parametrize("grid", ["camvid", "discrepancies_camvid"])
def test_the_committed_records_rebuild_to_their_keys(grid: str) -> None:
    """A committed record's cell, read back into today's specs, hashes to the key it was stored
    under, every stored option of its own head is read, and each cell has its 3 seeds."""
    import json

    from experiments import get_grid

    paths = _committed(grid)
    assert sorted({p.parent.name for p in paths}) == sorted(c.key for c in get_grid(grid).cells)
    assert len(paths) == 3 * len(get_grid(grid).cells)
    for path in paths:
        record = json.loads(path.read_text())
        cell = cell_from_dict(record["cell"])
        assert cell.key == record["cell_key"] == path.parent.name
        stored, own = record["cell"]["model"]["head"], cell.model.head.options.spec_values()
        assert {k: stored[k] for k in own} == own  # the flat layout's own-head options


@pytest.mark.parametrize("old", list(V1_KEYS))
def test_a_folder_under_its_old_key_moves_with_its_results_unchanged(old: str, tmp_path) -> None:
    """A results folder from before key version 2: the cell folder moves to today's key, every
    byte of its records but the key stays, and a second scan does nothing."""
    import json

    from benchmark.migrate import MARKER, migrate_grid
    from benchmark.store import ResultsLayout

    new = V1_KEYS[old]
    (src,) = [p for p in _committed("camvid") + _committed("discrepancies_camvid")
              if p.parent.name == new and p.name == "seed0.json"]
    grid = src.parents[1].name
    layout = ResultsLayout(tmp_path)
    old_text = src.read_text().replace(f'"cell_key": "{new}"', f'"cell_key": "{old}"')
    (layout.runs(grid) / old).mkdir(parents=True)
    (layout.runs(grid) / old / "seed0.json").write_text(old_text)
    (layout.checkpoints(grid, old, 0)).mkdir(parents=True)
    assert migrate_grid(layout, grid) == [(old, new)]
    moved = layout.record(grid, new, 0)
    assert json.loads(moved.read_text()) == json.loads(src.read_text())
    assert layout.checkpoints(grid, new, 0).is_dir() and not (layout.runs(grid) / old).exists()
    assert (layout.runs(grid) / MARKER).exists() and migrate_grid(layout, grid) == []


def test_head_spec_holds_one_heads_own_options() -> None:
    from methods.heads.options import PixelContrastOptions, PrototypeOptions

    spec = HeadSpec(name="prototype", num_prototypes=3)
    assert spec.options == PrototypeOptions(num_prototypes=3) and spec.num_prototypes == 3
    assert HeadSpec(name="pixel_contrast", contrast_variant="memory").options == \
        PixelContrastOptions(variant="memory")
    with pytest.raises(ConfigError, match="prototype head has no option contrast_variant"):
        HeadSpec(name="prototype", contrast_variant="memory")
    flat = {"name": "prototype", "num_prototypes": 3, "contrast_variant": "memory",
            "query_heads": 8}  # a record from before key version 2: every head's options
    assert HeadSpec.from_dict(flat) == spec
    assert spec.label() == "Prototype (K=3)" and HeadSpec().label() == "Softmax"


def test_an_option_added_next_to_a_head_becomes_a_set_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from methods.catalog import HEADS
    from methods.heads.options import PixelQueryOptions

    @dataclasses.dataclass(frozen=True)
    class WithDropout(PixelQueryOptions):
        dropout: float = setting(0.0, legacy=0.0)  # a new option: one edit next to the head

    entry = HEADS.get("pixel_query")
    monkeypatch.setitem(HEADS._entries, "pixel_query", dataclasses.replace(entry,
                                                                           options=WithDropout))
    cell = Cell(grid="g", row="x", model=ModelSpec(head=HeadSpec("pixel_query")))
    assert "model.head.query_dropout" in override_keys(cell)
    assert apply_overrides(cell, ["model.head.query_dropout=0.5"]).model.head.query_dropout == 0.5


def test_head_values_are_checked_against_the_options_declared_choices_and_ranges() -> None:
    proto = Cell(grid="g", row="x", model=ModelSpec(head=HeadSpec("prototype")))
    with pytest.raises(ConfigError, match="bad value for model.head.score_norm: 'batchnorm'; "
                                          "choose one of layernorm, none"):
        apply_overrides(proto, ["model.head.score_norm=batchnorm"])
    with pytest.raises(ConfigError, match="bad value for model.head.gamma: must be <= 1.0"):
        apply_overrides(proto, ["model.head.gamma=1.5"])
    with pytest.raises(ConfigError, match="bad value for model.head.num_prototypes: must be >= 1"):
        apply_overrides(proto, ["model.head.num_prototypes=0"])


# --------------------------------------------------------------------------- --set on a grid


def test_a_head_option_changes_only_the_cells_whose_head_has_it() -> None:
    """README: `--set model.head.num_prototypes=7` on the smoke grid changes the two prototype
    cells (labelled K=7, now one configuration) and leaves the other three keys alone."""
    from experiments import get_grid

    cells = list(get_grid("smoke").cells)
    out, notes = apply_to_grid(cells, ["model.head.num_prototypes=7"])
    assert [c.key for c in out[:3]] == [c.key for c in cells[:3]]
    assert [c.row for c in out[3:]] == ["Prototype (K=7)"]  # K=1 and K=5: one configuration
    assert notes[0] == "--set model.head.num_prototypes=7: 2 of 5 cells"
    assert "are one configuration" in notes[1]
    with pytest.raises(ConfigError, match="no cell of this grid has a head with that option"):
        apply_to_grid(get_grid("table1").cells, ["model.head.contrast_tau=0.2"])
    with pytest.raises(ConfigError, match="did you mean model.head.num_prototypes"):
        apply_to_grid(cells, ["model.head.num_protoypes=7"])


def test_changing_the_head_relabels_and_runs_one_configuration_once(tmp_path) -> None:
    from benchmark.launch.runs import plan
    from benchmark.store import ResultsLayout
    from experiments import get_grid

    out, _ = apply_to_grid(get_grid("smoke").cells, ["model.head.name=pixel_query"])
    assert [c.row for c in out] == ["Pixel-query"]  # five cells, one configuration, one row
    cells = list(get_grid("smoke").cells)
    twins = [cells[0], dataclasses.replace(cells[0], column="another column")]
    assert len(plan(twins, [0, 1], ResultsLayout(tmp_path))) == 2  # one configuration, two seeds


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


def test_ours_replaces_the_head_of_every_ours_row_and_leaves_the_baselines() -> None:
    """`--ours HEAD` on a paper grid: "Ours (FCN)" reads "Pixel-query (FCN)", the pairs stay,
    every baseline keeps its key; a grid without "ours" cells is one ConfigError."""
    from benchmark.cli import load_grid
    from experiments import get_grid

    original = get_grid("table1").cells
    _, cells, _ = load_grid("table1", [], ours="pixel_query")
    for before, after in zip(original, cells):
        if before.tag == "baseline":
            assert after == before and after.key == before.key
        else:
            assert after.model.head.name == "pixel_query" and after.pair == before.pair
            assert after.row == "Pixel-query" + before.row[len("Ours"):]
            assert after.key != before.key
    with pytest.raises(ConfigError, match="grid zoo has no 'ours' cells"):
        load_grid("zoo", [], ours="pixel_query")
