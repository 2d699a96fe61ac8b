"""The code's shape, checked on the real import graph (every import, in functions too):
imports go one way (methods <- datasets, checkpoints <- train <- launch / report <- cli, with
config, store, stats and the registries at the bottom; experiments is data), there is no import
loop anywhere, and no module passes 600 lines nor any function 60 (docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("methods", "benchmark", "experiments")
# what each layer may import (besides itself); `base` is benchmark's top-level modules
ALLOWED = {
    "methods": set(),
    "base": {"methods"},
    "experiments": {"methods", "base"},
    "datasets": {"methods", "base"},
    "checkpoints": {"methods", "base"},
    "train": {"methods", "base", "datasets", "checkpoints"},
    "launch": {"methods", "base", "datasets", "checkpoints", "train", "experiments"},
    "report": {"methods", "base", "datasets", "checkpoints", "train", "experiments"},
    "cli": {"methods", "base", "datasets", "checkpoints", "train", "launch", "report",
            "experiments"},
}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (a package's own submodules excluded from its
    parents' edges, so `methods.heads.x` importing `methods.heads` is no loop)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for target in targets:
                module = _resolve(target)
                if module and module != name and not name.startswith(module + "."):
                    graph[name].add(module)
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("methods", "experiments"):
        return parts[0]
    if module == "benchmark.cli":
        return "cli"
    rooms = ("datasets", "checkpoints", "train", "launch", "report")
    return parts[1] if len(parts) > 1 and parts[1] in rooms else "base"


def test_imports_go_one_way() -> None:
    wrong = [f"{m} -> {t}" for m, targets in import_graph().items() for t in sorted(targets)
             if layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)]]
    assert not wrong, "imports that run back up: " + "; ".join(wrong)


def test_no_import_loops() -> None:
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not loops, f"import loops: {loops}"


@pytest.mark.parametrize("package", [*PACKAGES, "perf"])
def test_modules_and_functions_stay_readable(package: str) -> None:
    long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 600:
            long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {size} lines")
    assert not long, "; ".join(long)


def test_the_graph_sees_in_function_imports() -> None:
    """The check can fail: a deferred import is an edge like any other."""
    assert "benchmark.validation" in import_graph()["benchmark.overrides"]
    assert layer("benchmark.train.engine") == "train" and layer("benchmark.store") == "base"
