"""results/report_<grid>.md: table, per-class IoU, figures, provenance and compute per cell."""

from __future__ import annotations

from dataclasses import replace

from benchmark.config import Cell, HeadSpec, ModelSpec
from benchmark.report.markdown import _provenance, compute_rows, write_report
from benchmark.report.render import table_markdown
from benchmark.report.tables import grid_table
from benchmark.store import Record, ResultsLayout

BASE = Cell(grid="demo", row="Softmax", column="MiT-B0", tag="baseline", pair="b0", paper_miou=50.0)
OURS = Cell(grid="demo", row="Prototype", column="MiT-B0", tag="ours", pair="b0", paper_miou=52.0,
            model=ModelSpec(head=HeadSpec(name="prototype")))
CELLS = [BASE, OURS]
VERSIONS_A = {"python": "3.11.9", "torch": "2.14.1"}
VERSIONS_B = {"python": "3.11.9", "torch": "2.15.0"}
GPU = {"cpu": "Xeon", "cpu_count": 32, "gpu": "H100", "gpu_count": 2, "torch_threads": 16}
CPU = {"cpu": "Ryzen", "cpu_count": 2, "gpu": None, "torch_threads": 4}


def run(cell: Cell, seed: int, miou: float, train_s: float, eval_s: float, hardware: dict,
        world: int = 1, commit: str = "abc123", versions: dict = VERSIONS_A) -> Record:
    device = "cuda" if hardware["gpu"] else "cpu"
    return Record(
        status="done", grid=cell.grid, cell_key=cell.key, seed=seed, world_size=world,
        metrics={"miou": miou, "per_class_iou": {"road": miou + 5, "sky": miou - 5}},
        params={"learnable": 3_500_000}, timings={"train_s": train_s, "eval_s": eval_s},
        memory={"device": device, "peak_bytes": 3 * 2**30},
        provenance={"git_commit": commit, "versions": versions, "hardware": hardware},
        started=f"2025-01-0{seed + 1}T10:00:00+00:00",
        finished=f"2025-01-0{seed + 1}T12:00:00+00:00",
    )


def records() -> list[Record]:
    return [
        run(BASE, 0, 50.5, 3600.0, 360.0, GPU, world=2),  # 2.2 GPU-hours
        run(BASE, 1, 51.0, 1800.0, 0.0, CPU, commit="def456", versions=VERSIONS_B),  # 2.0 core-h
        run(OURS, 0, 52.5, 3600.0, 0.0, GPU),
        Record(status="failed", grid="demo", cell_key=OURS.key, seed=1,
               error="NonFiniteLossError: nan",
               provenance={"git_commit": "abc123", "versions": VERSIONS_A, "hardware": GPU}),
    ]


def test_compute_rows_by_hand():
    rows = compute_rows(CELLS, records())
    # Softmax: GPU 3960 s x 2 processes = 2.2 h; CPU 1800 s x 4 threads = 2.0 core-hours
    assert rows[0] == ["Softmax", "MiT-B0", 2, 0, "1.500", "0.100", "2.200", "2.000", "3.00"]
    assert rows[1] == ["Prototype", "MiT-B0", 1, 1, "1.000", "0.000", "1.000", "0.000", "3.00"]
    assert rows[2][:8] == ["**total**", "", 3, 1, "2.500", "0.100", "3.200", "2.000"]


def test_schema1_records_report_the_same():
    """Records written before provenance was nested (schema 1: git_commit, versions and
    hardware at the top level) give the same compute rows and provenance section."""
    schema1 = []
    for rec in records():
        data = rec.to_json()
        data.update(schema=1, **data.pop("provenance"))
        schema1.append(Record.from_json(data))
    assert compute_rows(CELLS, schema1) == compute_rows(CELLS, records())
    assert _provenance(schema1, CELLS) == _provenance(records(), CELLS)


def test_report_collects_table_figures_and_provenance(tmp_path):
    figures = tmp_path / "figures" / "demo"
    figures.mkdir(parents=True)
    (figures / "per_class_iou_b0.png").write_bytes(b"\x89PNG fake")
    (figures / "per_class_iou_b0.pdf").write_bytes(b"%PDF fake")
    (figures / "training_curves.png").write_bytes(b"\x89PNG fake")
    (figures / f"similarity_{OURS.key}_seed0.png").write_bytes(b"\x89PNG fake")
    refs = [{"method": "OCR", "backbone": "HRNetV2-W48", "params_m": 70.3, "miou": 45.6}]

    path = write_report("demo", CELLS, records(), ResultsLayout(tmp_path), "a demo grid", refs)
    assert path == ResultsLayout(tmp_path).report("demo") == tmp_path / "report_demo.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Report: grid `demo`\n\na demo grid\n")
    assert table_markdown(grid_table(CELLS, records(), refs)) in text
    # gain over all seeds (52.5 - 50.75) and the paired difference on the shared seed 0
    assert "OCR (ref.)" in text and "**52.5 ↑1.8**" in text and "+2.0 (n=1)" in text
    assert "| road    |" in text  # per-class table
    assert "![per_class_iou_b0](figures/demo/per_class_iou_b0.png)" in text
    assert "([PDF](figures/demo/per_class_iou_b0.pdf))" in text
    assert "![training_curves](figures/demo/training_curves.png)" in text
    # figures in kind order, a run's figure titled by its method and seed
    titles = [line for line in text.splitlines() if line.startswith("### ")][:3]
    assert titles == ["### Per-class IoU (b0) ([PDF](figures/demo/per_class_iou_b0.pdf))",
                      "### Training loss and evaluation mIoU",
                      "### Pixel-prototype similarity (paper Fig. 3): Prototype, seed 0"]
    # failed run with its error; commits, versions that differ between runs, hardware
    assert "NonFiniteLossError: nan" in text
    assert "| abc123       | 3      |" in text and "| def456       | 1      |" in text
    assert "2.14.1 (3), 2.15.0 (1)" in text
    assert "| Xeon  | 32          | 2 x H100 | 2                   | 1      |" in text
    assert "| Ryzen | 2           | –        | 1                   | 1      |" in text
    assert "| Prototype | prototype-" in text and "| 1      | NonFiniteLossError: nan |" in text
    assert "| Softmax   | MiT-B0     |           2 |        0 |     1.500 |" in text
    assert "Runs started 2025-01-01T10:00:00+00:00 and finished 2025-01-02T12:00:00+00:00" in text
    # regenerated, never edited: the same inputs give the same bytes
    layout = ResultsLayout(tmp_path)
    assert write_report("demo", CELLS, records(), layout, "a demo grid", refs).read_text(
        encoding="utf-8") == text


def test_report_without_runs_or_figures(tmp_path):
    text = write_report("demo", CELLS, [], ResultsLayout(tmp_path)).read_text(encoding="utf-8")
    assert text.count("pending") >= 2
    assert "No figures yet: `python run_all.py --grid demo --figures`." in text
    assert "No run has finished yet." in text
    assert "Failed runs" not in text


def test_cli_tables_only_with_figures_writes_tables_figures_and_report(tmp_path, capsys):
    """`run_all.py --grid smoke --tables-only --figures` on hand-written records: no training."""
    from benchmark.cli import main
    from record_fixtures import consistent

    from benchmark.store import write_record
    from experiments import get_grid

    cells = get_grid("smoke").cells
    for i, cell in enumerate(cells):
        rec = run(cell, 0, 50.0 + 10 * i, 60.0, 5.0, CPU)
        rec = replace(rec, **consistent(rec.miou, rec.metrics.per_class_iou))  # read back
        rec.history = [{"step": s, "loss": 2.0 - s / 300, "ce": 1.0, "lr": 1e-3}
                       for s in (0, 100, 239)]
        write_record(ResultsLayout(tmp_path).record("smoke", cell.key, 0), rec)
    assert main(["--grid", "smoke", "--tables-only", "--figures", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipping the embedding figures of 'Softmax': no weights at" in out
    ours = 50.0 + 10 * next(i for i, c in enumerate(cells) if c.tag == "ours")
    assert (tmp_path / "tables" / "smoke.tex").read_text().count(rf"\textbf{{{ours:.1f}") == 1
    figures = sorted(p.name for p in (tmp_path / "figures" / "smoke").iterdir())
    assert figures == ["per_class_iou_mit-b0.pdf", "per_class_iou_mit-b0.png",
                       "training_curves.pdf", "training_curves.png"]
    report = (tmp_path / "report_smoke.md").read_text(encoding="utf-8")
    assert "![training_curves](figures/smoke/training_curves.png)" in report
    assert f"**{ours:.1f} ↑{ours - 50:.1f}**" in report and "| Ryzen |" in report
