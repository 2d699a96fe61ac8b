"""kill -9 in the middle of a run, then the same command again: the run resumes from its last
valid checkpoint (a damaged newest one and a half-written one are passed over), the lock the
killed process held does not block the rerun, and the final record equals an uninterrupted
run's bitwise (metrics, weights). Engine-level resume and fall-back are in
tests/benchmark/train/test_resume.py; here the whole command is killed and rerun.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.store import ResultsLayout
from benchmark.train import checkpoint

ROOT = Path(__file__).resolve().parents[2]
VICTIM_ROW = "Prototype (K=5)"  # the grid's last run: the others stay done, only it trains


def _records(results: Path) -> dict[str, Path]:
    """Record path of every run in the folder, by table row."""
    return {json.loads(p.read_text())["cell"]["row"]: p
            for p in (results / "runs" / "smoke").glob("*/seed0.json")}


@pytest.fixture(scope="module")
def killed(smoke_reference, tmp_path_factory, tiny_smoke) -> tuple[Path, Path]:
    """The reference minus the victim's record, rerun and killed with SIGKILL once the victim
    has two checkpoints; returns (that results folder, the victim's reference record)."""
    results = tmp_path_factory.mktemp("killed") / "results"
    shutil.copytree(smoke_reference, results)
    victim = _records(results)[VICTIM_ROW]
    key = victim.parent.name
    victim.unlink()
    layout = ResultsLayout(results)
    shutil.rmtree(layout.checkpoints("smoke", key, 0), ignore_errors=True)
    ckpt = layout.checkpoints("smoke", key, 0)
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_all.py"), "--grid", "smoke",
                             "--results", str(results), *tiny_smoke,
                             "--set", "train.checkpoint_every=1"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if len(checkpoint.valid_candidates(ckpt)) >= 2:  # folders appear complete (rename)
            proc.kill()
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, f"the run ended before it was killed: {err[-2000:]!r}"
    assert layout.lock("smoke", key, 0).exists(), "kill -9 leaves the lock file behind"
    return results, smoke_reference / victim.relative_to(results)


def _rerun(results: Path, run_all, tiny_smoke) -> tuple[subprocess.CompletedProcess, dict]:
    before = {row: p.stat().st_mtime_ns for row, p in _records(results).items()}
    proc = run_all("--grid", "smoke", "--results", str(results), *tiny_smoke)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 done, 1 to run" in proc.stdout
    after = _records(results)
    for row, mtime in before.items():  # no completed work is redone or lost
        assert after[row].stat().st_mtime_ns == mtime, row
    return proc, json.loads(after[VICTIM_ROW].read_text())


def _equal_to_reference(record: dict, reference: Path) -> None:
    expected = json.loads(reference.read_text())
    assert record["status"] == "done"
    assert record["weights_sha256"] == expected["weights_sha256"]
    assert record["metrics"] == expected["metrics"]
    assert record["confusion"] == expected["confusion"]


def test_kill_9_then_rerun_resumes_bitwise_equal(killed, tmp_path, run_all, tiny_smoke) -> None:
    results = tmp_path / "results"
    shutil.copytree(killed[0], results)
    ckpt = results / "checkpoints" / "smoke" / _key(killed[1]) / "seed0"
    newest = checkpoint.latest_valid(ckpt)[1]["step"]
    proc, record = _rerun(results, run_all, tiny_smoke)
    assert record["timings"]["resumed_from_step"] == newest
    _equal_to_reference(record, killed[1])


def test_damaged_and_partial_checkpoints_fall_back_to_the_previous(killed, tmp_path, run_all,
                                                                  tiny_smoke) -> None:
    results = tmp_path / "results"
    shutil.copytree(killed[0], results)
    ckpt = results / "checkpoints" / "smoke" / _key(killed[1]) / "seed0"
    older, newest = checkpoint.valid_candidates(ckpt)[-2:]
    weights = next(p for p in newest.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"damaged!")
    partial = ckpt / f".tmp-step{checkpoint._step_of(newest) + 1}"  # killed during a save
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    proc, record = _rerun(results, run_all, tiny_smoke)
    assert f"{newest}: model.safetensors is damaged (checksum mismatch)" in proc.stdout
    assert record["timings"]["resumed_from_step"] == checkpoint._step_of(older)
    _equal_to_reference(record, killed[1])


def _key(reference_record: Path) -> str:
    return reference_record.parent.name


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"step": 4}'])
def test_damaged_meta_json_is_passed_over_naming_its_folder(damage, tmp_path, capsys) -> None:
    older, newest = tmp_path / "step2", tmp_path / "step4"
    older.mkdir()
    (older / "meta.json").write_text(json.dumps({"step": 2, "extra": {}, "files": {}}))
    newest.mkdir()
    (newest / "meta.json").write_text(damage)
    folder, meta = checkpoint.latest_valid(tmp_path)
    assert folder == older and meta["step"] == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"warning: ignoring checkpoint {newest}: meta.json is damaged ("), out
    assert "\n" not in out
