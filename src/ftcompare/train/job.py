"""The finetune and tune rules' job: one run (or trial) trained, its record written whatever
the outcome; only preemption (SIGTERM) and bad input exit non-zero."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ftcompare.contract import now, run_provenance, versioned, write_attempt, write_json
from ftcompare.data import check_tokenized_length, tokenized_text_columns
from ftcompare.methods import RunSpec
from ftcompare.train.progress import JobFiles, Reporter

log = logging.getLogger(__name__)


def finetune_job(
    *,
    spec: RunSpec,
    tokenized_dir: Path,
    model_dir: Path | None,
    record_path: Path,
    checkpoint_dir: Path,
    attempt_path: Path,
    retry_marker: str,
    trial: str | None = None,
    base_model_dir: Path | None = None,
    files: JobFiles | None = None,
) -> dict[str, Any]:
    """Train one run and write its record, and the attempt file that
    `ftcompare.contract.records.retry_marker` reads to decide whether to retry it. A tuning
    `trial` keeps no model: its record, with the validation scores, is its result.

    `base_model_dir`: the fetched copy of a hub model, loaded instead of the hub id;
    the record keeps the configured source. `files`: where the run reports its progress
    while it trains (ftcompare.train.progress)."""
    from ftcompare.train.loop import train_run

    check_tokenized_length(tokenized_dir, spec.max_length)
    started = now()
    strategy, seed = spec.strategy, spec.seed
    if model_dir is not None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)  # declared output, even if the run fails
    with job_reporter(spec, kind="train" if trial is None else "trial", trial=trial, files=files) as reporter:
        result = train_run(
            spec=with_base_model(spec, base_model_dir),
            tokenized_dir=tokenized_dir,
            model_out_dir=model_dir,
            checkpoint_dir=checkpoint_dir,
            base_model=spec.model_name_or_path,  # as configured: what a saved adapter names as its base
            reporter=reporter,
        )
        record = versioned(
            {
                "kind": "train",
                "task": spec.task,
                "model": spec.model,
                "strategy": strategy,
                "method": spec.method,
                "seed": seed,
                "trial": trial,
                "status": result.status,
                "reason": result.reason,
                "config": spec.to_dict(),
                "tokenized_dir": str(tokenized_dir),
                # Which source columns the model reads (a pair task: two): what `ftcompare
                # predict` and the model card read, wherever the run folder goes.
                "text_columns": tokenized_text_columns(tokenized_dir),
                "metrics": result.metrics,
                "loss_curve": result.loss_curve,
                "val_curve": result.val_curve,
                "provenance": run_provenance(device=result.device, started_at=started),
                "retry_marker": retry_marker,
            }
        )
        write_json(record_path, record)
        write_attempt(
            attempt_path,
            status=result.status,
            retry_marker=retry_marker,
            finished_at=record["provenance"]["finished_at"],
            retry=result.retry,
        )
        reporter.finish(result.status, result.reason)
    log.info("%s: %s%s", spec.label(trial), result.status, f" ({result.reason})" if result.reason else "")
    return record


def job_reporter(spec: RunSpec, *, kind: str, trial: str | None = None, files: JobFiles | None = None) -> Reporter:
    """A job's progress reporter (ftcompare.train.progress), named as its run is."""
    label = spec.label(trial)
    identity = {
        "strategy": spec.strategy,
        "seed": spec.seed,
        "trial": trial,
        "model": spec.model_name_or_path,
        "metric": spec.metric,  # what best_val_score is on
    }
    return Reporter(label=label, kind=kind, files=files, identity=identity, log_every=spec.log_every_steps)


def with_base_model(spec: RunSpec, base_model_dir: Path | None) -> RunSpec:
    """The run's settings reading its base from a hub model's fetched copy, where it has one."""
    return spec if base_model_dir is None else dataclasses.replace(spec, model_name_or_path=str(base_model_dir))
