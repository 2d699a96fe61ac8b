"""Where and with what a run was made: git commit, library versions, hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


LIBRARIES = ("torch", "torchvision", "timm", "transformers", "accelerate", "datasets", "numpy",
             "pandas", "submitit")


def git_commit(repo: Path | None = None) -> str:
    """HEAD commit of the project, with '-dirty' when tracked files changed; 'unknown' outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware() -> dict[str, Any]:
    """Host, CPU, torch threads and GPUs of this process (torch imported here, not at module
    load, so that `--dry-run` never imports it)."""
    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
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


def provenance() -> dict[str, Any]:
    return {"git_commit": git_commit(), "versions": library_versions(), "hardware": hardware()}
