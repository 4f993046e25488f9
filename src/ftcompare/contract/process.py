"""What every job does first, before torch is imported: log to the rule's log file, switch
the Hugging Face Hub off unless it is a fetch, and claim a GPU of its own
(ftcompare.contract.devices)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# Set in every job but the fetches: the hub libraries then raise instead of connecting.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


log = logging.getLogger("ftcompare")


def setup_logging(log_path: str | Path | None) -> None:
    """Send this package's log and warnings to the rule's log file (and stderr)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    logging.captureWarnings(True)


@contextlib.contextmanager
def one_line_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Ends the job on an error of `kinds` (a message that says what to do) with that one
    line in the rule's log and on stderr, not a traceback, and exit status 1."""
    try:
        yield
    except kinds as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None


def start_job(*, log_path: str | Path | None, gpus: int = 0, network: bool = False) -> list[str]:
    """What every rule script does first, before torch is imported: log to the rule's
    log file; switch the Hugging Face Hub off unless the job is a fetch (`network`);
    claim `gpus` devices of its own (ftcompare.contract.devices). Returns the claimed devices."""
    from ftcompare.contract.devices import claim_for_job
    from ftcompare.contract.process import OFFLINE_ENV

    if not network:
        os.environ.update(OFFLINE_ENV)
    setup_logging(log_path)
    if os.environ.get("SLURM_JOB_ID"):
        # Ties this log to the cluster's records (sacct, the scheduler's own log file).
        log.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], os.uname().nodename)
    return claim_for_job(gpus)
