"""`--seeds auto`: the next wave from synthetic records (fast), the state kept between commands,
the CLI's wave loop inline, local and on SLURM with runs faked, and the verdict wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from record_fixtures import consistent

from benchmark import cli
from benchmark.launch import executors
from benchmark.config import Cell, TrainSpec
from benchmark.launch.waves import measured_correlation, plan_waves, study_pairs, variation
from benchmark.looks import load_state
from benchmark.store import Record, ResultsLayout, load_summaries, write_record
from experiments import get_grid

# pair a: paper gain +1.0 (7 seeds at sigma 0.5: looks 3, 5, 7); r: a reference and two switches
def cell(row: str, iters: int, **kw) -> Cell:
    """A cell whose key differs from the others' (the key hashes settings, not labels)."""
    return Cell(grid="g", row=row, train=TrainSpec(iters=iters), **kw)


A = cell("A", 10, column="X", tag="baseline", pair="a", paper_miou=40.0)
A_OURS = cell("A+", 11, column="X", tag="ours", pair="a", paper_miou=41.0)
LONE = cell("Lone", 12, column="X")
R = cell("R", 20, column="Y", tag="baseline", pair="r")
S1 = cell("S1", 21, column="Y", tag="switch", pair="r")
S2 = cell("S2", 22, column="Y", tag="switch", pair="r")
CELLS = [A, A_OURS, LONE]


def record(cell: Cell, seed: int, miou: float) -> Record:
    return Record(status="done", grid=cell.grid, cell_key=cell.key, seed=seed,
                  **consistent(miou), params={"learnable": 1},  # metrics and their matrix
                  timings={"train_s": 1.0, "eval_s": 0.0})


def paired(base: Cell, ours: Cell, diffs: list[float], level: float = 40.0) -> list[Record]:
    """Records of both cells, seed s: baseline level + 0.3 (-1)^s, ours that plus diffs[s]."""
    out = []
    for s, d in enumerate(diffs):
        b = level + 0.3 * (-1) ** s + 0.01 * s
        out += [record(base, s, b), record(ours, s, b + d)]
    return out


def test_first_wave_for_every_cell_and_nothing_written_without_save(tmp_path):
    layout = ResultsLayout(tmp_path)
    plan = plan_waves("g", CELLS, layout, [])
    assert plan.state.design.looks == (3, 5, 7)  # the fixed plan's 7 seeds for a +1.0 gain
    assert plan.targets == {A.key: 3, A_OURS.key: 3, LONE.key: 3}
    assert not layout.sequential("g").exists()
    plan_waves("g", CELLS, layout, [], save=True)
    assert load_state(layout, "g").design.looks == (3, 5, 7)


def test_a_clear_gain_stops_at_the_second_look_and_a_flat_pair_for_futility(tmp_path):
    layout = ResultsLayout(tmp_path)
    clear = paired(A, A_OURS, [1.0, 1.4, 0.6, 1.2, 0.8, 1.0, 1.0])
    plan_waves("g", CELLS, layout, [], save=True)  # the study starts before any record
    plan = plan_waves("g", CELLS, layout, clear[:6], save=True)  # 3 seeds: |t| 4.3 < c_1
    assert plan.targets[A.key] == plan.targets[A_OURS.key] == 5 and plan.targets[LONE.key] == 3
    assert "look 1/3 at 3 seeds" in plan.lines[0] and "continue to 5 seeds" in plan.lines[0]
    plan = plan_waves("g", CELLS, layout, clear[:10], save=True)
    decision = plan.state.pairs[study_pairs(CELLS)[0].key].decision
    assert decision.label == "reproduced" and decision.n == 5
    assert plan.targets[A_OURS.key] == 5  # no more seeds once decided
    # the state kept: a new command with more records does not look again
    again = plan_waves("g", CELLS, layout, clear, save=True)
    assert not again.changed and again.targets[A_OURS.key] == 5
    flat = paired(A, A_OURS, [0.01, -0.01, 0.0])
    plan_waves("g", CELLS, ResultsLayout(tmp_path / "flat"), [], save=True)
    stop = plan_waves("g", CELLS, ResultsLayout(tmp_path / "flat"), flat)
    assert stop.state.pairs[study_pairs(CELLS)[0].key].decision.reason == "futility"
    assert stop.targets[A_OURS.key] == 3


def test_a_shared_baseline_runs_as_long_as_its_longest_open_pair(tmp_path):
    cells = [R, S1, S2]
    records = paired(R, S1, [0.01, -0.01, 0.0])  # S1: no difference of 0.6 (futility)
    records += [record(S2, s, r.miou + d) for s, (r, d) in enumerate(
        zip(records[::2], [2.0, -1.0, 0.5]))]  # S2: noisy, open
    plan_waves("r", cells, ResultsLayout(tmp_path), [], save=True)
    plan = plan_waves("r", cells, ResultsLayout(tmp_path), records)
    assert plan.state.design.looks == (3, 5, 8, 13)  # no paper gain: planned for +0.6
    by_key = {p.ours.key: plan.state.pairs[p.key] for p in study_pairs(cells)}
    assert by_key[S1.key].decision.label == "no difference detected"
    assert by_key[S2.key].decision is None
    assert plan.targets == {R.key: 5, S1.key: 3, S2.key: 5}


def test_an_incomplete_wave_waits_for_its_records(tmp_path):
    records = paired(A, A_OURS, [1.0, 1.1, 0.9])[:-1]  # ours seed 2 still running
    plan = plan_waves("g", CELLS, ResultsLayout(tmp_path), records)
    assert not plan.state.pairs[study_pairs(CELLS)[0].key].looks
    assert plan.targets[A_OURS.key] == 3


def test_sd_and_correlation_are_measured_from_the_records():
    # ours moves with the baseline seed by seed: correlation near 1
    records = paired(A, A_OURS, [1.0, 1.01, 0.99, 1.0])
    corr, pairs, seeds = measured_correlation(study_pairs(CELLS), {
        A.key: {r.seed: r.miou for r in records if r.cell_key == A.key},
        A_OURS.key: {r.seed: r.miou for r in records if r.cell_key == A_OURS.key}})
    assert corr > 0.95 and (pairs, seeds) == (1, 4)
    v = variation(CELLS, records)
    assert "measured from 8 runs" in v.source and "measured over 1 pairs" in v.source
    assert v.rho == 0.99 and v.sd_diff < 0.2 * v.sigma  # clamped: never a zero sd
    prior = variation(CELLS, [])
    assert (prior.sigma, prior.rho) == (0.5, 0.0) and "prior" in prior.source


# --------------------------------------------------------------------------- the CLI, runs faked

def fake_miou(cell: Cell, seed: int) -> float:
    """Seed noise shared by every cell; ours 3 mIoU over the softmax baseline, plus its own
    noise: differences 3.0, 3.6, 3.4 (|t| 19 < c_1 149), then 3.2, 3.0 (|t| 28 > c_2 7.7)."""
    own = 3.0 + 0.2 * ((3 * seed) % 4) if cell.row == "Prototype (K=5)" else 0.0
    return 50.0 + (seed % 3) + own


def fake_execute(run, progress: bool = True) -> Record:
    rec = record(run.cell, run.seed, fake_miou(run.cell, run.seed))
    write_record(run.path, rec)
    return rec


def fake_submit(self, runs):
    for run in runs:  # the jobs have run by the time anybody looks
        fake_execute(run)
    return []


def seeds_by_row(tmp_path: Path) -> dict[str, int]:
    rows = {c.key: c.row for c in get_grid("smoke").cells}
    counts: dict[str, int] = {}
    for r in load_summaries(ResultsLayout(tmp_path), "smoke"):
        counts[rows[r.cell_key]] = counts.get(rows[r.cell_key], 0) + 1
    return counts


EXPECTED = {"Softmax": 5, "Pixel-query": 3, "Pixel contrast": 3, "Prototype (K=1)": 3,
            "Prototype (K=5)": 5}


def test_inline_runs_wave_after_wave_until_the_pair_is_decided(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors, "execute_run", fake_execute)
    args = ["--grid", "smoke", "--seeds", "auto", "--results", str(tmp_path), "--no-progress"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert seeds_by_row(tmp_path) == EXPECTED  # 3 for cells in no pair, 5 for the decided pair
    assert "look 2/4 at 5 seeds" in out and "-> higher than the baseline" in out
    table = (tmp_path / "tables" / "smoke.md").read_text()
    assert "higher than the baseline (stopped at 5 of 13 seeds; sequential, overall 5%)" in table
    assert "Sequential (--seeds auto)" in table
    state = json.loads((tmp_path / "sequential" / "smoke.json").read_text())
    assert state["design"]["looks"] == [3, 5, 8, 13] and state["measured"]["rho"] > 0.9
    # the same command again: nothing to run, the same verdict
    assert cli.main(args) == 0
    assert "0 to run" in capsys.readouterr().out


@pytest.mark.parametrize("executor, wait", [("local", False), ("slurm", True)])
def test_local_and_slurm_wait_submit_wave_after_wave(executor, wait, tmp_path, monkeypatch):
    monkeypatch.setattr(executors.SubmititExecutor, "submit", fake_submit)
    monkeypatch.setattr(executors.SlurmExecutor, "to_submit", lambda self, pending: pending)
    args = ["--grid", "smoke", "--seeds", "auto", "--results", str(tmp_path),
            "--executor", executor] + (["--wait"] if wait else [])
    assert cli.main(args) == 0
    assert seeds_by_row(tmp_path) == EXPECTED


def test_slurm_without_wait_continues_where_the_records_stand(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors.SubmititExecutor, "submit", fake_submit)
    monkeypatch.setattr(executors.SlurmExecutor, "to_submit", lambda self, pending: pending)
    args = ["--grid", "smoke", "--seeds", "auto", "--results", str(tmp_path), "--executor",
            "slurm"]
    assert cli.main(args) == 0  # the first wave, then return
    assert set(seeds_by_row(tmp_path).values()) == {3}
    assert "follow with" in capsys.readouterr().out
    assert cli.main(args) == 0  # look 1 taken, the second wave submitted
    assert seeds_by_row(tmp_path) == EXPECTED
    assert cli.main(args) == 0  # look 2 decides; nothing left
    assert "0 to run" in capsys.readouterr().out


def test_force_is_refused_under_seeds_auto(tmp_path, capsys):
    assert cli.main(["--grid", "smoke", "--seeds", "auto", "--force", "--results",
                     str(tmp_path)]) == 2
    assert "--force with --seeds auto" in capsys.readouterr().err


def test_fixed_seeds_looked_at_twice_say_their_interval_is_not_corrected(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "execute_run", fake_execute)
    base = ["--grid", "smoke", "--results", str(tmp_path), "--no-progress"]
    assert cli.main(base + ["--seeds", "3"]) == 0
    table = (tmp_path / "tables" / "smoke.md").read_text()
    assert "repeated looks" not in table
    assert cli.main(base + ["--seeds", "4"]) == 0
    table = (tmp_path / "tables" / "smoke.md").read_text()
    assert "(interval not corrected for repeated looks at 3, 4 seeds)" in table
    assert "Not corrected for repeated looks" in table


def test_table_verdicts_say_how_the_sequential_study_reached_them(tmp_path):
    from benchmark.looks import load_history
    from benchmark.report.aggregate import cell_results
    from benchmark.report.verdicts import look_history, verdicts

    layout = ResultsLayout(tmp_path)
    clear = paired(A, A_OURS, [1.0, 1.4, 0.6, 1.2, 0.8])
    plan_waves("g", CELLS, layout, [], save=True)
    plan_waves("g", CELLS, layout, clear[:6], save=True)
    with look_history(load_history(layout, "g")):
        judged = verdicts(CELLS, cell_results(CELLS, clear[:6]))
    assert judged[A_OURS.key].text() == ("open (after 3 of 7 seeds; next look at 5; "
                                         "sequential, overall 5%)")
    plan_waves("g", CELLS, layout, clear, save=True)
    results = cell_results(CELLS, clear)
    with look_history(load_history(layout, "g")):
        judged = verdicts(CELLS, results)
    assert judged[A_OURS.key].text() == ("reproduced (stopped at 5 of 7 seeds; sequential, "
                                         "overall 5%)")
    # the baseline (about 40.0 over 5 seeds) against the paper's 40.0, on its repeated interval
    assert judged[A.key].text() == ("matches the paper (repeated interval at 5 of 7 seeds; "
                                    "sequential, overall 5%)")
    fixed = verdicts(CELLS, results)[A.key]  # t_{0.975, 4} = 2.776 against c_2
    c2 = load_history(layout, "g").state.boundaries.efficacy[1]
    assert (judged[A.key].high - judged[A.key].low) / (fixed.high - fixed.low) == \
        pytest.approx(c2 / 2.776, rel=1e-3)
    # outside the tables of this results folder: the fixed-seed wording
    assert verdicts(CELLS, results)[A_OURS.key].text() == "reproduced"


def test_the_committed_smoke_study_regenerates_its_table(tmp_path, capsys):
    """results/smoke_seeds_auto (docs/results.md): every record is valid and today's code
    gives the same table and the same sequential verdict from the committed state."""
    import shutil

    committed = Path(__file__).resolve().parents[3] / "results" / "smoke_seeds_auto"
    copy = tmp_path / "study"
    shutil.copytree(committed, copy)
    records = load_summaries(ResultsLayout(copy), "smoke")
    assert len(records) == 25 and all(r.done for r in records)
    state = load_state(ResultsLayout(copy), "smoke")
    (pair,) = state.pairs.values()
    assert [look.n for look in pair.looks] == [3, 5, 8]
    assert pair.looks[-1].label == "higher than the baseline"
    args = ["--grid", "smoke", "--seeds", "auto", "--tables-only", "--results", str(copy)]
    assert cli.main(args) == 0
    for name in ("smoke.md", "smoke.csv", "smoke_per_class.md"):
        assert (copy / "tables" / name).read_text() == (committed / "tables" / name).read_text()


def test_status_shows_the_study_runs_without_seeds_auto(tmp_path, capsys):
    """`--status` of a grid with a `--seeds auto` study lists the study's seeds."""
    import shutil

    committed = Path(__file__).resolve().parents[3] / "results" / "smoke_seeds_auto"
    shutil.copytree(committed, tmp_path / "study")
    assert cli.main(["--grid", "smoke", "--status", "--results", str(tmp_path / "study")]) == 0
    out = capsys.readouterr().out
    assert "its --seeds auto study" in out
    assert "Prototype (K=5)        seed 7   done" in out and "seed 8" not in out
    assert cli.main(["--grid", "smoke", "--status", "--seeds", "1", "--results",
                     str(tmp_path / "study")]) == 0
    assert "seed 1 " not in capsys.readouterr().out
