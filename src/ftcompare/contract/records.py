"""The records the jobs write, and reading them back: a run's status, its attempt file,
the format every record carries, and the one migration of older records.

Every record (train.json, eval.json, a trial's train.json, the attempt files, the data
summary, the tuning selection) carries `format_version`. Whatever reads a record reads it
through `upgrade` (`read_record`, `read_selection`): a record of an older format comes
out as the current format says, so that old results/ folders still report.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ftcompare.contract.metrics import applicable, from_confusion
from ftcompare.contract.provenance import write_json

FIRST_ATTEMPT = "first"
# The records' format. 2: a study is a matrix of tasks and models (ftcompare.plan.matrix): a run's
# settings name its `task` and `model`, and its primary metric (`metric`); its train metrics
# the best epoch's score on it (`best_val_metric`, `best_val_score`) and every metric per
# validation epoch; eval metrics hold `macro_f1`, `mcc` and, for a binary task, `f1` of the
# positive class (format 1's `f1` was the macro-F1). 1: each record says `format_version`;
# a train record's settings hold every training key, and only the blocks the run has.
# 0: no version.
FORMAT_VERSION = 2
# Settings a format-0 train record may lack (they came later): the run behaved as these say.
FORMAT_0_SETTINGS: dict[str, Any] = {
    "max_tokens_per_batch": None,
    "gradient_checkpointing": False,
    "bucket_width": None,
    "cuda_graphs": False,
    "eval_max_tokens_per_batch": None,
}
# A run's cell in the study matrix: its settings name the task and the model, and the task's
# primary metric. A record made before the matrix (format < 2) has none of them: it is the
# one task of its study, scored on accuracy, its model named after its name_or_path
# (ftcompare.contract.layout.default_model_name).
SINGLE_TASK = "task"
CELL_SETTINGS = ("task", "model", "metric")


def single_cell(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The cell settings a record made before the matrix ran in (see SINGLE_TASK)."""
    from ftcompare.contract.layout import default_model_name

    return {
        "task": SINGLE_TASK,
        "model": default_model_name(str(settings.get("model_name_or_path") or "model")),
        "metric": "accuracy",
    }


def cell_settings(train: Mapping[str, Any]) -> dict[str, str]:
    """A train record's task, model and metric (upgrade fills them for older records; a
    record not read through it gets the same)."""
    settings = train.get("config") or {}
    return {key: str(settings.get(key) or single_cell(settings)[key]) for key in CELL_SETTINGS}


def versioned(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` as the jobs write it: with the current format version."""
    return {"format_version": FORMAT_VERSION, **record}


def upgrade(record: Mapping[str, Any], *, kind: str | None = None) -> dict[str, Any]:
    """A record of any format as the current format has it: the one migration of old records.
    `kind`: "train" for a run's or a trial's train record, where its settings are upgraded."""
    version = record.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"record format_version {version!r} is newer than this version of ftcompare reads ({FORMAT_VERSION}): "
            "update ftcompare"
        )
    upgraded = dict(record)
    settings = record.get("config")
    # Settings a run recorded (every run's name its batch_size): the later ones as the run had them.
    if version == 0 and kind == "train" and isinstance(settings, Mapping) and "batch_size" in settings:
        upgraded["config"] = settings = {**FORMAT_0_SETTINGS, **settings}
    if version < 2:
        upgraded = _metrics_of_format_1(upgraded, kind=kind)
    upgraded["format_version"] = FORMAT_VERSION
    return upgraded


def _metrics_of_format_1(record: dict[str, Any], *, kind: str | None) -> dict[str, Any]:
    """Before format 2 a study was one task and one model, every run chose its best epoch on
    validation accuracy, and its eval record's `f1` was the macro-F1; the other metrics
    follow from its confusion matrix."""
    settings, metrics = record.get("config"), record.get("metrics")
    if kind == "train" and isinstance(settings, Mapping) and "batch_size" in settings:
        record["config"] = {**single_cell(settings), **settings}
    if kind == "train" and isinstance(metrics, Mapping) and metrics.get("best_val_accuracy") is not None:
        record["metrics"] = {
            **metrics,
            "best_val_metric": "accuracy",
            "best_val_score": metrics["best_val_accuracy"],
        }
    if kind == "eval" and isinstance(metrics, Mapping) and "f1" in metrics:
        upgraded = {key: value for key, value in metrics.items() if key != "f1"}
        upgraded["macro_f1"] = metrics["f1"]
        matrix = metrics.get("confusion_matrix")
        if matrix:
            for metric in applicable(len(matrix)):
                if metric not in ("accuracy", "macro_f1"):
                    upgraded[metric] = float(from_confusion(metric, matrix))
        record["metrics"] = upgraded
    return record


def read_record(path: str | Path, *, kind: str | None = None) -> dict[str, Any]:
    """A JSON record (train.json, eval.json, a data summary), upgraded to the current format.
    Raises ValueError naming the file when it is not a record (of `kind`, where given)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    if kind is not None and record.get("kind") != kind:
        raise ValueError(f"{path}: kind {record.get('kind')!r} where {kind!r} was expected")
    try:
        return upgrade(record, kind=kind)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write_selection(path: str | Path, selected: Mapping[str, Any]) -> None:
    """The tuning selection (results/tuning/selected.yaml): per tuned strategy, its choice."""
    record = versioned({"selected": dict(selected)})
    Path(path).write_text(yaml.safe_dump(record, sort_keys=False))


def read_selection(path: str | Path) -> dict[str, Any]:
    """Per tuned strategy, its choice; format 0 held the mapping alone."""
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    if "format_version" not in loaded:
        return dict(loaded)
    return dict(upgrade(loaded)["selected"] or {})


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
        Path(path),
        versioned({"status": str(status), "retry_marker": retry_marker, "finished_at": finished_at, "retry": retry}),
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
