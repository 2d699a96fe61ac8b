"""Where and with what a run was made: git commit, library versions, hardware, and, for a
run from a modified checkout, its code's diff against the commit, so the code can be rebuilt.

A record from uncommitted code names `<sha>-dirty`; its diff (`git diff HEAD --binary` plus
every untracked file git does not ignore, all outside `results/`) is stored beside it as
`seed<k>.diff` (or `published.diff`) and named in its provenance with its SHA-256.
`python -m benchmark.provenance rebuild RECORD DIR` checks the commit out into DIR (a git
worktree) and applies the diff: the exact code the record came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from benchmark.cpu_memory import allocator_note
from benchmark.records import Provenance
from benchmark.store import atomic_write

REPO = Path(__file__).resolve().parents[1]
OUTSIDE_RESULTS = (".", ":(exclude)results")  # results are not code: a run's own records
DIRTY = "-dirty"


class RebuildError(RuntimeError):
    """The code of a record cannot be rebuilt; one line naming why and what to do."""


LIBRARIES = ("torch", "torchvision", "timm", "transformers", "accelerate", "datasets", "numpy",
             "pandas", "submitit")


def _git(repo: Path, *args: str, ok: tuple[int, ...] = (0,)) -> bytes:
    """stdout of `git ARGS` in `repo`; CalledProcessError on an exit code not in `ok`."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True)
    if proc.returncode not in ok:
        raise subprocess.CalledProcessError(proc.returncode, ["git", *args], proc.stdout,
                                            proc.stderr)
    return proc.stdout


def git_commit(repo: Path | None = None) -> str:
    """HEAD commit of the project, with '-dirty' when files outside results/ changed or were
    added (untracked, not ignored); 'unknown' outside git."""
    repo = repo or REPO
    try:
        sha = _git(repo, "rev-parse", "HEAD").decode().strip()
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=normal", "--",
                     *OUTSIDE_RESULTS).strip()
        return sha + (DIRTY if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def code_diff(repo: Path | None = None) -> bytes:
    """The checkout's changes against HEAD as one binary-safe patch (`git apply` takes it):
    tracked files' changes, then each untracked file git does not ignore, as a new file."""
    repo = repo or REPO
    patch = _git(repo, "diff", "HEAD", "--binary", "--", *OUTSIDE_RESULTS)
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z", "--",
                     *OUTSIDE_RESULTS).split(b"\0")
    for name in filter(None, untracked):  # exit 1: the files differ, as they must
        patch += _git(repo, "diff", "--binary", "--no-index", "--", "/dev/null",
                      os.fsdecode(name), ok=(0, 1))
    return patch


def diff_path(record_path: Path | str) -> Path:
    """Where a record's code diff is stored: beside it, `seed<k>.diff` / `published.diff`."""
    return Path(record_path).with_suffix(".diff")


def with_code_diff(record_path: Path | str, prov: Provenance | Mapping[str, Any],
                   repo: Path | None = None) -> Provenance:
    """`prov` with `diff` ({file, sha256, bytes}) after writing the diff beside the record,
    when the record names uncommitted code; unchanged otherwise (the diff file comes first:
    a record never names a missing one)."""
    prov = Provenance.from_dict(prov)
    if not is_uncommitted(prov) or prov.diff is not None:
        return prov
    try:
        patch = code_diff(repo)
    except (OSError, subprocess.CalledProcessError):
        return prov
    path = atomic_write(diff_path(record_path), patch)
    return dataclasses.replace(prov, diff={"file": path.name,
                                           "sha256": hashlib.sha256(patch).hexdigest(),
                                           "bytes": len(patch)})


def is_uncommitted(prov: Provenance) -> bool:
    """Whether a record's provenance names uncommitted code."""
    return str(prov.git_commit or "").endswith(DIRTY)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware() -> dict[str, Any]:
    """Host, CPU, torch threads, CPU allocator settings and GPUs of this process (torch imported
    here, not at module load, so that `--dry-run` never imports it)."""
    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_allocator": allocator_note(),  # CPU step times depend on it (docs/performance.md)
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), for records and benchmark headers."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def provenance(pretrained: dict[str, Any] | None = None) -> Provenance:
    """This process's commit, libraries and hardware (and a trained run's backbone file)."""
    return Provenance(git_commit=git_commit(), versions=library_versions(), hardware=hardware(),
                      pretrained=pretrained)


# --------------------------------------------------------------------------- rebuild


def rebuild(record_path: Path | str, target: Path | str, repo: Path | None = None) -> Path:
    """Check out the commit a record names into `target` (a detached git worktree of `repo`)
    and apply its stored diff (SHA-256 checked first); RebuildError in one line otherwise."""
    repo, record_path, target = repo or REPO, Path(record_path), Path(target)
    try:
        data = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RebuildError(f"cannot read record {record_path} ({err})") from None
    prov = Provenance.from_dict(data.get("provenance") or data)  # schema 1: at the top level
    commit = str(prov.git_commit or "unknown")
    sha = commit.removesuffix(DIRTY)
    if sha == "unknown":
        raise RebuildError(f"record {record_path} names no git commit: its code is unknown")
    patch = None
    if commit.endswith(DIRTY):
        entry = prov.diff
        if not entry:
            raise RebuildError(f"record {record_path} comes from uncommitted code ({commit}) but "
                               f"stores no diff (written before diffs were kept): only commit "
                               f"{sha[:12]} can be checked out, not the code that ran")
        diff = record_path.parent / entry["file"]
        try:
            patch = diff.read_bytes()
        except OSError as err:
            raise RebuildError(f"the record's diff {diff} cannot be read ({err.strerror})"
                               ) from None
        if hashlib.sha256(patch).hexdigest() != entry["sha256"]:
            raise RebuildError(f"the record's diff {diff} does not match the SHA-256 in the "
                               f"record: it was changed after the run")
    if target.exists() and any(target.iterdir()):
        raise RebuildError(f"{target} is not empty; give a new folder")
    try:
        _git(repo, "worktree", "add", "--detach", str(target.resolve()), sha)
        if patch:
            subprocess.run(["git", "apply", "--binary", "--whitespace=nowarn", "-"], cwd=target,
                           input=patch, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        stderr = getattr(err, "stderr", b"") or b""
        why = stderr.decode(errors="replace").strip().splitlines()[:1] or [str(err)]
        raise RebuildError(f"cannot rebuild {sha[:12]} in {target}: {why[0]}") from None
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmark.provenance rebuild RECORD DIR`."""
    p = argparse.ArgumentParser(prog="python -m benchmark.provenance",
                                description="Rebuild the code a run's record came from.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rebuild", help="check out the record's commit into DIR (a git "
                                       "worktree) and apply its stored diff")
    r.add_argument("record", help="a record, e.g. results/runs/<grid>/<key>/seed0.json")
    r.add_argument("dir", help="a new folder for the code")
    r.add_argument("--repo", default=str(REPO), help="the git repository (default: this one)")
    args = p.parse_args(argv)
    try:
        target = rebuild(args.record, args.dir, Path(args.repo))
    except RebuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"rebuilt the code of {args.record} in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
