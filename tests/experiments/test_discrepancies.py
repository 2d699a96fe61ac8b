"""The discrepancy grids: every cell differs from the released reference in its one switch."""

from __future__ import annotations

import pytest

from benchmark.config import Cell
from benchmark.report.render import table_markdown
from benchmark.report.tables import grid_table
from benchmark.store import Record
from experiments import get_grid
from experiments.discrepancies import CPU_ONLY_OUT, RELEASED, SWITCHES


def _flat(cell: Cell) -> dict:
    d = cell.to_dict()
    for k in ("grid", "row", "tag", "pair"):
        d.pop(k)
    head = cell.model.head  # by its --set names: model.head.ppc_tau
    d["model"]["head"] = {"name": head.name, **head.options.spec_values()}
    return d


def _differences(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set(a) | set(b)
    out = set()
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out |= _differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.add(prefix + k)
    return out


@pytest.mark.parametrize("name", ["discrepancies", "discrepancies_camvid"])
def test_each_cell_changes_only_its_switch(name):
    grid = get_grid(name)
    reference, *switched = grid.cells
    assert reference.tag == "baseline" and all(c.tag == "switch" for c in switched)
    head = reference.model.head
    assert {k: getattr(head, k) for k in RELEASED} == RELEASED  # the released code's settings
    expected = [s for s in SWITCHES if not (name.endswith("camvid") and s in CPU_ONLY_OUT)]
    assert len(switched) == len(expected)
    for cell, switch in zip(switched, expected):
        changed = _differences(_flat(reference), _flat(cell))
        assert changed == {SWITCHES[switch][1][0]}, cell.row
    assert len({c.key for c in grid.cells}) == len(grid.cells)


def test_released_reference_is_the_table2_hrnet_recipe():
    ref = get_grid("discrepancies").cells[0]
    hrnet = next(c for c in get_grid("table2").cells if c.pair == "hrnet" and c.tag == "ours")
    assert ref.train == hrnet.train and ref.data == hrnet.data and ref.eval == hrnet.eval
    assert ref.model.backbone == "hrnetv2_w48" and ref.model.head.projection == "mlp"
    assert ref.train.ce_weights == "protoseg_cityscapes"  # the released config's class weights


def test_switch_table_pairs_each_row_with_the_reference():
    grid = get_grid("discrepancies_camvid")
    ref, tau = grid.cells[0], grid.cells[1]
    records = [Record(status="done", grid=grid.name, cell_key=c.key, seed=s,
                      metrics={"miou": m}, params={"learnable": 3_480_000}, timings={"train_s": 1})
               for c, values in ((ref, (20.0, 21.0, 19.5)), (tau, (21.5, 22.0, 21.5)))
               for s, m in enumerate(values)]
    md = table_markdown(grid_table(list(grid.cells), records, layout=grid.layout))
    assert "| Released code" in md and "+1.5 [+0.3, +2.7] (n=3)" in md
    assert "higher than the baseline" in md and "pending" in md
