"""How each pair's seeds were looked at, as the tables need to say it.

Two small JSON files per grid under the results folder (`ResultsLayout.sequential` / `.looks`),
each written whole with `atomic_write`:

- the sequential state of `--seeds auto`: the design (looks, spending), its boundaries, the
  per-run sd and within-seed correlation measured so far, and per pair (keyed by the two cells'
  keys, so other settings are another study) every look taken and the decision;
- the looks log: for each pair, the paired seed counts that any command's tables showed.
  A pair shown at two or more different counts without `--seeds auto` was looked at repeatedly,
  and its fixed-sample 95% interval is not corrected for that: its verdict says so.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from benchmark.config import Cell
from benchmark.sequential import Boundaries, Design, Look
from benchmark.store import Record, ResultsLayout, atomic_write

STATE_SCHEMA = 1


def pair_key(base: Cell, ours: Cell) -> str:
    """A pair's identity across commands: its baseline's and its own cell key."""
    return f"{base.key}/{ours.key}"


@dataclass
class PairState:
    """One pair of a sequential study: the looks taken so far (the last may be the decision)."""

    pair: str  # the grid's pair id
    row: str  # the "ours" row, for messages
    gain: float | None  # the paper's gain; None: judged against zero
    looks: list[Look] = field(default_factory=list)

    @property
    def decision(self) -> Look | None:
        return self.looks[-1] if self.looks and self.looks[-1].decided else None

    def to_json(self) -> dict:
        return {"pair": self.pair, "row": self.row, "gain": self.gain,
                "looks": [look.to_json() for look in self.looks]}

    @classmethod
    def from_json(cls, data: dict) -> PairState:
        gain = data.get("gain")
        return cls(str(data["pair"]), str(data["row"]), None if gain is None else float(gain),
                   [Look.from_json(look) for look in data.get("looks", [])])


@dataclass
class SequentialState:
    """A grid's `--seeds auto` study: fixed design and boundaries, measurements, pairs."""

    design: Design
    boundaries: Boundaries
    planned_from: str  # the sd the maximum was planned with, in words
    pairs: dict[str, PairState] = field(default_factory=dict)
    measured: dict | None = None  # {"sigma", "rho", "pairs", "seeds"} from the records

    def to_json(self) -> dict:
        return {"schema": STATE_SCHEMA, "design": self.design.to_json(),
                "boundaries": self.boundaries.to_json(), "planned_from": self.planned_from,
                "measured": self.measured,
                "pairs": {key: p.to_json() for key, p in self.pairs.items()}}

    @classmethod
    def from_json(cls, data: dict) -> SequentialState:
        if data.get("schema") != STATE_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {STATE_SCHEMA}")
        b = data["boundaries"]
        return cls(Design.from_json(data["design"]),
                   Boundaries(tuple(map(float, b["efficacy"])), tuple(map(float, b["futility"]))),
                   str(data.get("planned_from", "")), {
                       key: PairState.from_json(p) for key, p in data.get("pairs", {}).items()},
                   data.get("measured"))


def _read_json(path) -> dict | None:
    """The JSON object at `path`; None when absent; a damaged file is reported and ignored."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return data
    except (OSError, ValueError) as err:
        print(f"warning: ignoring {path}: {err}", file=sys.stderr)
        return None


def load_state(layout: ResultsLayout, grid: str) -> SequentialState | None:
    """The grid's sequential state, or None (none yet, or damaged: the looks are replayed from
    the records under a design planned afresh)."""
    path = layout.sequential(grid)
    data = _read_json(path)
    if data is None:
        return None
    try:
        return SequentialState.from_json(data)
    except (KeyError, TypeError, ValueError) as err:
        print(f"warning: ignoring {path}: {err}", file=sys.stderr)
        return None


def save_state(layout: ResultsLayout, grid: str, state: SequentialState) -> None:
    atomic_write(layout.sequential(grid), json.dumps(state.to_json(), indent=1) + "\n")


def load_looks(layout: ResultsLayout, grid: str) -> dict[str, list[int]]:
    """{pair key: the distinct paired seed counts shown, ascending}."""
    data = _read_json(layout.looks(grid)) or {}
    pairs = data.get("pairs", {})
    return {k: sorted({int(n) for n in v}) for k, v in pairs.items() if isinstance(v, list)}


def paired_counts(cells: list[Cell] | tuple[Cell, ...], records: list[Record]) -> dict[str, int]:
    """{pair key: seeds done by both cells} for each (baseline, ours or switch) pair."""
    seeds: dict[str, set[int]] = {}
    for r in records:
        if r.status == "done" and r.miou is not None:
            seeds.setdefault(r.cell_key, set()).add(int(r.seed))
    base = {c.pair: c for c in cells if c.tag == "baseline" and c.pair}
    return {pair_key(base[c.pair], c): len(seeds.get(c.key, set()) & seeds.get(base[c.pair].key,
                                                                              set()))
            for c in cells if c.tag in ("ours", "switch") and c.pair in base}


def record_looks(layout: ResultsLayout, grid: str, counts: dict[str, int]) -> None:
    """Add each pair's paired seed count now shown (pairs with at least 2: an interval)."""
    looks = load_looks(layout, grid)
    changed = False
    for key, n in counts.items():
        if n >= 2 and n not in looks.get(key, []):
            looks[key] = sorted(set(looks.get(key, [])) | {n})
            changed = True
    if changed:
        atomic_write(layout.looks(grid), json.dumps({"pairs": looks}, indent=1) + "\n")


@dataclass(frozen=True)
class LookHistory:
    """What the verdicts of one grid's tables read: its sequential state and looks log."""

    state: SequentialState | None = None
    looks: dict[str, list[int]] = field(default_factory=dict)


def load_history(layout: ResultsLayout, grid: str) -> LookHistory:
    return LookHistory(load_state(layout, grid), load_looks(layout, grid))
