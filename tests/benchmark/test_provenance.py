"""Code that can be rebuilt from a record (issue 24, item 7): a run from a modified checkout
stores its diff against the commit beside the record (binary-safe, untracked files included,
ignored files and results/ left out), the record names it with its SHA-256, tables and the
report mark such results, and `python -m benchmark.provenance rebuild RECORD DIR` gives back
the exact code. Tested in a temporary git repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmark import provenance
from benchmark.provenance import main, with_code_diff

BLOB = bytes(range(256)) * 4  # a binary file, NUL bytes and all


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A committed project, then modified: a changed file, a changed binary, two new files
    (one binary), an ignored log and a results folder (neither is code)."""
    for key, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@t"),
                       ("GIT_COMMITTER_NAME", "t"), ("GIT_COMMITTER_EMAIL", "t@t")):
        monkeypatch.setenv(key, value)
    repo = tmp_path / "project"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("LR = 0.01\n")
    (repo / "weights.bin").write_bytes(BLOB)
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    assert not provenance.git_commit(repo).endswith("-dirty")
    (repo / "pkg" / "code.py").write_text("LR = 0.02  # changed, not committed\n")
    (repo / "weights.bin").write_bytes(BLOB[::-1])
    (repo / "pkg" / "new.py").write_text("NEW = True\n")
    (repo / "pkg" / "table.bin").write_bytes(b"\0\1\2" * 100)
    (repo / "run.log").write_text("ignored\n")
    (repo / "results" / "runs").mkdir(parents=True)
    (repo / "results" / "runs" / "seed0.json").write_text("{}")
    return repo


def _record(repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "results" / "runs" / "g" / "k" / "seed0.json"
    prov = with_code_diff(path, {"git_commit": provenance.git_commit(repo)}, repo)  # a dict too
    path.write_text(json.dumps({"status": "done", "provenance": prov.to_json()}))
    return path


def test_a_dirty_run_stores_its_diff_and_rebuilds_exactly(repo, tmp_path) -> None:
    record = _record(repo, tmp_path)
    prov = json.loads(record.read_text())["provenance"]
    assert prov["git_commit"].endswith("-dirty") and prov["diff"]["file"] == "seed0.diff"
    diff = record.with_suffix(".diff").read_bytes()
    import hashlib

    assert prov["diff"]["sha256"] == hashlib.sha256(diff).hexdigest()
    assert b"run.log" not in diff and b"results/" not in diff

    target = tmp_path / "rebuilt"
    assert main(["rebuild", str(record), str(target), "--repo", str(repo)]) == 0
    for name in ("pkg/code.py", "weights.bin", "pkg/new.py", "pkg/table.bin"):
        assert (target / name).read_bytes() == (repo / name).read_bytes(), name
    assert not (target / "run.log").exists() and not (target / "results").exists()


def test_a_tampered_or_missing_diff_is_refused_in_one_line(repo, tmp_path, capsys) -> None:
    record = _record(repo, tmp_path)
    record.with_suffix(".diff").write_bytes(b"diff --git a/x b/x\n")
    assert main(["rebuild", str(record), str(tmp_path / "a"), "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match the SHA-256 in the record" in err, err
    data = json.loads(record.read_text())
    del data["provenance"]["diff"]  # as the committed records written before diffs were kept
    record.write_text(json.dumps(data))
    assert main(["rebuild", str(record), str(tmp_path / "b"), "--repo", str(repo)]) == 2
    assert "stores no diff (written before diffs were kept)" in capsys.readouterr().err


def test_save_record_writes_the_diff_first(repo, tmp_path, monkeypatch) -> None:
    from benchmark.launch.runs import save_record
    from benchmark.store import Record, read_record

    monkeypatch.setattr(provenance, "REPO", repo)
    path = tmp_path / "runs" / "g" / "k" / "seed0.json"
    save_record(path, Record(status="failed", cell_key="k", seed=0, error="x",
                             provenance={"git_commit": provenance.git_commit(repo)}))
    assert read_record(path).provenance.diff["file"] == "seed0.diff"
    assert path.with_suffix(".diff").exists()


def test_tables_and_the_report_mark_results_from_uncommitted_code() -> None:
    from record_fixtures import consistent

    from benchmark.report.render import uncommitted_note
    from benchmark.store import Record
    from experiments import get_grid

    cells = get_grid("smoke").cells
    records = [Record(status="done", cell_key=cells[0].key, seed=s, **consistent(40.0),
                      provenance={"git_commit": "abc" + ("-dirty" if s else "")})
               for s in range(3)]
    note = uncommitted_note(cells, records)
    assert note.startswith(f"From uncommitted code (a -dirty commit), runs of: {cells[0].row} "
                           f"(2 of 3)") and "python -m benchmark.provenance rebuild" in note
    assert uncommitted_note(cells, records[:1]) is None
    from benchmark.report.markdown import _code_and_libraries

    report = "\n".join(_code_and_libraries(records))
    assert "**2 of 3 runs come from uncommitted code**" in report and "0 of them stored" in report
