"""The paper grids: valid cells, unique and stable keys, the paper's numbers, the recipes, and
the `--dry-run` plan."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.validation import validate
from experiments import get_grid, grid_names
from experiments.paper import ABLATION_K, ABLATION_LOSS, PAIRS, REFERENCE_ROWS
from experiments.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[2]
PAPER_GRIDS = ("table1", "table2", "table3", "ablation_loss", "ablation_k")
TABLES = {"table1": "ade20k", "table2": "cityscapes", "table3": "coco_stuff10k"}


def test_registry_lists_the_paper_grids() -> None:
    assert set(PAPER_GRIDS) <= set(grid_names())


@pytest.mark.parametrize("name", PAPER_GRIDS)
def test_cells_validate_and_keys_are_unique(name: str) -> None:
    grid = get_grid(name)
    assert grid.cells and grid.seeds >= 1
    for cell in grid.cells:
        assert validate(cell) is cell
        assert cell.grid == name
        assert cell.data.name in ("ade20k", "cityscapes", "coco_stuff10k")
    keys = [c.key for c in grid.cells]
    assert len(set(keys)) == len(keys)
    assert len({c.row for c in grid.cells}) == len(keys)


def test_keys_are_stable_across_processes() -> None:
    code = ("import json; from experiments import get_grid; print(json.dumps({g: [c.key for c in "
            f"get_grid(g).cells] for g in {PAPER_GRIDS!r}}}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "123"}, check=True)
    assert json.loads(proc.stdout) == {g: [c.key for c in get_grid(g).cells] for g in PAPER_GRIDS}


@pytest.mark.parametrize("name", list(TABLES))
def test_table_grids_have_four_pairs_with_the_papers_numbers(name: str) -> None:
    cells = [c for c in get_grid(name).cells if c.tag]  # untagged extra rows: see below
    assert [c.tag for c in cells] == ["baseline", "ours"] * 4
    for base, ours in zip(cells[0::2], cells[1::2]):
        numbers = PAIRS[name][base.pair]
        assert ours.pair == base.pair
        assert (base.paper_params_m, base.paper_miou) == (numbers.baseline_params,
                                                          numbers.baseline_miou)
        assert (ours.paper_params_m, ours.paper_miou) == (numbers.ours_params, numbers.ours_miou)
        assert base.column == ours.column == numbers.backbone
        # a pair differs only in the head; ours uses the paper's parameter convention
        assert (base.data, base.train, base.eval) == (ours.data, ours.train, ours.eval)
        assert dataclasses.replace(ours.model, head=base.model.head) == base.model
        assert base.model.head.name == "softmax"
        assert ours.model.head.name == "prototype" and ours.model.head.projection == "none"
        assert base.data.name == TABLES[name]
    fcn = [c for c in cells if c.pair == "fcn"]
    assert all(c.model.aux_weight == 0.4 for c in fcn)
    assert all(c.model.aux_weight == 0 for c in cells if c.pair != "fcn")


def test_table2_has_contrastive_seg_as_an_extra_row() -> None:
    cells = get_grid("table2").cells
    extra = [c for c in cells if not c.tag]
    assert [c.row for c in extra] == ["ContrastiveSeg"] and cells[-1] is extra[0]
    cseg, fcn = extra[0], cells[0]
    ref = next(r for r in REFERENCE_ROWS["table2"] if r["method"] == "ContrastiveSeg")
    assert (cseg.paper_miou, cseg.column) == (ref["miou"], ref["backbone"]) == (79.2, "ResNet-101")
    # no paper count: the paper's 58.0M is DeepLabV3's; the cell is the FCN network + contrast
    assert cseg.paper_params_m is None and cseg.pair == ""
    assert cseg.model.head.name == "pixel_contrast"
    assert dataclasses.replace(cseg.model, head=fcn.model.head) == fcn.model
    assert (cseg.data, cseg.train, cseg.eval) == (fcn.data, fcn.train, fcn.eval)


def test_every_cell_carries_its_named_recipe() -> None:
    for name in PAPER_GRIDS:
        for cell in get_grid(name).cells:
            recipe = RECIPES[cell.train.recipe]
            assert cell.train == recipe.train
            assert (cell.data.crop_size, cell.data.crop_width) == recipe.crop
            assert cell.eval == recipe.eval and cell.resources.gpus == recipe.gpus
            assert recipe.augmentation and recipe.eval_protocol and recipe.source


@pytest.mark.parametrize("grid, pair, crop, batch, iters, optimizer, lr", [
    ("table1", "fcn", (512, 512), 16, 160_000, "sgd", 0.01),
    ("table1", "segformer", (512, 512), 16, 160_000, "adamw", 6e-5),
    ("table2", "hrnet", (512, 1024), 8, 80_000, "sgd", 0.01),
    ("table2", "segformer", (1024, 1024), 8, 160_000, "adamw", 6e-5),
    ("table3", "swin", (512, 512), 16, 80_000, "adamw", 6e-5),
])
def test_recipes_follow_method_spec(grid, pair, crop, batch, iters, optimizer, lr) -> None:
    cell = next(c for c in get_grid(grid).cells if c.pair == pair)
    t = cell.train
    assert (cell.data.crop_size, cell.data.crop_width) == crop
    assert (t.batch_size, t.iters, t.optimizer, t.lr) == (batch, iters, optimizer, lr)
    assert t.weight_decay == (5e-4 if optimizer == "sgd" else 0.01)
    assert t.warmup_iters == (0 if optimizer == "sgd" else 1500)
    assert (cell.data.min_scale, cell.data.max_scale) == (0.5, 2.0)


def test_ablations_carry_the_papers_numbers() -> None:
    loss = get_grid("ablation_loss").cells
    weights = [(c.model.head.ppc_weight > 0, c.model.head.ppd_weight > 0) for c in loss]
    assert weights == [(False, False), (True, False), (False, True), (True, True)]
    assert [c.paper_miou for c in loss] == list(ABLATION_LOSS.values())
    assert (loss[0].tag, loss[-1].tag) == ("baseline", "ours")
    k = get_grid("ablation_k").cells
    assert [c.model.head.num_prototypes for c in k] == list(ABLATION_K)
    assert [c.paper_miou for c in k] == list(ABLATION_K.values())
    assert all(c.model.backbone == "mit_b2" for c in loss + k)
    # K=10 with both losses is the same model as the full objective
    assert k[2].key.split("-")[-1] == loss[-1].key.split("-")[-1]


def test_reference_rows_are_complete_and_in_the_papers_order() -> None:
    from benchmark.report.tables import check_reference_rows

    for name in TABLES:
        rows = check_reference_rows(REFERENCE_ROWS[name])
        assert rows and all({"method", "backbone", "params_m", "miou"} <= set(r) for r in rows)
    table1 = REFERENCE_ROWS["table1"]
    assert table1[0] == {"method": "DeepLabV3+", "venue": "ECCV18", "backbone": "ResNet-101",
                         "params_m": 62.7, "miou": 44.1, "note": ""}
    assert [r["method"] for r in table1].count("MaskFormer") == 2
    assert "ImageNet-22K" in table1[-1]["note"]
    assert REFERENCE_ROWS["table2"][1]["params_m"] is None  # printed as "-"


def test_grids_carry_their_table_layout_and_reference_rows() -> None:
    """The grid, not the table code, says how its table looks (layout, paper's rows)."""
    layouts = {name: get_grid(name).layout for name in grid_names()}
    assert {"ablation_loss": "loss", "ablation_k": "k"}.items() <= layouts.items()
    assert all(layouts[name] == "paper" for name in ("smoke", "camvid", *TABLES))
    assert layouts["discrepancies"] == layouts["discrepancies_camvid"] == "switches"
    from benchmark.report.tables import LAYOUTS

    assert set(layouts.values()) <= set(LAYOUTS)
    for name in TABLES:
        assert list(get_grid(name).reference_rows) == REFERENCE_ROWS[name]
    for name in ("smoke", "camvid", "ablation_loss", "ablation_k"):
        assert get_grid(name).reference_rows == ()


def test_dry_run_prints_plan_recipes_and_records(tmp_path, capsys, monkeypatch) -> None:
    import benchmark.launch.dry_run as plan
    from benchmark.launch.memory import MemoryEstimate
    from benchmark.cli import main
    from record_fixtures import consistent

    from benchmark.store import ResultsLayout, write_record

    # the memory estimate builds every model on the meta device: tested in test_preflight.py
    monkeypatch.setattr(plan, "estimate_memory", lambda cell: MemoryEstimate(
        gb=12.0, batch=4, params={"learnable": 68_571_500, "total": 68_571_500}))
    first = get_grid("table1").cells[0]
    write_record(ResultsLayout(tmp_path).record("table1", first.key, 0),
                 {"status": "done", "cell_key": first.key, "seed": 0, **consistent(40.0),
                  "params": {}, "timings": {}})
    args = ["--results", str(tmp_path), "--dry-run", "--seeds", "1"]
    for name in PAPER_GRIDS:
        args += ["--grid", name]
    assert main(args) == 0
    out = capsys.readouterr().out
    n_cells = sum(len(get_grid(g).cells) for g in PAPER_GRIDS)
    assert out.count("seeds 1 (done 0)") == n_cells - 1
    assert out.count("seeds 1 (done 1)") == 1 and "records: seed0 done" in out
    assert "params 68.57M learnable, 68.57M all (paper 68.6M)" in out and "(<=16GB)" in out
    for recipe in RECIPES:
        assert f"recipe {recipe}: crop" in out
    assert "evaluation: whole image resized to fit 2048x512" in out
