"""The sbatch scripts `submit()` hands SLURM for the paper's Table 1 match a stored text.

No SLURM needed: submitit's own code writes the scripts, `sbatch` is replaced by `echo`, so a
change of resources, flags, array layout or submitit's template shows up as a diff of
tests/cluster/golden/table1_sbatch.txt (regenerate with UPDATE_GOLDEN=1 after reading the diff).
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from submitit.slurm import slurm as submitit_slurm

from benchmark.cli import load_grid, parse_args
from benchmark.launch.executors import SlurmExecutor
from benchmark.launch.runs import plan
from benchmark.store import ResultsLayout

GOLDEN = Path(__file__).parent / "golden" / "table1_sbatch.txt"
ARGS = ["--grid", "table1", "--executor", "slurm", "--partition", "gpu", "--timeout-min", "1440",
        "--account", "vision", "--qos", "high", "--constraint", "a100", "--max-parallel", "3",
        "--slurm-setup", "module load cuda/12.1", "--slurm-setup", "export NCCL_DEBUG=WARN"]


@pytest.fixture
def fake_sbatch(monkeypatch) -> None:
    """submitit's SlurmExecutor without a cluster: `srun` "found", `sbatch` answers like SLURM."""
    ids = itertools.count(900001)
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["echo", f"Submitted batch job {next(ids)}"])
    # a private watcher: the fake job ids must never reach the sacct polls of real SLURM tests
    monkeypatch.setattr(submitit_slurm.SlurmJob, "watcher", submitit_slurm.SlurmInfoWatcher(600))


def jobs_log(results: Path) -> list[dict]:
    lines = (results / "jobs" / "table1.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def normalised(text: str, folder: str) -> str:
    return text.replace(folder, "<folder>").replace(shlex.quote(sys.executable), "<python>")


def submitted_scripts(tmp_path: Path) -> str:
    args = parse_args(ARGS + ["--results", str(tmp_path)])
    grid, cells, notes = load_grid("table1", [])
    assert notes == []  # no --set: nothing to say about head options
    runs = plan(cells, [0], ResultsLayout(tmp_path))
    jobs = SlurmExecutor.from_args(args).submit(runs)
    assert len(jobs) == len(runs)
    entries = jobs_log(tmp_path)
    folder = entries[0]["folder"]
    parts = []
    for script in sorted(Path(folder).glob("*_submission.sh")):
        parts.append(f"===== {script.name}\n{normalised(script.read_text(), folder)}")
    return "\n".join(parts)


def test_table1_sbatch_scripts_match_golden(tmp_path, fake_sbatch) -> None:
    text = submitted_scripts(tmp_path)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), f"the sbatch scripts differ from {GOLDEN}"


def test_table1_is_one_array_per_resource_shape(tmp_path, fake_sbatch) -> None:
    """4-GPU and 8-GPU cells form two arrays; each job asks one task (process) per GPU."""
    submitted_scripts(tmp_path)
    entries = jobs_log(tmp_path)
    assert [e["job_id"] for e in entries] == [f"90000{a}_{i}" for a in (1, 2) for i in range(4)]
    args = parse_args(ARGS + ["--results", str(tmp_path)])
    _, cells, _ = load_grid("table1", [])
    for cell, entry in zip(cells, entries):
        params = SlurmExecutor.from_args(args).job_parameters(cell)
        assert params["tasks_per_node"] == params["gpus_per_node"] == cell.resources.gpus
        assert entry["stdout"].endswith(f"{entry['job_id']}_0_log.out")


def test_gpus_per_run_overrides_the_recipe(tmp_path, fake_sbatch) -> None:
    args = parse_args(ARGS + ["--gpus-per-run", "4"])
    _, cells, _ = load_grid("table1", [])
    shapes = {json.dumps(SlurmExecutor.from_args(args).job_parameters(c), sort_keys=True)
              for c in cells}
    assert len(shapes) == 1, "one resource shape: the whole grid is one job array"
    (only,) = shapes
    assert json.loads(only)["gpus_per_node"] == 4 and json.loads(only)["tasks_per_node"] == 4
    # host memory follows the GPUs: 32 GB each, whether the recipe had 4 GPUs or 8
    assert json.loads(only)["mem_gb"] == 4 * 32


def test_a_refused_job_array_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys) -> None:
    """sbatch refusing the array (here: an unknown partition, as SLURM words it) ends the
    command with one line that gives SLURM's reason and the options to check, no traceback."""
    from benchmark.cli import main

    refuse = ("echo 'sbatch: error: invalid partition specified: nosuch' >&2; echo 'sbatch: "
              "error: Batch job submission failed: Invalid partition name specified' >&2; exit 1")
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["sh", "-c", refuse])
    args = ["--grid", "smoke", "--executor", "slurm", "--partition", "nosuch", "--no-progress",
            "--results", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: slurm refused the job array of "), err
    assert "Invalid partition name specified; check --partition" in err[0]
    assert not (tmp_path / "jobs" / "smoke.jsonl").exists()  # nothing was queued


def test_an_sbatch_answer_without_a_job_id_is_one_line_too(tmp_path, monkeypatch, capsys) -> None:
    from benchmark.cli import main

    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["echo", "sbatch: maintenance window, try later"])
    assert main(["--grid", "smoke", "--executor", "slurm", "--no-progress",
                 "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: slurm refused the job array"), err
    assert '"sbatch: maintenance window, try later"; check --partition' in err[0]
