"""The data stage's jobs, one per rule: fetch a hub dataset or model (local rules, where
there is network), prepare the splits, tokenize them once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftcompare.contract import ModelSourceError, one_line_errors
from ftcompare.data.splits import SPLITS, DataError

log = logging.getLogger(__name__)


def fetched_splits(folder: str | Path | None) -> dict[str, Path]:
    """The Parquet file of each split the fetch_data rule wrote into `folder` (train, test,
    and validation where the data has one); none for local sources (no folder)."""
    if not folder:
        return {}
    return {
        split: Path(folder) / f"{split}.parquet" for split in SPLITS if (Path(folder) / f"{split}.parquet").is_file()
    }


def prepare_data_job(
    *,
    data_config: Mapping[str, Any],
    out_paths: Mapping[str, Path],
    summary_path: Path,
    hub_files: Mapping[str, Path] | None = None,
) -> None:
    """`hub_files`: the fetched copies of a hub dataset (ftcompare.data.fetch)."""
    from ftcompare.data.splits import prepare, write_prepared

    prepared = prepare(data_config, hub_files=hub_files)
    write_prepared(prepared, out_paths=out_paths, summary_path=summary_path, settings=data_config)
    log.info("prepared data in %s: %s", Path(summary_path).parent, prepared.summary())


def tokenize_job(*, split_paths: Mapping[str, Path], model_name_or_path: str, max_length: int, out_dir: Path) -> None:
    from ftcompare.data.splits import prepared_label_names, prepared_text_columns
    from ftcompare.data.tokenization import tokenize_splits

    tokenize_splits(
        split_paths=split_paths,
        model_name_or_path=model_name_or_path,
        max_length=max_length,
        out_dir=out_dir,
        # prepare_data keeps the class names in the training split's metadata (None where
        # the data names none, or the split was prepared before it kept them).
        label_names=prepared_label_names(Path(split_paths["train"])),
        text_columns=prepared_text_columns(Path(split_paths["train"])),
    )


def fetch_data_job(name: str, *, out_dir: str | Path, config: str | None, splits: Mapping[str, str]) -> None:
    """A hub dataset's splits, a Parquet file per role ({role: hub split}) in `out_dir`; an
    error that says what to do is one line in the rule's log."""
    from ftcompare.data.fetch import fetch_dataset

    with one_line_errors(DataError):
        fetch_dataset(name, {role: f"{out_dir}/{role}.parquet" for role in splits}, config=config, splits=splits)


def fetch_model_job(name: str, *, out_dir: str | Path, model_type: str | None) -> None:
    """A hub model's files into `out_dir`, its config.json checked against `model_type`."""
    from ftcompare.data.fetch import fetch_model

    with one_line_errors(ModelSourceError):
        fetch_model(name, out_dir, model_type=model_type)
