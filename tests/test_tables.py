"""Tables are regenerated from records: summary numbers, grid order and the three files."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmark.config import Cell, HeadSpec, ModelSpec
from benchmark.tables import format_latex, format_markdown, render, summarize

CELL_A = Cell(grid="g", row="Softmax", column="ResNet-18", paper_miou=39.9)
CELL_B = Cell(grid="g", row="Prototype (K=10)", column="ResNet-18",
              model=ModelSpec(head=HeadSpec(name="prototype")))
CELL_C = Cell(grid="g", row="Pixel query", column="ResNet-18",
              model=ModelSpec(head=HeadSpec(name="pixel_query")))
CELLS = [CELL_A, CELL_B, CELL_C]


def record(cell: Cell | None, seed: int, status: str, miou: float | None = None,
           learnable: int = 11_234_567, key: str | None = None) -> dict:
    """A minimal hand-written run record (failed ones carry no metrics)."""
    rec = {"schema": 1, "grid": "g", "cell_key": key or cell.key, "seed": seed,
           "status": status, "error": None if status == "done" else "boom",
           "params": {"learnable": learnable, "total": learnable + 100}}
    if status == "done":
        rec["metrics"] = {"miou": miou, "aacc": 80.0, "per_class_iou": {"sky": 90.0}}
    return rec


def records() -> list[dict]:
    return [
        record(CELL_B, 0, "failed"),
        record(CELL_A, 2, "done", 42.0),
        record(CELL_A, 0, "done", 40.0),
        record(CELL_A, 1, "failed"),  # superseded by the done record of seed 1
        record(CELL_A, 1, "done", 41.0),
        record(None, 0, "done", 99.0, key="ghost-0123456789"),  # matches no cell
    ]


GOLDEN_MD = """\
| Method           | Backbone   |   Params (M) |   mIoU (%) |   Seeds |   Paper |   Δ paper |
|------------------|------------|--------------|------------|---------|---------|-----------|
| Softmax          | ResNet-18  |         11.2 | 41.0 ± 1.0 |       3 |    39.9 |      +1.1 |
| Prototype (K=10) | ResNet-18  |            – |     failed |       0 |       – |         – |
| Pixel query      | ResNet-18  |            – |    pending |       0 |       – |         – |
"""


def test_summarize_values_and_status():
    df = summarize(CELLS, records())
    assert list(df["cell_key"]) == [c.key for c in CELLS]
    assert list(df["mIoU (%)"]) == ["41.0 ± 1.0", "failed", "pending"]
    assert list(df["status"]) == ["done", "failed", "pending"]
    assert list(df["Seeds"]) == [3, 0, 0]
    assert list(df["Paper"]) == ["39.9", "–", "–"]
    assert list(df["Δ paper"]) == ["+1.1", "–", "–"]
    assert df.loc[0, "miou_mean"] == pytest.approx(41.0)
    assert df.loc[0, "miou_std"] == pytest.approx(1.0)
    assert df.loc[0, "Params (M)"] == pytest.approx(11.2)
    assert math.isnan(df.loc[1, "Params (M)"]) and math.isnan(df.loc[2, "miou_mean"])


def test_only_done_records_count():
    stray = {**record(CELL_A, 3, "failed"), "metrics": {"miou": 10.0}}  # partial metrics
    running = {**record(CELL_C, 0, "running"), "metrics": {"miou": 10.0}}
    df = summarize(CELLS, records() + [stray, running])
    assert list(df["Seeds"]) == [3, 0, 0]
    assert list(df["mIoU (%)"]) == ["41.0 ± 1.0", "failed", "pending"]


def test_grid_order_and_unmatched_records_ignored():
    df = summarize(CELLS[::-1], records())
    assert list(df["Method"]) == ["Pixel query", "Prototype (K=10)", "Softmax"]
    assert "ghost-0123456789" not in set(df["cell_key"])
    assert len(df) == 3


def test_single_seed_and_negative_delta():
    cell = Cell(grid="g", row="Softmax", column="ResNet-50", paper_miou=42.0)
    df = summarize([cell], [record(cell, 0, "done", 41.64)])
    assert df.loc[0, "mIoU (%)"] == "41.6"
    assert df.loc[0, "Δ paper"] == "-0.4"
    assert df.loc[0, "n_seeds"] == 1 and math.isnan(df.loc[0, "miou_std"])


def test_render_writes_three_files(tmp_path):
    out = tmp_path / "tables" / "nested"
    paths = render("smoke", CELLS, records(), out)
    assert paths == {"md": out / "smoke.md", "tex": out / "smoke.tex", "csv": out / "smoke.csv"}
    assert sorted(p.name for p in out.iterdir()) == ["smoke.csv", "smoke.md", "smoke.tex"]

    assert paths["md"].read_text(encoding="utf-8") == GOLDEN_MD

    tex = paths["tex"].read_text(encoding="utf-8")
    assert tex.splitlines()[0] == r"% requires \usepackage{booktabs}"
    assert "% grid: smoke" in tex
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"41.0 $\pm$ 1.0",
                  r"$\Delta$ paper", r"mIoU (\%)"):
        assert token in tex
    assert "±" not in tex and "Δ" not in tex

    csv = pd.read_csv(paths["csv"])
    assert list(csv["cell_key"]) == [c.key for c in CELLS]
    assert list(csv["status"]) == ["done", "failed", "pending"]
    assert list(csv["n_seeds"]) == [3, 0, 0]
    assert csv["miou_mean"].iloc[0] == pytest.approx(41.0)
    assert csv["miou_std"].iloc[0] == pytest.approx(1.0)
    assert csv[["miou_mean", "miou_std"]].iloc[1:].isna().all().all()
    assert csv["Params (M)"].iloc[0] == pytest.approx(11.2)
    assert pd.api.types.is_float_dtype(csv["miou_mean"])


def test_render_is_deterministic(tmp_path):
    first = render("smoke", CELLS, records(), tmp_path / "a")
    second = render("smoke", CELLS, list(reversed(records())), tmp_path / "b")
    for ext in ("md", "tex", "csv"):
        assert first[ext].read_bytes() == second[ext].read_bytes()


def test_latex_escapes_specials_markdown_escapes_pipes():
    cell = Cell(grid="g", row="a_b & 50% #1 {x}", column="r|s")
    df = summarize([cell], [])
    tex = format_latex(df)
    assert r"a\_b \& 50\% \#1 \{x\}" in tex
    assert r"r\textbar{}s" in tex
    assert r"r\|s" in format_markdown(df)
