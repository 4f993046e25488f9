"""Crash-safe training checkpoints: atomic writes, checksums, fall back to the last good one.

A checkpoint is written to a temporary file, flushed to disk, then renamed over its
final name (ftcompare.contract.files), so a kill mid-write leaves the previous checkpoint intact.
A SHA-256 sidecar is written (atomically) after the checkpoint; a checkpoint whose
sidecar is missing or does not match is treated as corrupt: it is moved aside
(`*.corrupt`), never loaded, and the next older one is tried. A failed write (disk
full) is logged and training goes on: losing one checkpoint is better than losing the run.

Checkpoints are data, not code: they hold tensors, numbers, text, lists, tuples and
dicts only, and are loaded with `torch.load(weights_only=True)`, which refuses anything
else (a pickle that would import or call something). The checksum guards against
truncation, not against someone who can write the folder: whoever plants a file can
compute its checksum too, so loading must be safe by itself. A file that fails to load,
or that the caller's `check` rejects, is moved aside like a corrupt one and never read again.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ftcompare.contract import atomic_write_bytes, atomic_writer, remove_temporaries

log = logging.getLogger(__name__)

KEEP_LAST = 2  # the newest may be the one a crash broke; keep one more to fall back to
PATTERN = "step-*.pt"
QUARANTINE_SUFFIX = ".corrupt"


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in `value` (nested dicts, lists, tuples): about a checkpoint's size."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 1e3:.0f} kB"


def _write_failure(exc: BaseException, *, directory: Path, needed: int) -> str:
    """Why a write failed, in words: torch.save reports a full disk as 'unexpected pos
    48640 vs 48534', so the free space is measured rather than read from the message."""
    free = shutil.disk_usage(directory).free
    chain = [exc, exc.__cause__, exc.__context__]
    out_of_space = any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain)
    if out_of_space or free < needed:
        return (
            f"disk full: {_size(free)} free in {directory}, the checkpoint needs about {_size(needed)}; "
            f"free some space ({type(exc).__name__}: {exc})"
        )
    return f"{type(exc).__name__}: {exc}"


def save_checkpoint(state: dict[str, Any], *, directory: Path, step: int) -> Path | None:
    """Write `state` as the checkpoint of `step`; returns its path, or None if writing failed.

    `state` must hold only what `torch.load(weights_only=True)` reads back: tensors,
    numbers, strings, None, and lists, tuples and dicts of them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:09d}.pt"
    try:
        with atomic_writer(final) as handle:
            torch.save(state, handle)
        atomic_write_bytes(final.with_suffix(".sha256"), _digest(final).encode())
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        # The temporary file is gone by now, so the free space measured is what the disk has.
        why = _write_failure(exc, directory=directory, needed=_tensor_bytes(state))
        last = latest_paths(directory)
        log.warning(
            "checkpoint at step %d NOT written (%s); training continues, last good checkpoint: %s",
            step,
            why,
            last[0].name if last else "none",
        )
        return None
    for stale in latest_paths(directory)[KEEP_LAST:]:
        stale.unlink(missing_ok=True)
        stale.with_suffix(".sha256").unlink(missing_ok=True)
    return final


def latest_paths(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, newest first."""
    return sorted(Path(directory).glob(PATTERN), reverse=True)


def quarantine(path: Path, why: str) -> None:
    """Move a checkpoint aside for good: it no longer matches PATTERN, so it is never loaded again."""
    log.warning("checkpoint %s is corrupt (%s): not loaded, moved to %s%s", path, why, path.name, QUARANTINE_SUFFIX)
    path.replace(path.with_name(path.name + QUARANTINE_SUFFIX))
    path.with_suffix(".sha256").unlink(missing_ok=True)


def load_latest_checkpoint(
    directory: Path, *, check: Callable[[Any], str | None] | None = None
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that verifies, loads as plain data and passes `check` (which
    returns what is wrong with a loaded state, or None), or None if there is none. Every
    newer one that fails is moved aside with a warning."""
    directory = Path(directory)
    if directory.is_dir():
        remove_temporaries(directory)
    for path in latest_paths(directory):
        sidecar = path.with_suffix(".sha256")
        if not sidecar.is_file():
            quarantine(path, "no checksum: the write did not finish")
            continue
        if sidecar.read_text().strip() != _digest(path):
            quarantine(path, "checksum mismatch")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # an unpickling error for anything but plain data; a zip error for garbage
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            quarantine(path, f"not loadable as plain data: {type(exc).__name__}: {first_line}"[:500])
            continue
        problem = check(state) if check is not None else None
        if problem:
            quarantine(path, problem)
            continue
        return state, path
    return None


def remove_checkpoints(directory: Path) -> None:
    """A finished run keeps no checkpoint clutter."""
    shutil.rmtree(directory, ignore_errors=True)
