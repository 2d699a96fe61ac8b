"""Record aggregation shared by tables and figures: runs by seed, pairs, labels; and the report
room's imports (tables and plots both read records through aggregate, neither through the other)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmark.config import Cell, HeadSpec, ModelSpec
from benchmark.report.aggregate import baselines, done_by_seed, method_labels, pairs
from benchmark.store import Record
from experiments import grid_names

ROOT = Path(__file__).resolve().parents[3]
PROTO = ModelSpec(head=HeadSpec(name="prototype"))


def cell(row: str, tag: str = "", pair: str = "", column: str = "R-18", **kw) -> Cell:
    return Cell(grid="g", row=row, column=column, tag=tag, pair=pair, **kw)


def test_done_by_seed_keeps_the_first_finished_record_per_seed():
    a = cell("A")
    def rec(seed: int, status: str, miou: float | None = None) -> Record:
        return Record(status=status, grid="g", cell_key=a.key, seed=seed,
                      metrics={} if miou is None else {"miou": miou})

    recs = [rec(1, "done", 2.0), rec(0, "failed"), rec(1, "done", 9.0), rec(0, "done", 1.0),
            rec(2, "done")]  # seed 2: no mIoU, not counted
    done = done_by_seed(recs)
    assert list(done[a.key]) == [0, 1]  # seeds sorted
    assert [r.miou for r in done[a.key].values()] == [1.0, 2.0]


def test_pairs_in_grid_order_and_two_baselines_rejected():
    base_a, ours_a = cell("A", "baseline", "a"), cell("Ours A", "ours", "a", model=PROTO)
    ours_b = cell("Ours B", "ours", "b", model=PROTO)  # no baseline: not a pair
    other = cell("Other")
    cells = [ours_a, other, base_a, ours_b]
    assert pairs(cells) == [("a", base_a, ours_a)]
    assert baselines(cells) == {"a": base_a}
    twin = cell("A2", "baseline", "a", column="R-50")
    with pytest.raises(ValueError, match="pair 'a' has two baseline cells"):
        pairs(cells + [twin])


def test_method_labels_tell_repeated_rows_apart():
    cells = [cell("Softmax", column="R-18"), cell("Softmax", column="R-50"), cell("Ours")]
    assert method_labels(cells) == ["Softmax (R-18)", "Softmax (R-50)", "Ours"]
    same = [cell("X", model=PROTO), cell("X")]
    assert method_labels(same) == [f"X (R-18) [{same[0].key}]", f"X (R-18) [{same[1].key}]"]


def _imports(path: Path) -> set[str]:
    """Absolute module names a source file imports (at any depth of the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_report_room_imports():
    """No round trips: plots and tables never import each other nor the launch room; tables
    name no grid (the grid passes its layout and reference rows)."""
    room = ROOT / "benchmark" / "report"
    imports = {p.stem: _imports(p) for p in room.glob("*.py")}
    assert "benchmark.report.tables" not in imports["plots"]
    assert "benchmark.report.plots" not in imports["tables"]
    for name, mods in imports.items():
        outside = {m for m in mods if m.startswith("benchmark.")
                   and not m.startswith("benchmark.report")}
        assert not {m for m in outside if m.startswith("benchmark.launch")}, name
        assert not {m for m in mods if m.startswith("experiments")} - {"experiments"}, name
    for name in ("tables", "render", "aggregate"):
        tree = ast.parse((room / f"{name}.py").read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        assert not strings & set(grid_names()), name  # no grid named in code
        assert "find_spec" not in {getattr(n, "attr", "") for n in ast.walk(tree)}, name
