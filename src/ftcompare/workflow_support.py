"""Helpers the Snakefile evaluates while it builds the job graph (cheap, no torch import)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftcompare.config import ConfigError
from ftcompare.sources import ModelSourceError, check_model_source, position_limit, resolve_model_path

FIRST_ATTEMPT = "first"


def retry_marker(attempt_path: str | Path) -> str:
    """A `finetune` param that makes a plain rerun retry a skipped or failed run.

    Fine-tune jobs succeed even when their run fails (the record says why), so that one
    out-of-memory does not stop the study. Snakemake's `params` rerun trigger does the
    retrying. Each job writes an attempt file beside (not among) its outputs, so
    Snakemake never deletes it, holding the run's status and the marker the job ran
    with. For an `ok` attempt this returns that same marker: the recorded param is
    unchanged and nothing reruns. For a skipped or failed attempt it returns a value
    naming that attempt, which differs from the recorded one: the run is retried.
    """
    path = Path(attempt_path)
    if not path.is_file():
        return FIRST_ATTEMPT
    try:
        attempt = json.loads(path.read_text())
    except (OSError, ValueError):
        return "retry-unreadable-attempt"
    if not isinstance(attempt, dict):
        return "retry-unreadable-attempt"
    if attempt.get("status") == "ok":
        return str(attempt.get("retry_marker", FIRST_ATTEMPT))
    return f"retry-after-{attempt.get('status')}-{attempt.get('finished_at', 'unknown')}"


def preflight(config: Mapping[str, Any]) -> None:
    """Cheap checks of the configured sources while Snakemake builds the job graph.

    Bad input must fail before any job starts: a job that starts deletes its old
    outputs first. Only what can be read in milliseconds is checked here (paths, column
    names, a local model's config.json); the stage jobs check the rest.
    """
    _check_data_source(config["data"])
    _check_local_model(config["model"]["name_or_path"], max_length=config["training"]["max_length"])


def _check_data_source(data: Mapping[str, Any]) -> None:
    source = data["source"]
    if source == "hub":
        return
    if source == "aclimdb":
        root = Path(data["train"]).expanduser()
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise ConfigError(f"data.train = {data['train']!r}: no {split}/ folder (an unpacked aclImdb root)")
        return
    for split in ("train", "test"):
        path = Path(data[split]).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.{split} = {data[split]!r} does not exist")
        columns = _columns(path, source=source, key=f"data.{split}")
        missing = [c for c in (data["text_column"], data["label_column"]) if c not in columns]
        if missing:
            raise ConfigError(
                f"data.{split} = {data[split]!r} has no column(s) {missing}; it has {columns} "
                "(set data.text_column / data.label_column)"
            )


def _columns(path: Path, *, source: str, key: str) -> list[str]:
    if source == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise ConfigError(f"{key} = {str(path)!r} is not a readable Parquet file: {exc}") from exc
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key} = {str(path)!r} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _check_local_model(name_or_path: str, *, max_length: int) -> None:
    try:
        check_model_source(name_or_path)
        folder = Path(resolve_model_path(name_or_path)).expanduser()
    except ModelSourceError as exc:
        raise ConfigError(str(exc)) from exc
    config_file = folder / "config.json"
    if not config_file.is_file():
        return  # a hub id: the tokenize job checks it once downloaded
    model_config = json.loads(config_file.read_text())
    if "max_position_embeddings" not in model_config:
        return  # no position limit stated: the tokenize job checks it
    limit = position_limit(model_config)
    if max_length > limit:
        raise ConfigError(
            f"training.max_length = {max_length} exceeds what {name_or_path!r} allows ({limit} tokens, "
            f"from its position embeddings); set training.max_length <= {limit}"
        )
