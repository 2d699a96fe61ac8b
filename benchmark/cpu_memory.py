"""Where a CPU run's tensors get their memory: glibc keeps freed buffers, torch asks for huge pages.

A training step frees and reallocates the same activation buffers every step. With glibc's
defaults part of that memory goes back to the OS and returns as page faults on the next step;
`keep_freed_memory` keeps it. glibc serves at most 32 MiB from its heap, so the largest buffers
(150-class logits at full resolution, the prototype head's pixel-prototype similarities) are
still mapped fresh and faulted in page by page every step. torch's THP_MEM_ALLOC_ENABLE gives
every tensor of 2 MiB or more transparent huge pages (madvise): one fault per 2 MiB instead of
per 4 KiB but at the unaligned ends (about 1000 instead of 24000 for a 98 MB buffer).
docs/performance.md has the figures.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# glibc's mallopt parameters, and the values a CPU run sets (keep_freed_memory)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED = {M_MMAP_THRESHOLD: 32 << 20,  # glibc's maximum: buffers up to 32 MiB from the heap
              M_TRIM_THRESHOLD: 1 << 30,  # return freed heap memory to the OS only above 1 GiB
              M_TOP_PAD: 256 << 20}  # grow the heap in steps of 256 MiB (address space only)
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"  # read by torch once, at its first CPU tensor
HUGE_PAGE = 2 << 20  # the smallest tensor torch asks huge pages for
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
SMAPS = Path("/proc/self/smaps")
_KEPT = {"freed": False}  # whether keep_freed_memory succeeded in this process


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the OS (process-wide;
    False where the C library is not glibc): 16k-70k fewer page faults per MiT-B0 step of
    figure 1, about a tenth of its time. The cost: up to 1 GiB of freed memory stays resident."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        kept = all(libc.mallopt(param, value) == 1 for param, value in KEEP_FREED.items())
    except (OSError, AttributeError):
        return False
    _KEPT["freed"] = _KEPT["freed"] or kept
    return kept


def ask_for_huge_pages() -> None:
    """Ask torch for huge pages for tensors of 2 MiB or more, unless the environment already
    says (THP_MEM_ALLOC_ENABLE=0 keeps them off). torch reads the setting once, at the
    process's first CPU tensor of any size: call this before any; child processes inherit it."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault(HUGE_PAGES_ENV, "1")


def system_huge_pages() -> str:
    """The kernel's transparent huge page mode (always, madvise or never; 'absent' off Linux)."""
    try:
        text = THP_SETTING.read_text()
    except OSError:
        return "absent"
    chosen = [word for word in text.split() if word.startswith("[")]
    return chosen[0].strip("[]") if chosen else "absent"


def huge_pages_in_use() -> bool:
    """Whether this process's tensors of 2 MiB or more get huge pages: the kernel's mode is
    'always', or it is 'madvise' and a fresh probe tensor lies in a mapping advised for them
    (/proc/self/smaps). Without the setting in the environment it does not probe, so it never
    turns them off by allocating first."""
    mode = system_huge_pages()
    if mode == "always":
        return True
    if mode != "madvise" or os.environ.get(HUGE_PAGES_ENV) != "1":
        return False
    import torch

    probe = torch.empty(HUGE_PAGE, dtype=torch.uint8)
    return advised_for_huge_pages(probe.data_ptr())


def advised_for_huge_pages(address: int) -> bool:
    """Whether the mapping that holds `address` was advised for huge pages (VmFlags 'hg')."""
    try:
        lines = SMAPS.read_text().splitlines()
    except OSError:
        return False
    inside = False
    for line in lines:
        first = line.split(" ", 1)[0]
        if not first.endswith(":"):  # a mapping's header: start-end perms offset ...
            start, _, end = first.partition("-")
            inside = int(start, 16) <= address < int(end, 16)
        elif inside and first == "VmFlags:":
            return "hg" in line.split()[1:]
    return False


def tune_cpu_allocator() -> None:
    """Both settings of a CPU run (huge pages only where still in time)."""
    ask_for_huge_pages()
    keep_freed_memory()


def allocator_note() -> str:
    """What this process's CPU allocator does, in words, for records and figure headers."""
    parts = ["glibc keeps freed memory" if _KEPT["freed"] else "glibc's defaults"]
    parts.append("huge pages for tensors of 2 MiB or more" if huge_pages_in_use()
                 else "no huge pages")
    return "; ".join(parts)
