"""The three rooms of benchmark/ stay apart (docs/design.md): train and report import no other
room; launch, which starts runs, calls train's entry points but never report; nothing imports
the CLI. Shared ground: store, config, validation, catalog, provenance, stats, datasets,
checkpoints."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("train", "launch", "report")
LAUNCH_MAY_CALL = {"benchmark.train.engine", "benchmark.train.checkpoint", "benchmark.train.engine",
                   "benchmark.train.evaluate",
                   "benchmark.train.optim", "benchmark.train.telemetry"}


def imported(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("room", ROOMS)
def test_rooms_import_only_shared_ground(room: str) -> None:
    for path in sorted((ROOT / "benchmark" / room).glob("*.py")):
        for module in imported(path):
            parts = module.split(".")
            if parts[0] != "benchmark" or len(parts) < 2:
                continue
            assert parts[1] != "cli", f"{path.name} imports the CLI"
            if parts[1] in ROOMS and parts[1] != room:
                allowed = room == "launch" and module in LAUNCH_MAY_CALL
                assert allowed, f"benchmark/{room}/{path.name} imports {module}"
