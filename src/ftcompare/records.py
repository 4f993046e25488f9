"""A run's status and its attempt file: what a job leaves for the next invocation.

Torch-free: the Snakefile reads attempt files while it builds the job graph.

Fine-tune and evaluate jobs succeed even when their run fails (the record says why), so
that one out-of-memory does not stop the study. To retry such a run, each job writes an
attempt file beside (not among) its outputs, so Snakemake never deletes it, holding the
run's status and the `retry_marker` param the job ran with; `retry_marker` below is that
param for the next invocation. Snakemake's `params` rerun trigger does the retrying:
- an `ok` attempt returns the marker it ran with: nothing reruns;
- a skipped or failed attempt returns a marker naming that attempt, which differs from
  the recorded one: a plain rerun retries it (an out-of-memory may pass on another
  card, a skipped QLoRA on a machine with bitsandbytes);
- an attempt marked `retry: false` (a diverged run: the same settings diverge again)
  returns the marker it ran with: it stays failed until its settings change, which
  reruns it anyway, or it is forced (`snakemake --forcerun <its train.json>`).
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from ftcompare.provenance import write_json

FIRST_ATTEMPT = "first"


class Status(enum.StrEnum):
    """How a run ended; a str, so records hold the plain words."""

    OK = "ok"
    SKIPPED = "skipped"  # the strategy cannot run on this machine (e.g. no bitsandbytes)
    FAILED = "failed"

    @classmethod
    def worst(cls, *statuses: str) -> Status:
        """The status of a run whose train and eval records disagree."""
        order = [cls.OK, cls.SKIPPED, cls.FAILED]
        return max((cls(status) for status in statuses), key=order.index)


def write_attempt(path: str | Path, *, status: Status, retry_marker: str, finished_at: str, retry: bool = True) -> None:
    write_json(
        Path(path), {"status": str(status), "retry_marker": retry_marker, "finished_at": finished_at, "retry": retry}
    )


def retry_marker(path: str | Path) -> str:
    """The `retry_marker` param for the job whose attempt file is `path` (see above)."""
    path = Path(path)
    if not path.is_file():
        return FIRST_ATTEMPT
    try:
        attempt = json.loads(path.read_text())
    except (OSError, ValueError):
        return "retry-unreadable-attempt"
    if not isinstance(attempt, dict):
        return "retry-unreadable-attempt"
    if attempt.get("status") == Status.OK or attempt.get("retry") is False:
        return str(attempt.get("retry_marker", FIRST_ATTEMPT))
    return f"retry-after-{attempt.get('status')}-{attempt.get('finished_at', 'unknown')}"
