"""Crash-safe training checkpoints: `accelerator.save_state` into a temp folder, then rename.

A checkpoint folder `step<N>/` is valid only if its `meta.json` exists and the SHA-256 of every
file matches what meta.json lists; meta.json is written last, inside the temp folder, and the
folder is renamed into place afterwards. A job killed mid-write therefore leaves either a temp
folder (ignored) or nothing; a damaged file is detected and the previous checkpoint is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from benchmark.disk import as_disk_full

META = "meta.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META)


def _step_of(folder: Path) -> int:
    return int(folder.name[len("step"):])


def save(accelerator: Accelerator, root: Path, step: int, extra: dict[str, Any],
         keep: int = 2) -> Path:
    """Save model, optimizer, RNG states (all processes) and `extra` as `root/step<step>`."""
    final = root / f"step{step}"
    tmp = root / f".tmp-step{step}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            meta = {"step": step, "extra": extra,
                    "files": {str(p.relative_to(tmp)): _sha256(p) for p in _files(tmp)}}
            with open(tmp / META, "w") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
    except Exception as err:
        # torch's writer says `inline_container.cc: unexpected pos` for ENOSPC: name the disk
        need = state_bytes(accelerator)
        full = as_disk_full(err, tmp, f"the checkpoint of step {step} in", need)
        shutil.rmtree(tmp, ignore_errors=True)  # the earlier checkpoints stay as they were
        if full is err:
            raise
        raise full from None
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(valid_candidates(root), key=_step_of)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def state_bytes(accelerator: Accelerator) -> int:
    """Bytes of the tensors a checkpoint holds: the models' and optimizers' states."""
    total = 0
    states = [m.state_dict() for m in accelerator._models]
    states += [o.state_dict().get("state", {}) for o in accelerator._optimizers]
    stack: list[Any] = states
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "element_size") and hasattr(item, "numel"):
            total += item.element_size() * item.numel()
    return total


def valid_candidates(root: Path) -> list[Path]:
    """Checkpoint folders by name (not yet validated), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(found, key=_step_of)


def validate(folder: Path) -> dict[str, Any]:
    """Return the checkpoint's meta if every listed file is present and intact, else raise."""
    meta_path = folder / META
    if not meta_path.exists():
        raise ValueError(f"{folder}: no {META} (write interrupted)")
    try:  # a damaged meta.json names its folder too
        meta = json.loads(meta_path.read_text())
        files = dict(meta["files"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder}: {META} is damaged ({type(err).__name__}: {err})") from None
    for name, digest in files.items():
        path = folder / name
        if not path.exists():
            raise ValueError(f"{folder}: missing {name}")
        if _sha256(path) != digest:
            raise ValueError(f"{folder}: {name} is damaged (checksum mismatch)")
    return meta


def latest_valid(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that validates; damaged ones are reported and skipped."""
    for folder in reversed(valid_candidates(root)):
        try:
            return folder, validate(folder)
        except (ValueError, json.JSONDecodeError, KeyError) as err:
            print(f"warning: ignoring checkpoint {err}")
    return None


def load(accelerator: Accelerator, folder: Path) -> None:
    """Restore model, optimizer and RNG states saved by `save`."""
    accelerator.load_state(str(folder))
