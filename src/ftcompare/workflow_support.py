"""Helpers the Snakefile evaluates while it builds the job graph (cheap, no torch import)."""

from __future__ import annotations

import json
from pathlib import Path

FIRST_ATTEMPT = "first"


def retry_marker(record_path: str | Path) -> str:
    """A `finetune` param that makes a plain rerun retry a skipped or failed run.

    Fine-tune jobs succeed even when their run fails (the record says why), so that one
    out-of-memory does not stop the study. Snakemake's `params` rerun trigger then does
    the retrying: a run's param value is recorded when its job runs, and the job copies
    the value into its record. For an `ok` record this function returns that copy, so
    nothing changes and nothing reruns; for a skipped or failed record it returns a value
    naming that attempt, which differs from the recorded one, so the run is retried.
    """
    path = Path(record_path)
    if not path.is_file():
        return FIRST_ATTEMPT
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return "retry-unreadable-record"
    if record.get("status") == "ok":
        return str(record.get("retry_marker", FIRST_ATTEMPT))
    finished = (record.get("provenance") or {}).get("finished_at", "unknown")
    return f"retry-after-{record.get('status')}-{finished}"
