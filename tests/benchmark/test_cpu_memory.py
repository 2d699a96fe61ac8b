"""A CPU run's allocator settings: glibc keeps freed memory, torch gives large tensors huge
pages; each checked by the page faults it saves, in a fresh interpreter (both are
process-wide, and torch reads its huge-page setting once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.cpu_memory import HUGE_PAGES_ENV, system_huge_pages

ROOT = Path(__file__).resolve().parents[2]
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc: Linux only")

FAULT_PROBE = """
import ctypes, resource, sys
import torch
from benchmark.cpu_memory import (allocator_note, ask_for_huge_pages, huge_pages_in_use,
                                        keep_freed_memory)
mode, mib = sys.argv[1], int(sys.argv[2])
if mode == "default":  # glibc's starting mmap threshold, held fixed (its dynamic raise varies)
    assert ctypes.CDLL("libc.so.6").mallopt(-3, 128 << 10) == 1
else:
    assert keep_freed_memory()
    before_asking = allocator_note()  # must not probe (and so lock huge pages off) unasked
    if mode == "huge":
        ask_for_huge_pages()
    print(before_asking, "|", allocator_note(), "|", huge_pages_in_use())
sizes = [(i % 7 + 1) * mib << 18 for i in range(20)]  # float32: 1-7 x `mib` MiB buffers
def steps():
    for _ in range(4):
        live = [torch.ones(n) for n in sizes]  # forward: allocate and touch
        while live:  # backward: free in reverse
            live.pop()
steps()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(mode: str, mib: int, huge_pages_env: str | None = None) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_ENV}
    if huge_pages_env is not None:
        env[HUGE_PAGES_ENV] = huge_pages_env
    out = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode, str(mib)], capture_output=True,
                         text=True, check=True, cwd=ROOT, env=env).stdout.splitlines()
    return int(out[-1]), out[0].split(" | ") if len(out) > 1 else []


@LINUX
def test_keeping_freed_memory_ends_the_page_faults_of_repeated_steps() -> None:
    """Steps that allocate and free the same 4-28 MiB buffers fault on every page with glibc's
    starting mmap threshold (its default raises it dynamically, which ends the faults in some
    processes and not in others) and (nearly) not at all after `keep_freed_memory()`."""
    default, _ = probe("default", 4)
    kept, said = probe("kept", 4)
    # kept is 0 in most processes; once 6144 of 315472 (something else in the process faulted)
    assert default > 50_000 and kept < 10_000
    assert all(note.startswith("glibc keeps freed memory; ") for note in said[:2])


@LINUX
@pytest.mark.skipif(system_huge_pages() not in ("madvise", "always"),
                    reason="the kernel gives no transparent huge pages here")
def test_huge_pages_end_most_page_faults_of_buffers_above_glibcs_heap() -> None:
    """Buffers over glibc's 32 MiB heap limit are mapped fresh on every allocation even with
    freed memory kept: each of their 4 KiB pages faults, every step. With huge pages asked for
    (before torch's first tensor) they fault once per 2 MiB (but at each buffer's ends,
    which torch does not align to 2 MiB: up to 1024 faults a buffer); without the request, or with
    THP_MEM_ALLOC_ENABLE=0 in the environment, the note says no huge pages."""
    if system_huge_pages() == "always":
        pytest.skip("the kernel gives huge pages unasked (mode 'always'): nothing to compare")
    kept, said_kept = probe("kept", 40)
    huge, said_huge = probe("huge", 40)
    refused, said_refused = probe("huge", 40, huge_pages_env="0")
    pages = 4 * sum((i % 7 + 1) * 40 << 20 for i in range(20)) // 4096
    assert said_huge == ["glibc keeps freed memory; no huge pages",
                         "glibc keeps freed memory; huge pages for tensors of 2 MiB or more",
                         "True"]
    assert said_kept[2] == said_refused[2] == "False"
    assert huge < pages // 10  # 44992 of 3153920 on the Intel VM (fewer if memory is fragmented)
    assert kept > pages // 2 and refused > pages // 2


@pytest.mark.parametrize("setting, mode, asked, in_use", [
    ("[always] madvise never\n", "always", "0", True),  # the kernel gives them unasked
    ("always madvise [never]\n", "never", "1", False),  # the kernel refuses them
    ("always [madvise] never\n", "madvise", "0", False)])  # madvise, not asked
def test_the_kernels_mode_and_the_request_decide_without_a_probe(tmp_path, monkeypatch, setting,
                                                                 mode, asked, in_use) -> None:
    """Where the kernel's mode or the request settles it, no probe tensor is made (one made
    before the request would lock huge pages off); a missing setting file reads as 'absent'."""
    import benchmark.cpu_memory as memory

    (tmp_path / "enabled").write_text(setting)
    monkeypatch.setattr(memory, "THP_SETTING", tmp_path / "enabled")
    monkeypatch.setattr(memory, "advised_for_huge_pages", lambda address: pytest.fail("probed"))
    monkeypatch.setenv(HUGE_PAGES_ENV, asked)
    assert memory.system_huge_pages() == mode and memory.huge_pages_in_use() is in_use
    monkeypatch.setattr(memory, "THP_SETTING", tmp_path / "missing")
    assert memory.system_huge_pages() == "absent" and not memory.huge_pages_in_use()


def test_a_mapping_without_the_advice_is_not_taken_for_huge_pages() -> None:
    """The smaps reading behind the records' note: memory nobody advised (a Python object, an
    address no mapping holds) is not reported as huge pages."""
    from benchmark.cpu_memory import advised_for_huge_pages

    assert not advised_for_huge_pages(id(object()))
    assert not advised_for_huge_pages(0)


def test_the_cli_asks_for_huge_pages_for_its_processes_unless_told_not_to(tmp_path,
                                                                         monkeypatch) -> None:
    monkeypatch.delenv(HUGE_PAGES_ENV, raising=False)
    assert main(["--grid", "smoke", "--dry-run", "--results", str(tmp_path)]) == 0
    assert os.environ.get(HUGE_PAGES_ENV) == ("1" if sys.platform.startswith("linux") else None)
    monkeypatch.setenv(HUGE_PAGES_ENV, "0")
    assert main(["--grid", "smoke", "--dry-run", "--results", str(tmp_path)]) == 0
    assert os.environ[HUGE_PAGES_ENV] == "0"
