"""Tables are regenerated from records: summary numbers, grid order and the three files."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from benchmark.config import Cell, HeadSpec, ModelSpec
from benchmark.report.aggregate import cell_results, per_class_iou
from benchmark.report.render import render, table_latex, table_markdown
from benchmark.report.tables import (
    PAIRED_HEADER,
    grid_table,
    loss_terms,
    paper_table,
    per_class_table,
    round1,
)
from benchmark.records import Metrics
from benchmark.store import Record

CELL_A = Cell(grid="g", row="Softmax", column="ResNet-18", paper_miou=39.9)
CELL_B = Cell(grid="g", row="Prototype (K=10)", column="ResNet-18",
              model=ModelSpec(head=HeadSpec(name="prototype")))
CELL_C = Cell(grid="g", row="Pixel query", column="ResNet-18",
              model=ModelSpec(head=HeadSpec(name="pixel_query")))
CELLS = [CELL_A, CELL_B, CELL_C]


def record(cell: Cell | None, seed: int, status: str, miou: float | None = None,
           learnable: int = 11_234_567, key: str | None = None) -> Record:
    """A minimal hand-written run record (failed ones carry no metrics)."""
    rec = Record(status=status, grid="g", cell_key=key or cell.key, seed=seed,
                 error=None if status == "done" else "boom",
                 params={"learnable": learnable, "total": learnable + 100})
    if status == "done":
        rec.metrics = Metrics(miou=miou, aacc=80.0, per_class_iou={"sky": 90.0})
    return rec


def records() -> list[Record]:
    return [
        record(CELL_B, 0, "failed"),
        record(CELL_A, 2, "done", 42.0),
        record(CELL_A, 0, "done", 40.0),
        record(CELL_A, 1, "failed"),  # superseded by the done record of seed 1
        record(CELL_A, 1, "done", 41.0),
        record(None, 0, "done", 99.0, key="ghost-0123456789"),  # matches no cell
    ]


def test_cell_results_values_and_status():
    results = cell_results(CELLS, records())
    assert list(results) == [c.key for c in CELLS]
    assert [r.status for r in results.values()] == ["done", "failed", "pending"]
    assert [r.n for r in results.values()] == [3, 0, 0]
    first = results[CELL_A.key]
    assert first.miou_by_seed == {0: 40.0, 1: 41.0, 2: 42.0}
    assert first.mean_std == pytest.approx((41.0, 1.0))
    assert first.params_m == pytest.approx(11.2)
    assert math.isnan(results[CELL_B.key].params_m)
    assert all(math.isnan(v) for v in results[CELL_C.key].mean_std)


def test_only_done_records_count():
    stray = replace(record(CELL_A, 3, "failed"), metrics={"miou": 10.0})  # partial metrics
    running = replace(record(CELL_C, 0, "running"), metrics={"miou": 10.0})
    results = cell_results(CELLS, records() + [stray, running])
    assert [r.n for r in results.values()] == [3, 0, 0]
    assert [r.status for r in results.values()] == ["done", "failed", "pending"]
    frame = paper_table(CELLS, records() + [stray, running]).frame
    assert list(frame["mIoU (%)"]) == ["41.0 ± 1.0", "failed", "pending"]


def test_grid_order_and_unmatched_records_ignored():
    frame = paper_table(CELLS[::-1], records()).frame
    assert list(frame["Method"]) == ["Pixel query", "Prototype (K=10)", "Softmax"]
    assert "ghost-0123456789" not in set(frame["cell_key"])
    assert len(frame) == 3


def test_single_seed_and_negative_delta():
    cell = Cell(grid="g", row="Softmax", column="ResNet-50", paper_miou=42.0)
    frame = paper_table([cell], [record(cell, 0, "done", 41.64)]).frame
    assert frame.loc[0, "mIoU (%)"] == "41.6"
    assert frame.loc[0, "Δ paper"] == "-0.4"
    assert frame.loc[0, "n_seeds"] == 1 and math.isnan(frame.loc[0, "miou_std"])


def test_render_writes_table_and_per_class_files(tmp_path):
    out = tmp_path / "tables" / "nested"
    paths = render("smoke", CELLS, records(), out)
    names = [f"smoke{s}.{e}" for s in ("", "_per_class") for e in ("md", "tex", "csv")]
    assert sorted(p.name for p in paths.values()) == sorted(names)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert paths["md"] == out / "smoke.md" and paths["per_class_md"] == out / "smoke_per_class.md"

    md = paths["md"].read_text(encoding="utf-8")
    assert md.count("failed") == 1 and md.count("pending") == 1 and "41.0 ± 1.0" in md
    tex = paths["tex"].read_text(encoding="utf-8")
    assert tex.splitlines()[0] == r"% requires \usepackage{booktabs}"
    assert "±" not in tex.split("\\begin{tabular}")[1] and r"41.0 $\pm$ 1.0" in tex

    csv = pd.read_csv(paths["csv"])
    assert list(csv["cell_key"]) == [c.key for c in CELLS]
    assert list(csv["status"]) == ["done", "failed", "pending"]
    assert list(csv["n_seeds"]) == [3, 0, 0]
    assert csv["miou_mean"].iloc[0] == pytest.approx(41.0)
    assert csv["miou_std"].iloc[0] == pytest.approx(1.0)
    assert csv[["miou_mean", "miou_std"]].iloc[1:].isna().all().all()
    assert csv["params_m"].iloc[0] == pytest.approx(11.2)
    assert pd.api.types.is_float_dtype(csv["miou_mean"])

    per_class = pd.read_csv(paths["per_class_csv"])
    assert list(per_class["Class"]) == ["sky", "mIoU"]
    methods = ["Softmax", "Prototype (K=10)", "Pixel query"]
    assert list(per_class.columns) == (["Class"] + methods + [f"{m} [mean]" for m in methods]
                                       + [f"{m} [std]" for m in methods])
    assert per_class["Softmax [mean]"].tolist() == pytest.approx([90.0, 41.0])
    assert per_class["Softmax [std]"].tolist() == pytest.approx([0.0, 1.0])
    assert per_class["Pixel query [mean]"].isna().all()


def test_render_is_deterministic(tmp_path):
    first = render("smoke", CELLS, records(), tmp_path / "a")
    second = render("smoke", CELLS, list(reversed(records())), tmp_path / "b")
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes()


def test_round1_rounds_ties_away_from_zero_as_a_reader_does():
    assert [round1(v) for v in (0.35, 0.25, -1.15, 41.05, 2.449)] == [0.4, 0.3, -1.2, 41.1, 2.4]
    assert str(round1(-0.04)) == "0.0"  # never "-0.0"
    assert round1(0.1 + 0.2 - 0.3 + 0.05) == round1(0.05) == 0.1  # float noise rounds alike


def test_latex_escapes_specials_markdown_escapes_pipes():
    cell = Cell(grid="g", row="a_b & 50% #1 {x}", column="r|s")
    table = paper_table([cell], [])
    tex = table_latex(table)
    assert r"a\_b \& 50\% \#1 \{x\}" in tex
    assert r"r\textbar{}s" in tex
    assert r"r\|s" in table_markdown(table)


# =========================================================================== paper layouts
# Hand-written records for a Table-1-like grid; the rendered text must match the golden files
# in tests/benchmark/report/golden/ byte for byte (regenerate them only after checking a diff by eye).

GOLDEN = Path(__file__).parent / "golden"
PROTO = HeadSpec(name="prototype")


def _pair(name: str, backbone: str, column: str, paper: tuple[float, float],
          params: tuple[float, float]) -> tuple[Cell, Cell]:
    base = Cell(grid="table1", row=name, column=column, tag="baseline", pair=backbone,
                paper_miou=paper[0], paper_params_m=params[0],
                model=ModelSpec(backbone=backbone))
    ours = Cell(grid="table1", row="Ours", column=column, tag="ours", pair=backbone,
                paper_miou=paper[1], paper_params_m=params[1],
                model=ModelSpec(backbone=backbone, head=PROTO))
    return base, ours


FCN = _pair("FCN [CVPR15]", "resnet101_d8", "ResNet-101", (39.9, 41.1), (68.6, 68.5))
HRNET = _pair("HRNet [PAMI20]", "hrnetv2_w48", "HRNetV2-W48", (42.0, 43.0), (65.9, 65.8))
SWIN = _pair("Swin [ICCV21]", "swin_b", "Swin-Base", (48.0, 48.6), (90.6, 90.5))
SEGFORMER = _pair("SegFormer [NeurIPS21]", "mit_b4", "MiT-B4", (50.9, 51.7), (64.1, 64.0))
TABLE1 = [*FCN, *HRNET, *SWIN, *SEGFORMER]
REFERENCE = [  # as experiments/paper.py writes them; the last one without the optional keys
    {"method": "DeepLabV3+", "venue": "ECCV18", "backbone": "ResNet-101", "params_m": 62.7,
     "miou": 44.1, "note": ""},
    {"method": "MaskFormer", "venue": "NeurIPS21", "backbone": "Swin-Base", "params_m": 102.0,
     "miou": 52.7, "note": "†: backbone pre-trained on ImageNet-22K"},
    {"method": "SVCNet [CVPR19]", "backbone": "ResNet-101", "params_m": None, "miou": 39.6},
]


def table1_records() -> list[Record]:
    """FCN: 3 baseline and 4 ours seeds (paired n = 3, one failed attempt superseded); HRNet:
    one seed each (no interval); Swin: baseline failed, ours pending; SegFormer: ours worse."""
    fcn_b, fcn_o = FCN
    recs = [record(fcn_b, s, "done", m, learnable=68_612_345) for s, m in
            enumerate([39.6, 40.3, 39.8])]
    recs += [record(fcn_o, 1, "failed")]
    recs += [record(fcn_o, s, "done", m, learnable=68_498_765) for s, m in
             enumerate([41.0, 41.5, 41.2, 40.2])]
    recs += [record(HRNET[0], 0, "done", 41.66, learnable=65_912_000),
             record(HRNET[1], 0, "done", 43.04, learnable=65_800_000)]
    recs += [record(SWIN[0], 0, "failed")]
    recs += [record(SEGFORMER[0], s, "done", m, learnable=64_100_000) for s, m in
             enumerate([50.8, 51.0])]
    recs += [record(SEGFORMER[1], s, "done", m, learnable=64_000_000) for s, m in
             enumerate([50.4, 50.62])]
    return recs


def loss_grid() -> list[Cell]:
    def cell(ppc: float, ppd: float, paper: float) -> Cell:
        head = HeadSpec(name="prototype", ppc_weight=ppc, ppd_weight=ppd)
        return Cell(grid="ablation_loss", row=f"ppc{ppc}-ppd{ppd}", column="MiT-B2",
                    paper_miou=paper, model=ModelSpec(backbone="mit_b2", head=head))
    return [cell(0, 0, 45.0), cell(0.01, 0, 45.9), cell(0, 0.001, 45.4), cell(0.01, 0.001, 46.4)]


def k_grid() -> list[Cell]:
    return [Cell(grid="ablation_k", row=f"K={k}", column="MiT-B2", paper_miou=paper,
                 model=ModelSpec(backbone="mit_b2", head=HeadSpec(name="prototype",
                                                                  num_prototypes=k)))
            for k, paper in ((1, 45.5), (5, 46.0), (10, 46.4), (20, 46.5))]


def ablation_records(cells: list[Cell], mious: list[list[float] | str]) -> list[Record]:
    recs = []
    for cell, values in zip(cells, mious):
        if values in ("failed",):
            recs.append(record(cell, 0, "failed"))
        elif values != "pending":
            recs += [record(cell, s, "done", m) for s, m in enumerate(values)]
    return recs


def golden(name: str, text: str) -> str:
    """The golden file's text; with UPDATE_GOLDEN=1 it is first rewritten from `text` (then
    review the diff with git before trusting it)."""
    if os.environ.get("UPDATE_GOLDEN") == "1":
        (GOLDEN / name).write_text(text, encoding="utf-8")
    return (GOLDEN / name).read_text(encoding="utf-8")


def assert_golden(name: str, text: str) -> None:
    assert text == golden(name, text), f"{name} differs from tests/benchmark/report/golden/{name}"


def test_paper_table_markdown_and_latex_match_golden():
    table = grid_table(TABLE1, table1_records(), REFERENCE)
    assert_golden("table1.md", table_markdown(table))
    assert_golden("table1.tex", table_latex(table, grid="table1"))


def test_paper_table_numbers():
    frame = paper_table(TABLE1, table1_records(), REFERENCE).frame
    assert list(frame["kind"]) == ["reference"] * 3 + ["baseline", "ours"] * 4
    fcn = frame.iloc[4]  # ours of the FCN pair
    diffs = [41.0 - 39.6, 41.5 - 40.3, 41.2 - 39.8]  # seeds 0-2; ours seed 3 has no partner
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)  # t_{0.975, 2} from a t table
    assert fcn["paired_n"] == 3
    assert fcn["paired_mean"] == pytest.approx(statistics.fmean(diffs))
    assert fcn["paired_low"] == pytest.approx(statistics.fmean(diffs) - half, abs=1e-3)
    assert fcn["paired_high"] == pytest.approx(statistics.fmean(diffs) + half, abs=1e-3)
    assert fcn["gain"] == pytest.approx(statistics.fmean([41.0, 41.5, 41.2, 40.2]) - 39.9)
    hrnet = frame.iloc[6]
    assert hrnet["paired_n"] == 1 and math.isnan(hrnet["paired_low"])
    assert hrnet[PAIRED_HEADER] == "+1.4 (n=1)"
    assert list(frame["status"].iloc[7:9]) == ["failed", "pending"]
    assert frame.iloc[0]["paper_miou"] == 44.1 and math.isnan(frame.iloc[0]["miou_mean"])


def test_better_of_each_pair_is_bold():
    table = paper_table(TABLE1, table1_records())
    # rows: FCN 0/1, HRNet 2/3, Swin 4/5 (no result), SegFormer 6/7 (baseline better)
    assert table.bold == {(1, "mIoU (%)"), (3, "mIoU (%)"), (6, "mIoU (%)")}
    tex = table_latex(table)
    assert r"\textbf{50.9 $\pm$ 0.1}" in tex
    assert r"50.5 $\pm$ 0.2 $\downarrow$0.4" in tex
    # ours listed before its baseline: still compared, still bold
    assert paper_table([FCN[1], FCN[0]], table1_records()).bold == {(0, "mIoU (%)")}


def test_per_class_table_matches_golden():
    recs = table1_records()
    for rec in recs:
        if rec.status == "done":
            rec.metrics.per_class_iou = {"wall": rec.miou + 10, "person": rec.miou - 10,
                                            "car": None}
    assert_golden("table1_per_class.md", table_markdown(per_class_table(TABLE1, recs)))
    mean, std = per_class_iou(TABLE1, recs)
    assert list(mean.index) == ["wall", "person", "car"]
    ours_fcn = statistics.fmean([41.0, 41.5, 41.2, 40.2])
    assert mean.loc["wall", "Ours (ResNet-101)"] == pytest.approx(ours_fcn + 10)
    assert std.loc["person", "FCN [CVPR15]"] == pytest.approx(statistics.stdev([29.6, 30.3, 29.8]))
    assert mean["Swin [ICCV21]"].isna().all() and mean.loc["car"].isna().all()


def test_loss_ablation_matches_golden():
    cells = loss_grid()
    recs = ablation_records(cells, [[45.2, 44.9], [45.7, 46.0], "pending", [46.3, 46.6]])
    assert [loss_terms(c) for c in cells] == [
        {"CE": "✓", "PPC": "", "PPD": ""}, {"CE": "✓", "PPC": "✓", "PPD": ""},
        {"CE": "✓", "PPC": "", "PPD": "✓"}, {"CE": "✓", "PPC": "✓", "PPD": "✓"}]
    table = grid_table(cells, recs, layout="loss")
    assert_golden("ablation_loss.md", table_markdown(table))
    assert_golden("ablation_loss.tex", table_latex(table, grid="ablation_loss"))


def test_k_ablation_matches_golden():
    cells = k_grid()
    recs = ablation_records(cells, [[45.3], [46.2], "failed", "pending"])
    table = grid_table(cells, recs, layout="k")
    assert_golden("ablation_k.md", table_markdown(table))
    assert_golden("ablation_k.tex", table_latex(table, grid="ablation_k"))


def test_layout_choice_and_bad_input():
    assert grid_table(TABLE1, []).columns == paper_table(TABLE1, []).columns  # the default
    assert grid_table(loss_grid(), [], layout="loss").columns[:3] == ["CE", "PPC", "PPD"]
    with pytest.raises(ValueError, match="unknown table layout 'wide'"):
        grid_table(TABLE1, [], layout="wide")
    with pytest.raises(ValueError, match=r"reference row 0 \('X'\) lacks miou"):
        grid_table(TABLE1, [], [{"method": "X", "backbone": "R"}])
    with pytest.raises(ValueError, match=r"reference row 1 \('Y'\) lacks miou"):
        grid_table(TABLE1, [], [{"method": "X", "miou": 1.0}, {"method": "Y", "mIoU": 2.0}])
    twin = Cell(grid="table1", row="FCN again", column="ResNet-101", tag="baseline",
                pair="resnet101_d8", model=ModelSpec(backbone="resnet18_d8"))
    with pytest.raises(ValueError, match="pair 'resnet101_d8' has two baseline cells"):
        paper_table(TABLE1 + [twin], [])


def test_empty_grid_renders_all_pending(tmp_path):
    paths = render("table1", TABLE1, [], tmp_path, reference_rows=REFERENCE)
    md = paths["md"].read_text(encoding="utf-8")
    assert md.count("pending") == 8 and "failed" not in md
    per_class = paths["per_class_md"].read_text(encoding="utf-8")
    assert per_class.count("pending") == 8


def test_grid_without_paper_numbers_drops_the_paper_columns():
    ours = [Cell(grid="g", row=c.row, column=c.column, tag=c.tag, pair=c.pair, model=c.model)
            for c in FCN]  # same cells without the paper's numbers
    table = paper_table(ours, [])
    md = table_markdown(table)
    assert "Paper" not in md and "Δ paper" not in md
    assert table.columns[-3:] == [PAIRED_HEADER, "Verdict", "Seeds"] and len(table.align) == 7
    assert "Paper mIoU (%)" in table_markdown(paper_table(FCN, []))  # kept when there are some
