"""The dry run of `--seeds auto` (sequential plan beside the fixed one, nothing written) and of
grids evaluated from checkpoints (each file with its published mIoU; no seeds, no recipe)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_table1_auto_dry_run_prints_both_plans_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, "run_all.py", "--grid", "table1", "--seeds", "auto",
                          "--dry-run", "--results", str(tmp_path / "results")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "seed plan: 80% power" in text and "(104 runs" in text  # the fixed plan
    assert "sequential plan (--seeds auto): looks at 3, 5, 8, 13 seeds" in text
    assert "within-seed correlation 0.00 (prior" in text and "per-run sd 0.50" in text
    plan = text[text.index("sequential plan"):]
    swin = next(line for line in plan.splitlines() if line.strip().startswith("Ours (Swin)"))
    assert "+0.6" in swin and "(80%)" in swin and "not started" in swin
    assert "against 104 with the fixed 13 seeds per cell" in text
    assert not (tmp_path / "results").exists()


def test_zoo_dry_run_lists_checkpoints_not_seeds(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "fcn_r101-d8_512x512_160k_ade20k_20200615_105816-fd192bd5.pth").write_bytes(b"x")
    assert main(["--grid", "zoo", "--dry-run", "--checkpoint", str(folder), "--results",
                 str(tmp_path / "results")]) == 0
    text = capsys.readouterr().out
    assert "published mIoU 39.91" in text and "present: " in text
    assert "missing (looked for fcn_hr48_4xb4-160k_ade20k-512x512*.pth" in text
    assert "1 of 8 checkpoint files present" in text
    assert "seed plan" not in text and "recipe " not in text and "seeds " not in text


def test_pocock_spending_is_a_flag(tmp_path, capsys):
    assert main(["--grid", "table1", "--seeds", "auto", "--spending", "pocock", "--dry-run",
                 "--results", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Pocock alpha-spending" in text and "efficacy |t| >= 7.64, 4.49, 3.26, 2.71" in text


def test_seeds_takes_a_number_or_auto(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--grid", "table1", "--seeds", "many", "--dry-run"])
    assert "neither a number nor auto" in capsys.readouterr().err


def test_memory_estimate_follows_gpus_per_run(tmp_path, capsys):
    """Table 1's ADE20K cells train 16 images on 4 GPUs; on 8 GPUs the plan estimates 2 per
    GPU, as the job would run them."""
    def memory_lines(*extra: str) -> list[str]:
        assert main(["--grid", "table1", "--dry-run", "--results", str(tmp_path / "r"),
                     *extra]) == 0
        return [line for line in capsys.readouterr().out.splitlines()
                if line.strip().startswith("memory ~")]

    recipe, eight = memory_lines(), memory_lines("--executor", "slurm", "--gpus-per-run", "8")
    assert recipe and len(recipe) == len(eight)
    assert any(" at 4 img/GPU " in line for line in recipe)
    assert all(" at 4 img/GPU " not in line for line in eight)
    assert any(" at 2 img/GPU " in line for line in eight)


def test_cluster_dry_run_prints_the_job_arrays_it_would_submit(tmp_path, capsys):
    """With --executor slurm the plan ends with each job array's sbatch resources: Table 1's
    two shapes (4 and 8 GPUs, 32 GB of host memory each), one shape with --gpus-per-run."""
    def job_lines(*extra: str) -> list[str]:
        assert main(["--grid", "table1", "--dry-run", "--results", str(tmp_path / "r"),
                     "--executor", "slurm", "--partition", "gpu", *extra]) == 0
        out = capsys.readouterr().out.splitlines()
        start = next(i for i, line in enumerate(out) if line.startswith("jobs (--executor"))
        return out[start:start + 1 + int(out[start].split(", ")[1].split()[0])]

    head, *arrays = job_lines()
    assert head == "jobs (--executor slurm): 104 run(s) not done, 2 job array(s)"
    assert any("gpus_per_node=4," in a and "mem_gb=128," in a for a in arrays)
    assert any("gpus_per_node=8," in a and "mem_gb=256," in a for a in arrays)
    assert all("slurm_partition=gpu," in a and "nodes=1," in a for a in arrays)
    head, only = job_lines("--gpus-per-run", "2")
    assert "104 run(s) not done, 1 job array(s)" in head
    assert "gpus_per_node=2," in only and "tasks_per_node=2," in only
    assert not (tmp_path / "r" / "jobs").exists()  # a dry run submits nothing
