"""Layout check of a real data set: files per split against the official counts, image/label
pairing, then sizes and label values on a sample of pairs (or all of them).

`check_dataset` builds a printable report (the `python -m benchmark.datasets check` command);
`quick_check` is its cheap part (root, layout, pairing; no image is decoded), which the
training entry point runs before any job and which raises one DataError on the first problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.datasets.base import DataError, DatasetDef, NativeSource, Source, decode_item

MAX_LISTED = 10  # problems printed per split before "... and N more"


@dataclass
class Report:
    """Lines of (level, text) with level ok | warn | error; `ok` when there is no error."""

    title: str
    lines: list[tuple[str, str]] = field(default_factory=list)

    def add(self, level: str, text: str) -> None:
        self.lines.append((level, text))

    @property
    def errors(self) -> list[str]:
        return [t for level, t in self.lines if level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        out = [self.title] + [f"  {level:<5} {text}" for level, text in self.lines]
        n = len(self.errors)
        out.append("OK" if not n else f"FAILED: {n} problem(s)")
        return "\n".join(out)


def open_source(definition: DatasetDef, root: Path, split: str,
                fmt: str) -> tuple[Source, list[str]]:
    """The split's source and the pairing problems found while listing it."""
    definition.check_split(split)
    if fmt == "hf":
        from benchmark.datasets.hf import HFSource, open_split

        return HFSource(open_split(definition, root, split), f"{root} [{split}]"), []
    listing = definition.list_split(root, split)
    return NativeSource(definition, listing.pairs), listing.problems


def resolve_root(definition: DatasetDef, root: str = "", fmt: str = "native") -> Path:
    """The data set's folder for `fmt` (native layout or Hugging Face copy)."""
    if fmt == "hf":
        from benchmark.datasets.hf import find_hf_root

        return find_hf_root(definition, root)
    if fmt != "native":
        raise DataError(f"unknown data format {fmt!r}; set data.format to native or hf")
    from benchmark.datasets.roots import find_root

    return find_root(definition, root)


def sample_indices(n: int, k: int) -> list[int]:
    """k indices spread evenly over [0, n) (all of them when k >= n), first and last included."""
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def check_dataset(definition: DatasetDef, root: str = "", fmt: str = "native",
                  full: bool = False, per_split: int = 8, ignore_index: int = 255,
                  splits: tuple[str, ...] | None = None, progress: bool = False) -> Report:
    """The full report: layout, counts, pairing, then decoded sizes / values of sampled pairs."""
    report = Report(f"{definition.title} ({fmt} format)")
    try:
        folder = resolve_root(definition, root, fmt)
    except DataError as err:
        report.add("error", str(err))
        return report
    report.title = f"{definition.title} at {folder} ({fmt} format)"
    for split in splits or definition.splits:
        try:
            source, problems = open_source(definition, folder, split, fmt)
        except DataError as err:
            report.add("error", f"{split}: {err}")
            continue
        n, expected = len(source), definition.split_counts[split]
        if n == expected:
            report.add("ok", f"{split}: {n} pairs (official count {expected})")
        else:
            report.add("warn", f"{split}: {n} pairs, the official release has {expected}; "
                               f"an incomplete download or a subset")
        for text in problems[:MAX_LISTED]:
            report.add("error", f"{split}: {text}")
        if len(problems) > MAX_LISTED:
            more = len(problems) - MAX_LISTED
            report.add("error", f"{split}: ... and {more} more unpaired files")
        if n == 0:
            report.add("error",
                       f"{split}: no image/label pairs found; expected {definition.layout}")
            continue
        indices = list(range(n)) if full else sample_indices(n, per_split)
        bad = 0
        for i in tqdm(indices, desc=f"check {split}", disable=not progress, leave=False):
            try:
                decode_item(source.load(i), definition, ignore_index)
            except DataError as err:
                bad += 1
                if bad <= MAX_LISTED:
                    report.add("error", f"{split}: {err}")
        if bad > MAX_LISTED:
            report.add("error", f"{split}: ... and {bad - MAX_LISTED} more bad pairs")
        what = "all" if full else "a sample of"
        if not bad:
            report.add("ok", f"{split}: {what} {len(indices)} pairs decoded: sizes match, "
                             f"label values valid")
    return report


def check_classes(spec: Any, definition: DatasetDef) -> None:
    """DataError when the spec's class count is not the data set's."""
    if spec.num_classes != definition.num_classes:
        raise DataError(f"data.num_classes is {spec.num_classes} but {definition.title} has "
                        f"{definition.num_classes} classes; set data.num_classes="
                        f"{definition.num_classes}")


def open_checked(spec: Any, definition: DatasetDef, split: str) -> Source:
    """The split's source; DataError on the first unpaired file or an empty split."""
    folder = resolve_root(definition, spec.root, spec.format)
    source, problems = open_source(definition, folder, split, spec.format)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; full report: python -m benchmark.datasets "
                        f"check {definition.name} --root {folder}")
    if len(source) == 0:
        raise DataError(f"{definition.title} at {folder}: split {split!r} has no image/label "
                        f"pairs; expected {definition.layout}")
    return source


def quick_check(spec: Any, definition: DatasetDef) -> None:
    """Cheap check before training: num_classes, root, layout and pairing of the two splits used.

    Raises one DataError on the first problem; decodes no image.
    """
    check_classes(spec, definition)
    for split in dict.fromkeys(("train", spec.val_split)):
        open_checked(spec, definition, split)
