"""The deterministic parts of perf/: references, timing helpers, generated records.

No timing is asserted: speed is measured by `python -m perf.run`, not by tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.cpu_memory import HUGE_PAGES_ENV, system_huge_pages
from perf.common import (
    Table,
    Timings,
    alternate,
    paired_ratio,
    round_order,
    verdict,
)
from perf.head_scaling import (
    batched,
    check_reference,
    clustering_inputs,
    linear_fit,
    make_head,
    per_class_reference,
)
from perf.measure import count_flops, peak_memory, tensor_bytes

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- head scaling


def test_per_class_loop_reference_equals_the_batched_head_code() -> None:
    check_reference()  # raises on any difference


@pytest.mark.parametrize("classes,k,correct_share", [(5, 1, 1.0), (9, 6, 0.3), (4, 3, 0.0)])
def test_reference_agrees_with_absent_classes_and_no_correct_pixel(classes, k, correct_share):
    x = clustering_inputs(classes, k, 8, 300, seed=classes)
    keep = x["labels"] != 1  # class 1 absent
    x = {**x, "own": x["own"][keep], "labels": x["labels"][keep], "emb": x["emb"][keep],
         "correct": torch.rand(int(keep.sum()), generator=torch.Generator().manual_seed(0))
         < correct_share}
    head = make_head(classes, k, 8, torch.device("cpu"), projection="none",
                     prototypes=x["prototypes"])
    head.gamma = 0.3
    ref_assign, ref_protos = per_class_reference(x["own"], x["labels"], x["emb"], x["correct"],
                                                 x["prototypes"], gamma=0.3)
    assign = batched(head, x["own"], x["labels"], x["emb"], x["correct"])
    assert torch.equal(assign, ref_assign)
    torch.testing.assert_close(head.prototypes, ref_protos, atol=1e-5, rtol=1e-4)
    assert torch.equal(head.prototypes[1], x["prototypes"][1])  # absent class: unchanged
    if correct_share == 0.0:
        assert torch.equal(head.prototypes, x["prototypes"])  # nothing predicted right


def test_linear_fit_recovers_exact_coefficients() -> None:
    points = [(n, ck, n * (3e-6 + 2e-9 * ck)) for n in (100, 200) for ck in (1, 10, 500)]
    a, b, r2 = linear_fit(points)
    assert a == pytest.approx(3e-6) and b == pytest.approx(2e-9)
    assert r2 == pytest.approx(1.0)


# ----------------------------------------------------------------------------- timing helpers


def test_alternate_warms_up_then_reverses_the_order_every_other_round() -> None:
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    times = alternate(fns, repeats=4, warmup=2)
    assert calls[:6] == ["a", "b", "c", "a", "b", "c"]  # warm-up
    assert calls[6:] == [n for round_ in round_order("abc", 4) for n in round_]
    assert calls[6:9] == ["a", "b", "c"] and calls[9:12] == ["c", "b", "a"]
    assert all(len(t.seconds) == 4 for t in times.values())


def test_medians_and_paired_ratio() -> None:
    a = Timings("a", [2.0, 4.0, 100.0])  # one outlier round
    b = Timings("b", [1.0, 2.0, 2.0])
    assert a.median == 4.0 and b.median == 2.0
    assert paired_ratio(a, b) == 2.0  # median of 2, 2, 50
    assert Timings("x", [1.0, 2.0, 3.0, 4.0]).spread == (1.25, 3.75)


def test_verdicts_and_table_columns() -> None:
    assert verdict(1.05, 1.10) == "PASS" and verdict(1.2, 1.10) == "FAIL"
    assert verdict(2.0, 1.0, better="higher") == "PASS" and verdict(float("nan"), 1.0) == "n/a"
    t = Table(["x", "Verdict (time)", "Verdict (mem)"], [["a", "PASS", "FAIL"], ["b", "–", "PASS"]])
    assert t.verdicts == ["PASS", "FAIL", "PASS"]


def test_cpu_peak_memory_counts_what_the_call_allocates_and_the_resident_tensors() -> None:
    resident = torch.zeros(2_000_000, dtype=torch.uint8)

    def fn() -> None:
        x = torch.ones(1_000_000)  # 4 MB, freed at return
        x.sum()

    peak = peak_memory(fn, torch.device("cpu"), lambda: [resident, resident[10:]])
    assert peak.method == "cpu-profiler"
    assert 6_000_000 <= peak.bytes <= 6_000_000 + 65_536
    assert tensor_bytes([resident, resident[5:]]) == 2_000_000  # a view counts once


def test_flop_count_of_a_matmul() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


# ----------------------------------------------------------------------------- overhead


def test_generated_records_are_valid_store_records(tmp_path) -> None:
    from benchmark.cli import write_tables
    from benchmark.launch.runs import run_state
    from benchmark.store import ResultsLayout, load_records, read_record
    from perf.overhead import generate_records

    grid, n = generate_records(tmp_path, "smoke", n=23, failed_every=10)
    paths = sorted((tmp_path / "runs" / "smoke").glob("*/seed*.json"))
    assert len(paths) == n == 23
    records = load_records(ResultsLayout(tmp_path), "smoke")
    assert sum(r.status == "failed" for r in records) == 2
    keys = {c.key for c in grid.cells}
    for path in paths:
        record = read_record(path)
        assert record.cell_key in keys and path.parent.name == record.cell_key
        assert path.name == f"seed{record.seed}.json"
        if record.status == "done":
            assert run_state(path).done
            m = record.metrics
            assert 0 <= m.miou <= 100 and len(m.per_class_iou) == 6
            assert len(record.confusion) == 6
    table = write_tables(grid, list(grid.cells), ResultsLayout(tmp_path))
    assert grid.cells[0].row in table
    assert (tmp_path / "tables" / "smoke.csv").exists()
    assert json.loads(paths[0].read_text())  # plain JSON


# ----------------------------------------------------------------------------- metric


def test_metric_benchmark_inputs_match_torchmetrics() -> None:
    pytest.importorskip("torchmetrics")
    from perf.metric import check_identical, make_batches

    batches = make_batches(150, 2, 2, 64, torch.device("cpu"))
    equal, max_diff = check_identical(batches, 150, torch.device("cpu"))
    assert equal and max_diff < 1e-4


# ----------------------------------------------------------------------------- suite changes


def test_light_commands_do_not_import_model_libraries() -> None:
    """`run_all.py --dry-run` must not pay for timm/torchvision/transformers (seconds)."""
    code = ("import sys, benchmark.cli, benchmark.launch.preflight, benchmark.datasets, methods, "
            "experiments; print(sorted(m for m in ('timm', 'torchvision', 'transformers', "
            "'pandas', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("grid", ["smoke", "camvid"])
def test_a_warm_dry_run_imports_no_torch(grid: str, tmp_path) -> None:
    """`import torch` alone takes longer than a dry run may (2 s): once the memory estimates
    are cached, `run_all.py --dry-run` must never import it (nor PIL, the models or the data
    loaders). numpy and scipy.special (0.3 s together) compute the seed plan's power; the
    heavy scipy.stats (1.5 s) stays out."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['run_all.py', '--grid', '{grid}', '--dry-run', '--results', "
            f"{str(tmp_path / 'results')!r}]\n"
            "try:\n    runpy.run_path('run_all.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            # methods' model code; the torch-free head options (methods/heads/options.py) may load
            "heavy = ('torch', 'scipy.stats', 'PIL', 'methods.segmentor', 'methods.heads.base', "
            "'methods.heads.registry', 'benchmark.datasets')\n"
            "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))\n")
    env = {**os.environ, "PROTOSEG_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, env=env, check=True).stdout for _ in range(2)]
    assert (tmp_path / "cache" / "memory_estimates.json").exists()  # the first run filled it
    assert "IMPORTED []" in runs[1], runs[1][-500:]


def test_memory_estimate_is_cached_on_disk(tmp_path, monkeypatch) -> None:
    import benchmark.launch.memory as plan
    from experiments.smoke import smoke

    monkeypatch.setenv("PROTOSEG_CACHE", str(tmp_path))
    cell = smoke().cells[0]
    monkeypatch.setattr(plan, "_ESTIMATES", {})
    first = plan.estimate_memory(cell)
    assert (tmp_path / "memory_estimates.json").exists()

    def no_model(*args):
        raise AssertionError("the cached estimate should have been used")

    monkeypatch.setattr(plan, "_ESTIMATES", {})
    monkeypatch.setattr(plan, "_meta_estimate", no_model)
    again = plan.estimate_memory(cell)
    assert (again.gb, again.params) == (first.gb, first.params)

    monkeypatch.setenv("PROTOSEG_CACHE", "off")
    assert plan.estimate_cache_path() is None


def test_loader_workers_and_labelled_batches(monkeypatch) -> None:
    from benchmark.train.data import labelled_batches, loader_workers

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(0) == 0 and loader_workers(3) == 3
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert loader_workers(-1) == (0 if cores <= 2 else 1 if cores <= 4 else min(4, cores // 2))
    assert loader_workers(-1, world_size=cores) == 0  # one core per process: nothing to overlap
    assert list(labelled_batches([1, 2, 3])) == [1, 2, 3]


@pytest.mark.parametrize("cpus, slurm_per_task, local, world, workers", [
    (8, "8", None, 8, 4),      # srun bound each of 8 tasks to its 8 CPUs: all 8 are its own
    (64, "8", None, 8, 4),     # one cgroup for the job's 64 CPUs, 8 tasks share them
    (64, None, "8", 16, 4),    # 2 nodes x 8 processes: 64 cores shared by the node's 8
    (4, None, None, 1, 1),
    (16, None, None, 8, 0),    # 2 cores per process: nothing to overlap
    (16, "16", "4", 4, 1),     # torchrun's 4 processes inside one 16-CPU task share them
])
def test_loader_workers_count_the_cores_of_this_process(monkeypatch, cpus, slurm_per_task,
                                                        local, world, workers) -> None:
    """The auto worker count under SLURM: a task bound to its --cpus-per-task keeps them all
    (dividing them by the world size again left 0 workers on 8-GPU nodes)."""
    from benchmark.train.data import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    torchrun = {"TORCHELASTIC_RUN_ID": "1"} if (slurm_per_task and local) else {}
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for name, value in (("SLURM_CPUS_PER_TASK", slurm_per_task), ("LOCAL_WORLD_SIZE", local),
                        *torchrun.items()):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert loader_workers(-1, world_size=world) == workers


def test_whole_run_shares_weight_the_first_epoch_by_its_steps() -> None:
    from perf.profile_step import run_overhead, run_share

    # 10 of 40 steps generate their items (wait 20 of 120 ms), the other 30 wait 0 of 100 ms
    assert run_share((20.0, 0.0), (120.0, 100.0), 10, 40) == pytest.approx(100 * 200 / 4200)
    # against the same steps with free loading (100 and 100 ms): 200 ms extra of 4200
    assert run_overhead(120.0, 100.0, (100.0, 100.0), 10, 40) == pytest.approx(100 * 200 / 4200)
    # a run shorter than one epoch is all first epoch
    assert run_share((10.0, 0.0), (100.0, 50.0), 64, 8) == pytest.approx(10.0)


def test_peer_draws_serve_mmseg_the_suites_numbers_and_restore_numpy() -> None:
    import numpy as np

    from benchmark.datasets.mmseg_pipeline import TorchDraws
    from perf.peer import SharedDraws

    before = np.random.randint
    torch.manual_seed(5)
    ours = [TorchDraws().random(), TorchDraws().randint(0, 7), TorchDraws().uniform(2, 3),
            TorchDraws().randint(0, 2)]
    torch.manual_seed(5)
    with SharedDraws():
        theirs = [np.random.random_sample(), np.random.randint(0, 7), np.random.uniform(2, 3),
                  np.random.randint(2)]  # randint(n): MMSeg's coins
    assert theirs == ours and np.random.randint is before


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # MMSeg's deprecation notes
def test_peer_figure_runs_every_row_and_leaves_the_process_as_it_found_it() -> None:
    """`python -m perf.peer --quick`'s rows (each checked for equal losses or predictions before
    it is timed); threads and TF32 flags restored afterwards (no timing asserted)."""
    pytest.importorskip("mmseg")
    from perf.peer import run

    threads, matmul = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        report = run(quick=True, device=torch.device("cpu"))
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
    stages = [row[0] for row in report.tables[0].rows]
    assert stages == ["training step", "training step", "training pipeline",
                      "whole-image inference", "sliding inference"]
    assert torch.get_num_threads() == threads


@pytest.mark.filterwarnings("ignore:`reduce_zero_label` will be deprecated")
def test_peer_pipeline_sides_make_the_same_samples(tmp_path) -> None:
    """Two tiny pairs through the suite's staged pipeline and MMSeg's train_pipeline (the
    check `perf.peer` runs before timing raises when they differ)."""
    pytest.importorskip("mmseg")
    from perf.peer import pipeline_fns

    fns, worst = pipeline_fns(tmp_path, 2, quick=True)
    assert worst <= 1 and set(fns) == {"suite", "mmseg"}
    assert len(fns["suite"]()) == len(fns["mmseg"]()) == 2


def test_inventory_finds_the_ops_without_a_deterministic_cuda_kernel_and_the_swap_removes_them(
) -> None:
    """The smoke cell's step upsamples (bilinear backward) and reduces a cross-entropy (NLL mean),
    both on torch's list, and its MiT backbone's fused attention has a backward; under
    methods.deterministic's swaps none is left."""
    from experiments.smoke import smoke
    from perf.cuda_ops import nondeterministic_cuda_ops

    ours = smoke().cells[-1]
    found = nondeterministic_cuda_ops(ours)
    assert found.get("upsample_bilinear2d_backward", 0) >= 1
    assert found.get("nll_loss2d_forward") == 1
    assert found.get("_scaled_dot_product_flash_attention_for_cpu_backward", 0) >= 1  # MiT's
    assert nondeterministic_cuda_ops(ours, swapped=True) == {}


def test_determinism_figure_names_the_ops_torch_warns_about() -> None:
    """A real warn-only alert (put_ without accumulate alerts on the CPU too) is parsed to its op
    name; other warnings are not."""
    import warnings

    from perf.determinism import nondeterministic_warnings

    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.zeros(4).put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
            warnings.warn("an unrelated warning")
            warnings.warn("... this operation is not deterministic because it uses CuBLAS and "
                          "you have CUDA >= 10.2 ...")  # torch's cuBLAS alert, as CUDA words it
            warnings.warn("Memory Efficient attention defaults to a non-deterministic algorithm. "
                          "To explicitly enable ...")  # libtorch_cuda's words, warn_only
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    names = nondeterministic_warnings(caught)
    assert len(names) == 3 and "put_" in names[0] and names[1].startswith("cuBLAS")
    assert names[2].startswith("scaled_dot_product_attention")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_header_names_the_allocator_setting_of_the_figures(tmp_path) -> None:
    """`python -m perf.<name>` on the CPU sets the allocator as CPU runs do before it reads the
    machine, so the header it appends names that setting (fresh interpreter: the setting is
    process-wide)."""
    out = tmp_path / "RESULTS.md"
    script = ("import functools, sys, perf.common as c\n"
              "print(c.machine_line(c.machine()))\n"
              "c.append_results = functools.partial(c.append_results, path=c.Path(sys.argv[1]))\n"
              "c.standalone('x', lambda quick, device: c.Report('x', 'x', []), [])\n")
    env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_ENV}
    printed = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True,
                             text=True, check=True, cwd=ROOT,
                             env={**env, "CUDA_VISIBLE_DEVICES": ""}).stdout
    assert printed.splitlines()[0].endswith("CPU allocator: the C library's defaults")
    granted = system_huge_pages() in ("always", "madvise")
    huge = "huge pages for tensors of 2 MiB or more" if granted else "no huge pages"
    assert (f"CPU allocator: glibc keeps freed memory; {huge}, as the suite's CPU runs."
            in out.read_text())


def test_sigterm_keeps_the_figures_that_finished(tmp_path) -> None:
    """`python -m perf.run` stopped by SIGTERM (gpu_check.sh's time limits) appends the figures
    finished before it, says which one it stopped in, runs no more and exits 1."""
    out = tmp_path / "RESULTS.md"
    script = ("import functools, os, signal, sys, time, types\n"
              "import perf.common as c, perf.run as r\n"
              "r.append_results = functools.partial(c.append_results, path=c.Path(sys.argv[1]))\n"
              "def slow(quick, device):\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(30)\n"
              "def never(quick, device):\n"
              "    raise AssertionError('ran after the stop')\n"
              "figures = {'fast': lambda quick, device: c.Report('fast', 'Fast figure', []),\n"
              "           'slow': slow, 'never': never}\n"
              "for name, run in figures.items():\n"
              "    sys.modules['perf.' + name] = types.SimpleNamespace(run=run)\n"
              "r.BENCHMARKS = tuple(figures)\n"
              "sys.exit(r.main(['--quick', '--device', 'cpu']))\n")
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 1, done.stderr
    text = out.read_text()
    assert "Fast figure" in text and "stopped by SIGTERM during slow" in text
    assert "ran after the stop" not in done.stdout + done.stderr


def test_cpu_profile_figure_skips_on_a_gpu_machine(monkeypatch) -> None:
    """Figure 6 times CPU-side ranges; on a GPU machine the engine would train on the GPU, so
    the figure says it skipped and how to run it, instead of timing kernel launches."""
    from perf import profile_step

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    report = profile_step.run(quick=True)
    assert report.tables == [] and "CUDA_VISIBLE_DEVICES=" in report.notes[0]


def test_determinism_figure_repeats_and_resumes_and_stops_on_an_outside_sigterm(
        monkeypatch) -> None:
    """The figure gpu_check.sh runs, on the CPU (4 steps at 32x32, fp32): both settings repeat
    and resume bit for bit. A SIGTERM it did not send itself (the script's time limit) during
    the interrupted run stops the figure instead of being taken for its planned stop."""
    import signal

    import benchmark.train.engine as loop
    from benchmark.stops import Interrupted
    from perf import determinism

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # the figure sets it for the process
    rows = determinism.run(quick=True, device=torch.device("cpu")).tables[0].rows
    assert [row[1:4] for row in rows] == [["off", "yes", "yes"], ["on", "yes", "yes"]]

    real = loop.set_lr

    def outside(optimizer, cell, step):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(optimizer, cell, step)

    monkeypatch.setattr(loop, "set_lr", outside)
    with pytest.raises(Interrupted):
        determinism._resumed(determinism._cell(False, False, True), stop_at=3)


def test_gpu_check_script_parses_and_lists_its_parts() -> None:
    """perf/gpu_check.sh --dry: the commands a GPU machine (and a CPU one) would run."""
    import perf.determinism  # noqa: F401  (the modules it runs import)
    import perf.step_options  # noqa: F401

    script = ROOT / "perf" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)

    def dry(gpu: str) -> str:
        env = {**os.environ, "GPU_CHECK_ASSUME_GPU": gpu}
        return subprocess.run(["bash", str(script), "--dry"], capture_output=True, text=True,
                              check=True, env=env).stdout

    gpu, cpu = dry("1"), dry("0")
    for amp in ("false", "true"):
        assert f"--grid table1 --preflight --set model.pretrained=none --set train.amp={amp}" in gpu
    assert "-m perf.run --only train_step --only inference --only peer" in gpu
    figures, determinism = gpu.splitlines()[2:]
    assert "--quick" not in figures and "perf.determinism --quick" in determinism
    assert "--no-append" not in gpu
    limits = [part.split("timeout ")[1].split(" ")[0] for part in gpu.splitlines()]
    # each part's limit plus the grace before SIGKILL: all of them fit the 8-minute budget
    assert sum(int(s[:-1]) for lim in limits for s in lim.split("+")) < 8 * 60, limits
    assert "--grid smoke" in cpu and cpu.count("--quick --no-append") == 2


STUB_PYTHON = """#!/usr/bin/env bash
case "$*" in
  "-m pip install"*) echo "$*" > "$(dirname "$0")/pip.args" ;;
  "-c import torch;"*) [ -n "${NO_TORCH:-}" ] && exit 1; echo 0 ;;
  "-c import submitit") exit 1 ;;
  "run_all.py"*) echo "starting"; echo "grid smoke: preflight of 1 cells"; echo "  -> ok: step" ;;&
  *) echo "ran: $* with PYTHONPATH=${PYTHONPATH:-}" ;;
esac
"""


def test_gpu_check_installs_carried_wheels_and_hands_over_its_logs(tmp_path) -> None:
    """On a machine without the project's dependencies: the wheels in .whl/ are installed into a
    folder every part then imports from; --out gets RESULTS.md and each part's log (a lent
    machine is given back afterwards); a Python without torch stops it at once (a stub Python
    stands in: nothing heavy runs)."""
    (tmp_path / "perf").mkdir()
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "x-1.0-py3-none-any.whl").write_text("")
    (tmp_path / "perf" / "RESULTS.md").write_text("# results\n")
    script = tmp_path / "perf" / "gpu_check.sh"
    script.write_text((ROOT / "perf" / "gpu_check.sh").read_text())
    stub = tmp_path / "python"
    stub.write_text(STUB_PYTHON)
    (tmp_path / "bin").mkdir()  # a GPU machine's nvidia-smi, here seeing none
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/usr/bin/env bash\nexit 6\n")
    for path in (stub, tmp_path / "bin" / "nvidia-smi"):
        path.chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "PYTHON": str(stub)}

    done = subprocess.run(["bash", str(script), "--append", "--out", "out"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=60)  # relative DIR
    assert done.returncode == 0, done.stdout + done.stderr
    appended = (tmp_path / "out" / "RESULTS.md").read_text()  # the preflights' output, whole
    assert appended.count("grid smoke: preflight of 1 cells\n  -> ok: step") == 2
    assert "starting" not in appended and "### preflight, bf16 autocast (exit 0)" in appended
    site = (tmp_path / "pip.args").read_text().split("--target ")[1].split()[0]
    logs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert logs == ["RESULTS.md", "part0.log", "part1.log", "part2.log", "part3.log"]
    for i in range(4):
        assert f"with PYTHONPATH={site}" in (tmp_path / "out" / f"part{i}.log").read_text()

    missing = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                             env={**env, "NO_TORCH": "1"})
    assert missing.returncode == 2 and "cannot import torch" in missing.stderr
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/usr/bin/env bash\necho GPU 0\n")
    blind = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                           env=env)  # a GPU the stub's torch cannot see: a CPU build of torch
    assert blind.returncode == 2 and "torch does not" in blind.stderr
    for args in (["--out"], ["--out", "--dry"], ["--bogus"]):  # a usage error, nothing run
        wrong = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                               timeout=60, env=env)
        assert wrong.returncode == 2 and wrong.stderr.startswith("usage:") and not wrong.stdout


def test_gpu_wheels_carry_pyprojects_pins() -> None:
    """perf/gpu_wheels.sh downloads the project's own pins, not whatever PyPI has newest: every
    wheel it names that pyproject.toml pins (dependencies, fidelity extra) has that version."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(.+)", spec).groups()
                for spec in project["dependencies"] + project["optional-dependencies"]["fidelity"])
    script = (ROOT / "perf" / "gpu_wheels.sh").read_text()
    wheels = dict(re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s)]*)", script.split("WHEELS=(")[1]))
    shared = set(wheels) & set(pins)
    assert {"transformers", "timm", "submitit", "mmsegmentation", "mmengine"} <= shared
    assert {name: wheels[name] for name in shared} == {name: pins[name] for name in shared}
    assert "torch" not in wheels  # the machine's own build: too large to carry, and CUDA's


def test_upsampling_figure_checks_the_swap_against_torch_and_names_its_forward() -> None:
    """Figure 10's rows: the swap's gradient is checked against torch's before timing, and the
    forward column follows MATMUL_FORWARD_MAX_SIDE (no timing asserted)."""
    from methods.interpolation import MATMUL_FORWARD_MAX_SIDE
    from perf.upsampling import Shape, run, step_fns

    fns, diff, forward = step_fns(Shape("small", 1, 3, 8, 20))
    assert diff < 1e-6 and forward == "matmuls" and set(fns) == {"torch", "swap"}
    torch.testing.assert_close(fns["swap"](), fns["torch"]())
    assert step_fns(Shape("large", 1, 3, MATMUL_FORWARD_MAX_SIDE + 1, 80))[2] == "torch's kernel"
    report = run(quick=True)
    assert len(report.tables[0].rows) == 3
    assert all(row[-1] in ("PASS", "FAIL") for row in report.tables[0].rows)


def test_step_options_on_a_gpu_time_bf16_and_deterministic_at_table_1_scale() -> None:
    """Figure 1's options table: on a GPU bf16 autocast and deterministic kernels, apart and
    together, also for Table 1's HRNetV2-W48 step; compile only on the CPU."""
    from perf.step_options import GPU_SETUPS, SETUPS, options_for, setups_for

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert setups_for(False, cpu) == SETUPS and setups_for(False, cuda) == SETUPS + GPU_SETUPS
    hrnet, mit = GPU_SETUPS[0], SETUPS[0]
    assert (hrnet.backbone, hrnet.size, hrnet.batch) == ("hrnetv2_w48", 512, 2)
    assert list(options_for(hrnet, False, cuda)) == [
        "eager", "channels_last", "bf16 autocast", "deterministic", "bf16 + deterministic"]
    assert options_for(hrnet, False, cuda)["bf16 + deterministic"] == {"amp": True,
                                                                      "deterministic": True}
    assert list(options_for(mit, False, cpu)) == ["eager", "compile"]
    assert list(options_for(mit, True, cpu)) == ["eager"]


def test_step_options_set_the_determinism_flags_per_step_and_restore_them(monkeypatch) -> None:
    """The options alternate in one process: each deterministic step sets torch's and cuDNN's
    flags as the engine does, and every step leaves them as it found them."""
    from benchmark.config import TrainSpec
    from perf.step_options import determinism

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    with determinism(TrainSpec(deterministic=True)):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == before
    with determinism(TrainSpec()):
        assert not torch.are_deterministic_algorithms_enabled()


def test_step_options_show_a_first_loss_beyond_tolerance_instead_of_losing_the_figure() -> None:
    """A first loss off by more than its option's tolerance (1e-4; 2e-2 for bf16) is marked in
    its row and named in a note; the figure, measured already, is kept."""
    from perf.step_options import loss_difference

    assert loss_difference(1.00005, 1.0, bf16=False) == ("5e-05", False)
    assert loss_difference(1.001, 1.0, bf16=False) == ("1e-03 (over 1e-04)", True)
    assert loss_difference(1.01, 1.0, bf16=True) == ("1e-02", False)
    assert loss_difference(1.05, 1.0, bf16=True)[1]


def test_a_first_loss_beyond_tolerance_is_a_failed_verdict_of_the_kept_table(monkeypatch) -> None:
    """In the options table, an option whose first loss is off is timed, shown and counted as
    a FAIL (so `perf.run` exits non-zero in full mode), not raised."""
    import perf.step_options as so

    firsts = {"eager": 2.0, "channels_last": 2.01}  # 5e-3 relative: over 1e-4

    def fake_variant(setup, flags, device):
        name = "channels_last" if flags.get("channels_last") else "eager"
        return (lambda: firsts[name]), firsts[name], 0.0

    monkeypatch.setattr(so, "variant", fake_variant)
    table, notes = so.options_table(quick=True, device=torch.device("cpu"))
    assert [row[1] for row in table.rows] == ["eager", "channels_last"]
    assert table.verdicts == ["PASS", "FAIL"]
    assert "channels_last" in notes[-1] and "FAIL" in notes[-1]


def test_machine_line_names_the_cublas_workspace_setting_on_a_gpu() -> None:
    """Every figure a gpu_check.sh part appends says whether cuBLAS ran with the reproducible
    workspace setting (it affects GPU timings; it is read once per process)."""
    from perf.common import machine, machine_line

    info = {**machine(), "gpu": "NVIDIA H100", "gpu_count": 1, "cuda": "13.0"}
    assert "CUBLAS_WORKSPACE_CONFIG" not in machine_line({**info, "cublas_workspace": None})
    line = machine_line({**info, "cublas_workspace": ":4096:8"})
    assert "1 x NVIDIA H100 (CUDA 13.0, CUBLAS_WORKSPACE_CONFIG=:4096:8)" in line


def test_cross_entropy_figure_checks_the_fused_loss_against_torch() -> None:
    """Figure 11's rows: equal losses and agreeing gradients are checked before timing (no
    timing asserted); a fused loss that differs from torch's stops the figure."""
    from unittest import mock

    from perf.cross_entropy import Shape, run, step_fns

    fns, diff, takes = step_fns(Shape("large", 2, 16, 256))
    assert takes == "fused"
    assert diff < 1e-6 and set(fns) == {"torch", "swap"}
    for ours, ref in zip(fns["swap"](), fns["torch"]()):
        torch.testing.assert_close(ours, ref)
    assert step_fns(Shape("small", 2, 5, 8))[2] == "torch's (not fused)"
    report = run(quick=True)
    fused, small = report.tables[0].rows
    assert fused[5] == "fused" and fused[-1] in ("PASS", "FAIL")
    assert small[5] == "torch's (not fused)" and small[-2:] == ["–", "–"]  # no target: torch's
    with mock.patch("methods.cross_entropy.fused_cross_entropy",
                    lambda x, t, w, ignore_index, reduction: x.sum() * 0 + 1.0):
        with pytest.raises(AssertionError, match="losses differ"):
            step_fns(Shape("large", 2, 16, 256))
