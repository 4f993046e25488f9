"""The evaluate rule's job: a trained run on the test split, its record, predictions and model card.

Like fine-tuning, it always writes a record (ok, skipped or failed) so that the report can
show every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftcompare.contract import (
    ConfigError,
    Status,
    cell_settings,
    now,
    read_record,
    run_provenance,
    versioned,
    write_attempt,
    write_json,
)
from ftcompare.data import check_tokenized_length
from ftcompare.methods import RunSpec
from ftcompare.train import JobFiles, job_reporter, with_base_model


def evaluate_job(
    *,
    train_record_path: Path,
    tokenized_dir: Path,
    model_dir: Path,
    record_path: Path,
    predictions_path: Path,
    card_path: Path | None = None,
    attempt_path: Path | None = None,
    retry_marker: str = "first",
    base_model_dir: Path | None = None,
    data_summary_path: Path | None = None,
    study_model: str | None = None,
    files: JobFiles | None = None,
) -> dict[str, Any]:
    """Evaluate a trained run on the test split; a run that did not train passes its status on.

    Like `finetune`, writes an attempt file (if `attempt_path` is given) so that a plain
    rerun retries a failed evaluation; `base_model_dir` as in `finetune`. `card_path`: the
    run's model card (its folder's README.md), which needs the test metrics and the data
    (`data_summary_path`, the prepared data's summary.json); a run that did not finish ok
    gets a card that says so. `study_model`: the model the study's config names (the
    workflow passes it); a train.json that names another is refused before its model is
    resolved, so that no file in a run folder decides which package is imported. `files`:
    where the evaluation reports its progress (ftcompare.train.progress)."""
    started = now()
    train_record = read_record(train_record_path, kind="train")
    spec = with_base_model(_study_spec(train_record, train_record_path, study_model=study_model), base_model_dir)
    if train_record["status"] == Status.OK:
        check_tokenized_length(tokenized_dir, spec.max_length)
        status, reason, metrics, device, predictions = _evaluate(spec, tokenized_dir, model_dir, files=files)
    else:  # passed on: evaluating it again gives the same record
        status, reason, metrics, device, predictions = train_record["status"], train_record["reason"], {}, None, None
    _write_predictions(predictions_path, predictions)
    cell = cell_settings(train_record)
    record = versioned(
        {
            "kind": "eval",
            # The run's cell, as its train record names it: the report pairs the two by it.
            **{key: cell[key] for key in ("task", "model")},
            "strategy": train_record["strategy"],
            "seed": train_record["seed"],
            "status": status,
            "reason": reason,
            "metrics": metrics,
            "provenance": run_provenance(device=device, started_at=started),
        }
    )
    if card_path is not None:
        _write_card(card_path, train_record, record, model_dir=model_dir, data_summary_path=data_summary_path)
    write_json(record_path, record)
    if attempt_path is not None:
        # A run that did not train passes its status on: evaluating it again gives the
        # same record, and a retrained run reaches this job through its new train.json.
        write_attempt(
            attempt_path,
            status=status,
            retry_marker=retry_marker,
            finished_at=record["provenance"]["finished_at"],
            retry=train_record["status"] == Status.OK,
        )
    return record


def _study_spec(train_record: dict[str, Any], train_record_path: Path, *, study_model: str | None) -> RunSpec:
    """The run's settings, refused before its model is resolved where it names another model than the study's."""
    spec = RunSpec.from_dict(train_record["config"])
    if study_model is not None and spec.model_name_or_path != study_model:
        raise ConfigError(
            f"{train_record_path}: the run names model {spec.model_name_or_path!r}, the study's "
            f"model.name_or_path is {study_model!r}: this run folder is not the study's (retrain it)"
        )
    return spec


def _evaluate(spec: RunSpec, tokenized_dir: Path, model_dir: Path, *, files: JobFiles | None) -> tuple:
    """(status, reason, metrics, device, predictions) of the trained run on the test split."""
    from ftcompare.evaluate.scoring import evaluate_run

    with job_reporter(spec, kind="eval", files=files) as reporter:
        result = evaluate_run(spec=spec, tokenized_dir=tokenized_dir, model_dir=model_dir, on_batch=reporter.batches)
        reporter.finish(result.status, result.reason)
    return result.status, result.reason, result.metrics, result.device, result.predictions


def _write_predictions(path: Path, predictions: Any) -> None:
    """The test predictions (none where the run did not evaluate: an empty table)."""
    import pandas as pd

    if predictions is None:
        predictions = pd.DataFrame({"row": [], "label": [], "prediction": []}, dtype="int64")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(path, index=False)


def _write_card(
    card_path: Path,
    train_record: dict[str, Any],
    record: dict[str, Any],
    *,
    model_dir: Path,
    data_summary_path: Path | None,
) -> None:
    """The run folder's README.md: the model card, or for a run that did not train, what happened."""
    from ftcompare.evaluate.modelcard import write_model_card, write_unfinished_card

    if train_record["status"] != Status.OK:
        write_unfinished_card(card_path, train=train_record, status=record["status"], reason=record["reason"])
        return
    summary = Path(data_summary_path) if data_summary_path is not None else None
    write_model_card(
        card_path,
        train=train_record,
        evaluation=record,
        data=read_record(summary) if summary is not None and summary.is_file() else None,
        # Absolute: the card's snippet and commands work wherever they are pasted (the
        # study may have run in another folder, e.g. snakemake --directory .test).
        folder=str(Path(model_dir).resolve()),
        run_dir=str(Path(model_dir).resolve().parent),
    )
