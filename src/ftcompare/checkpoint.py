"""Crash-safe training checkpoints: atomic writes, checksums, fall back to the last good one.

A checkpoint is written to a temporary file, flushed to disk, then renamed over its
final name, so a kill mid-write leaves the previous checkpoint intact. A SHA-256 sidecar
is written (atomically) after the checkpoint; a checkpoint whose sidecar is missing or
does not match is treated as corrupt: it is moved aside (`*.corrupt`), never loaded, and
the next older one is tried. A failed write (disk full) is logged and training goes on:
losing one checkpoint is better than losing the run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

KEEP_LAST = 2  # the newest may be the one a crash broke; keep one more to fall back to
PATTERN = "step-*.pt"


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_checkpoint(state: dict[str, Any], *, directory: Path, step: int) -> Path | None:
    """Write `state` as the checkpoint of `step`; returns its path, or None if writing failed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:09d}.pt"
    tmp = final.with_name(final.name + ".tmp")
    try:
        with tmp.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _atomic_write_bytes(final.with_suffix(".sha256"), _digest(final).encode())
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        last = latest_paths(directory)
        log.warning(
            "checkpoint at step %d NOT written (%s); training continues, last good checkpoint: %s",
            step,
            exc,
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


def _quarantine(path: Path, why: str) -> None:
    log.warning("checkpoint %s is corrupt (%s): not loaded, moved to %s.corrupt", path, why, path.name)
    path.replace(path.with_name(path.name + ".corrupt"))
    path.with_suffix(".sha256").unlink(missing_ok=True)


def load_latest_checkpoint(directory: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that verifies, or None; corrupt ones are set aside with a warning."""
    for path in latest_paths(directory):
        sidecar = path.with_suffix(".sha256")
        if not sidecar.is_file():
            _quarantine(path, "no checksum: the write did not finish")
            continue
        if sidecar.read_text().strip() != _digest(path):
            _quarantine(path, "checksum mismatch")
            continue
        try:
            # weights_only=False: the file holds RNG states and lists we wrote ourselves
            # and whose checksum was just verified.
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            _quarantine(path, f"unreadable: {exc}")
            continue
        return state, path
    return None


def remove_checkpoints(directory: Path) -> None:
    """A finished run keeps no checkpoint clutter."""
    shutil.rmtree(directory, ignore_errors=True)
