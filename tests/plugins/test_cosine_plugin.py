"""A head from outside the repository: the example plugin package (examples/cosine_head) is
installed into a temporary folder (pip, no network, entry point included) and runs the smoke
grid with tiny settings inline, under the local executor (fresh worker processes) and with
`--ours`, its records naming the package; the baselines keep their keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.catalog import REGISTRIES
from benchmark.overrides import apply_to_grid
from experiments import get_grid
from methods.registry import RegistryError, require_plugins

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "train.iters=2", "--set", "train.batch_size=2", "--set", "data.train_images=4",
        "--set", "data.val_images=2", "--set", "data.image_size=32", "--set",
        "model.decoder_channels=16", "--set", "train.warmup_iters=0", "--no-progress"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose Python path holds the installed example package."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--target", str(target),
                           str(ROOT / "examples" / "cosine_head")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = os.pathsep.join([str(target), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run_all(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_all.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def records(results: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in (results / "runs" / "smoke").glob("*/seed0.json")}


def test_ours_puts_the_plugin_head_in_the_ours_cell_inline(plugin_env, tmp_path) -> None:
    results = tmp_path / "results"
    proc = run_all(plugin_env, "--grid", "smoke", "--ours", "cosine", "--set",
                   "model.head.scale=5", "--results", str(results), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--set model.head.scale=5: 1 of 5 cells" in proc.stdout
    recs = records(results)
    cosine = [r for k, r in recs.items() if k.startswith("cosine-")]
    assert len(cosine) == 1 and len(recs) == 5
    (record,) = cosine
    assert record["cell"]["model"]["head"] == {"name": "cosine", "options": {"scale": 5.0}}
    assert record["plugins"] == [{"kind": "head", "name": "cosine",
                                  "package": "protoseg-cosine-head", "version": "0.1.0",
                                  "module": "cosine_head"}]
    # the baseline is the grid's own cell, byte for byte in key, and the pair is compared
    sets = [a for a in TINY if "=" in a]
    baseline = apply_to_grid(get_grid("smoke").cells, sets)[0][0]  # the same grid, no --ours
    assert baseline.key in recs and recs[baseline.key]["plugins"] == []
    table = (results / "tables" / "smoke.md").read_text()
    assert "| Cosine " in table and "Prototype (K=5)" not in table


def test_the_local_executor_imports_the_plugin_in_fresh_workers(plugin_env, tmp_path) -> None:
    results = tmp_path / "results"
    proc = run_all(plugin_env, "--grid", "smoke", "--set", "model.head.name=cosine",
                   "--executor", "local", "--results", str(results), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(results)
    assert len(recs) == 1  # five cells, one configuration, run once
    (record,) = recs.values()
    assert record["status"] == "done" and record["plugins"][0]["package"] == \
        "protoseg-cosine-head"


def test_a_plugin_module_by_flag_registers_and_a_typo_is_one_line(plugin_env, tmp_path) -> None:
    proc = run_all(plugin_env, "--grid", "smoke", "--plugin", "cosine_head", "--ours", "cosine",
                   "--dry-run", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Cosine" in proc.stdout
    proc = run_all(plugin_env, "--grid", "smoke", "--plugin", "cosine_hed", "--dry-run")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--plugin cosine_hed: cannot import it" in proc.stderr


def test_without_the_package_a_worker_stops_with_one_line_naming_it() -> None:
    plugins = [{"kind": "head", "name": "not_installed_head", "package": "acme-heads",
                "version": "2.0", "module": "acme_heads"}]
    with pytest.raises(RegistryError) as err:
        require_plugins(plugins, REGISTRIES)
    assert "acme-heads 2.0" in str(err.value) and "\n" not in str(err.value)
    assert "pip install" in str(err.value)


def test_an_unknown_head_without_its_plugin_is_one_line(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "run_all.py"), "--grid", "smoke",
                           "--ours", "cosine_not_here", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "unknown head 'cosine_not_here'" in proc.stderr


def test_the_documented_contract_command_runs_on_the_plugins_head(plugin_env) -> None:
    """docs/extending.md: `python -m pytest tests/methods/test_head_contract.py -k cosine`."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rA", "tests/methods/test_head_contract.py", "-k", "cosine"], cwd=ROOT,
                          env=plugin_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert proc.stdout.count("PASSED tests/methods/test_head_contract.py") == 5  # cosine's five
