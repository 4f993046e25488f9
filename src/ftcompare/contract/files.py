"""Atomic file writes, shared by run records and checkpoints.

A file is written to a temporary file in the same folder, flushed and fsynced, then
renamed over its final name: a reader (or a rerun after a kill) sees the old file or the
new one, never half of one. The temporary file gets a unique name, created exclusively
(tempfile's O_EXCL): a fixed name such as `x.tmp` would follow a symlink planted under
that name and write wherever it points.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"

# mkstemp creates files readable by their owner alone; records and checkpoints get the
# permissions any other file written here would (read once: os.umask can only be read by
# setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces `path` when the block ends without error;
    on an error the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def remove_temporaries(directory: str | Path) -> None:
    """Temporary files a killed write left in `directory` (they are never read)."""
    for leftover in Path(directory).glob(f".*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
