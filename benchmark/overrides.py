"""`--set` overrides: typed values applied to a cell, and to a grid where they mean something.

A head option changes only the cells whose head has it; `model.head.name` starts the new head
from its defaults; a row that was its head's label follows the head. Every result is validated
(benchmark/validation.py), which is why this lives above config.py rather than in it.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import replace
from typing import Any

from benchmark.config import Cell, ConfigError, HeadSpec, head_option_keys, override_keys
from benchmark.validation import validate


def parse_override(text: str) -> tuple[str, str]:
    """Split `key=value`; a missing `=` is a ConfigError."""
    if "=" not in text:
        raise ConfigError(f"malformed --set {text!r}: expected key=value, e.g. train.iters=2000")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


_BOOLS = {**dict.fromkeys(("1", "true", "yes", "on"), True),
          **dict.fromkeys(("0", "false", "no", "off"), False)}


def _convert(key: str, raw: str, annotation: Any) -> Any:
    """Turn the command-line string into the field's type, or raise a one-line ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return _convert(key, raw, options[0])
    try:
        if annotation is bool:
            return _BOOLS[raw.lower()]
        if annotation is int:
            return int(raw)
        if annotation is float:
            return float(raw)
    except (ValueError, KeyError):
        raise ConfigError(f"bad value for {key}: {raw!r} is not a valid {annotation.__name__}"
                          ) from None
    return raw


HEAD_PREFIX = "model.head."


def apply_overrides(cell: Cell, overrides: list[str], only_where_present: bool = False) -> Cell:
    """A copy of `cell` with each `section.field=value` applied (types checked, validated).

    `model.head.name` is applied first (a new head starts from its defaults); a head option
    the cell's head lacks is an error, or skipped with `only_where_present` (a grid: the option
    applies to the cells whose head has it, `apply_to_grid`). A row that was its head's label
    follows the head ("Prototype (K=5)" -> "Prototype (K=7)")."""
    parsed = [parse_override(text) for text in overrides]
    original = cell
    for key, raw in sorted(parsed, key=lambda kv: kv[0] != f"{HEAD_PREFIX}name"):
        if key == f"{HEAD_PREFIX}name":
            cell = _with_head(cell, HeadSpec(raw))
        elif key.startswith(HEAD_PREFIX):
            option = key[len(HEAD_PREFIX):]
            head = cell.model.head
            if option not in head.options.spec_names().values():
                if only_where_present and option in _all_head_options():
                    continue
                raise ConfigError(_no_such_head_option(key, head))
            hint = typing.get_type_hints(type(head.options))[_unprefixed(head, option)]
            value = _convert(key, raw, hint)
            cell = _with_head(cell, head.with_values(**{option: value}))
        else:
            valid = [k for k in override_keys(cell) if not k.startswith(HEAD_PREFIX)]
            if key not in valid:
                raise ConfigError(f"unknown --set key {key!r}; {_close_keys(key, valid)}")
            cell = _set_path(cell, key.split("."), raw, key)
    return validate(relabel(original, cell))


def _unprefixed(head: HeadSpec, option: str) -> str:
    return {v: k for k, v in head.options.spec_names().items()}[option]


def _all_head_options() -> set[str]:
    return {k[len(HEAD_PREFIX):] for k in head_option_keys()}


def _no_such_head_option(key: str, head: HeadSpec) -> str:
    own = [f"{HEAD_PREFIX}{k}" for k in head.options.spec_names().values()]
    if key[len(HEAD_PREFIX):] in _all_head_options():
        return (f"--set {key}: the {head.name} head has no such option; its options: "
                f"{', '.join(own) or 'none'}")
    return f"unknown --set key {key!r}; {_close_head_keys(key, own + head_option_keys())}"


def _with_head(cell: Cell, head: HeadSpec) -> Cell:
    return replace(cell, model=replace(cell.model, head=head))


def relabel(before: Cell, after: Cell) -> Cell:
    """Row labels come from the head: a row that named its head's label ("Softmax",
    "Prototype (K=5)") or starts with "Ours" takes the new head's label."""
    old, new = before.model.head, after.model.head
    if old == new:
        return after
    if before.row == old.label():
        return replace(after, row=new.label())
    if before.row.startswith("Ours") and old.name != new.name:
        return replace(after, row=new.label() + before.row[len("Ours"):])
    return after


def apply_to_grid(cells: list[Cell] | tuple[Cell, ...], overrides: list[str]
                  ) -> tuple[list[Cell], list[str]]:
    """`--set` on a grid: head options change only the cells whose head has them (the others
    keep their key and records); an option no cell has is a ConfigError. Returns the cells and
    one line per head option saying how many cells it changed."""
    out = [apply_overrides(c, overrides, only_where_present=True) for c in cells]
    notes = []
    for text in overrides:
        key, _ = parse_override(text)
        if not key.startswith(HEAD_PREFIX) or key == f"{HEAD_PREFIX}name":
            continue
        option = key[len(HEAD_PREFIX):]
        hit = sum(option in c.model.head.options.spec_names().values() for c in out)
        if not hit:
            present = list(dict.fromkeys(f"{HEAD_PREFIX}{k}" for c in out
                                         for k in c.model.head.options.spec_names().values()))
            heads = ", ".join(dict.fromkeys(c.model.head.name for c in out))
            raise ConfigError(f"--set {key}: no cell of this grid has a head with that option "
                              f"(heads: {heads}); "
                              f"{_close_head_keys(key, present)}")
        notes.append(f"--set {text}: {hit} of {len(out)} cells")
    by_key: dict[str, list[str]] = {}
    for cell in out:
        by_key.setdefault(cell.key, []).append(cell.row)
    notes += [f"{len(rows)} cells ({', '.join(dict.fromkeys(rows))}) are one configuration "
              f"({key}): run once" for key, rows in by_key.items() if len(rows) > 1]
    unique: dict[tuple[str, str], Cell] = {}  # the same key and row: one row of the table
    for cell in out:
        unique.setdefault((cell.key, cell.row), cell)
    return list(unique.values()), notes


def _close_keys(key: str, valid: list[str]) -> str:
    """The few valid keys nearest to a mistyped one (the full list is long)."""
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.6) or [
        k for k in valid if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:3]
    sections = ", ".join(dict.fromkeys(k.rsplit(".", 1)[0] for k in valid))
    hint = f"did you mean {' or '.join(dict.fromkeys(near))}?" if near else "no close match;"
    return f"{hint} keys are <section>.<field>, sections {sections} (benchmark/config.py)"


def _close_head_keys(key: str, valid: list[str]) -> str:
    """The registered head options nearest to a mistyped `model.head.*` key."""
    options = [k[len(HEAD_PREFIX):] for k in dict.fromkeys(valid)]
    near = difflib.get_close_matches(key[len(HEAD_PREFIX):], options, n=3, cutoff=0.7)
    return (f"did you mean {' or '.join(HEAD_PREFIX + n for n in near)}?" if near else
            "no close match among the options of those heads (methods/heads/options.py)")


def _set_path(obj: Any, path: list[str], raw: str, key: str) -> Any:
    name = path[0]
    if len(path) == 1:
        hint = typing.get_type_hints(type(obj))[name]
        return replace(obj, **{name: _convert(key, raw, hint)})
    return replace(obj, **{name: _set_path(getattr(obj, name), path[1:], raw, key)})
