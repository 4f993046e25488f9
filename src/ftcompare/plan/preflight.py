"""Helpers the Snakefile evaluates while it builds the job graph (cheap, no torch import)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftcompare.contract import (
    ConfigError,
    ModelSourceError,
    cache_key,
    check_max_length,
    check_model_source,
    check_module_lists,
    matches_module,
    module_lists,
    position_limit,
    resolve_model_path,
    weight_module_names,
)
from ftcompare.data import DataError


def preflight_checks(config: Mapping[str, Any]) -> None:
    """Cheap checks of the configured sources while Snakemake builds the job graph.

    Bad input must fail before any job starts, not in one: a failed job has cost its
    start-up, and the message is lost among the job's output. What can be read without
    loading the data itself is checked here: paths, column names, CSV encoding over the
    whole file, every label (the label column alone), classes per split, row counts
    (Parquet metadata) against the subset sizes, null texts (Parquet statistics), and a
    local model's config.json. The stage jobs check the rest, with the same functions.
    """
    try:
        _check_data_source(config["data"])
    except DataError as exc:
        raise ConfigError(str(exc)) from exc
    from ftcompare.plan.matrix import cells

    names = {cell.model for cell in cells(config)}
    _check_local_model(
        config["model"]["name_or_path"],
        max_length=config["training"]["max_length"],
        strategies=config.get("strategies") or {},
        model_type=config["model"].get("model_type"),
        name=names.pop() if len(names) == 1 else None,
    )


def _check_data_source(data: Mapping[str, Any]) -> None:
    from ftcompare.contract import check_metric
    from ftcompare.data import check_labels, check_size, describe_source

    source = data["source"]
    if source == "hub":
        return  # downloaded by the prepare_data job, which checks it
    if source == "aclimdb":
        root = Path(data["train"]).expanduser()
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise ConfigError(f"data.train = {data['train']!r}: no {split}/ folder (an unpacked aclImdb root)")
        labels = {describe_source(data, split): _aclimdb_labels(root / split) for split in ("train", "test")}
    else:
        from ftcompare.data import roles

        labels = {}
        for split in roles(data):  # train, test, and a validation file where one is given
            path = Path(data[split]).expanduser()
            if not path.is_file():
                raise ConfigError(f"data.{split} = {data[split]!r} does not exist")
            labels[describe_source(data, split)] = _file_labels(path, data=data, split=split)
    # The task's metric must fit its classes (f1 is the positive class's: binary only).
    check_metric(data.get("metric", "accuracy"), num_labels=check_labels(labels))
    for split, where in zip(("train", "validation", "test") if len(labels) == 3 else ("train", "test"), labels):
        if split == "validation":
            continue  # used whole: no size to check
        check_size(data.get(f"{split}_size"), rows=len(labels[where]), key=f"data.{split}_size", where=where)


def _aclimdb_labels(folder: Path) -> Any:
    import numpy as np

    from ftcompare.data import ACLIMDB_CLASSES, DataError

    counts = []
    for sentiment in ACLIMDB_CLASSES:
        if not (folder / sentiment).is_dir():
            raise DataError(f"aclImdb folder {str(folder)!r} has no {sentiment}/ subfolder")
        counts.append(sum(1 for _ in (folder / sentiment).glob("*.txt")))
    return np.repeat(np.arange(len(counts)), counts)


def _file_labels(path: Path, *, data: Mapping[str, Any], split: str) -> Any:
    """The labels of a Parquet or CSV file, checked as the prepare_data job checks them,
    after its columns and (Parquet) the nulls among its texts."""
    import pandas as pd

    from ftcompare.data import check_texts, check_utf8, describe_source, label_values, read_csv

    where = describe_source(data, split)
    text_column, label_column = data["text_column"], data["label_column"]
    pair_column = data.get("text_pair_column")  # a sentence pair's second text: checked as the first
    text_columns = [text_column, *([pair_column] if pair_column else [])]
    if data["source"] == "csv":
        check_utf8(path, where=where)  # the whole file: a bad byte after the header fails here too
    columns = _columns(path, source=data["source"], key=f"data.{split}")
    missing = [c for c in (*text_columns, label_column) if c not in columns]
    if missing:
        raise ConfigError(
            f"data.{split} = {data[split]!r} has no column(s) {missing}; it has {columns} "
            "(set data.text_column / data.text_pair_column / data.label_column)"
        )
    if data["source"] == "csv":
        # Empty CSV cells are read as '' (dropped later as empty texts), never as null.
        labels = read_csv(path, where=where, usecols=[label_column], encoding_checked=True)[label_column]
        return label_values(labels, where=where, column=label_column)
    try:
        labels = pd.read_parquet(path, columns=[label_column])[label_column]
        texts = {
            column: pd.read_parquet(path, columns=[column])[column]
            for column in text_columns
            if not _parquet_texts_are_plain_strings(path, column)
        }
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ConfigError(f"{where} is not a readable Parquet file: {exc}") from exc
    for column, values in texts.items():
        check_texts(values, where=where, column=column)
    return label_values(labels, where=where, column=label_column)


def _parquet_texts_are_plain_strings(path: Path, column: str) -> bool:
    """True when the file's own metadata shows a string column without nulls; False means
    'read the column to find out' (no statistics, nulls, or another type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    field = meta.schema.to_arrow_schema().field(column)
    if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
        return False
    for group in range(meta.num_row_groups):
        chunks = [meta.row_group(group).column(i) for i in range(meta.num_columns)]
        chunk = next((c for c in chunks if c.path_in_schema == column), None)
        stats = chunk.statistics if chunk is not None else None
        if stats is None or not stats.has_null_count or stats.null_count:
            return False
    return True


def _columns(path: Path, *, source: str, key: str) -> list[str]:
    if source == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise ConfigError(f"{key} = {str(path)!r} is not a readable Parquet file: {exc}") from exc
    from ftcompare.data import CSV_ENCODING

    with path.open(encoding=CSV_ENCODING, newline="") as handle:
        return next(csv.reader(handle), [])


def _check_local_model(
    name_or_path: str,
    *,
    max_length: int,
    strategies: Mapping[str, Any],
    model_type: str | None = None,
    name: str | None = None,
) -> None:
    """A local model's config.json and modules against the config; `model_type`: as the
    config states it (None: not stated)."""
    try:
        check_model_source(name_or_path)
        folder = Path(resolve_model_path(name_or_path)).expanduser()
    except ModelSourceError as exc:
        raise ConfigError(str(exc)) from exc
    config_file = folder / "config.json"
    if not config_file.is_file():
        return  # a hub id: the tokenize and fine-tune jobs check it once downloaded
    model_config = json.loads(config_file.read_text())
    _check_model_type(model_config, stated=model_type, model=name_or_path)
    _check_methods_apply(strategies, model_config=model_config, model=name or name_or_path)
    if "max_position_embeddings" in model_config:  # else no limit stated: the tokenize job checks it
        limit = position_limit(model_config)
        check_max_length(max_length, limit=limit, model=name_or_path)
        _check_virtual_tokens(strategies, limit=limit, model=name_or_path, max_length=max_length)
    _check_module_lists(strategies, folder=folder, model=name_or_path)
    _check_default_targets(strategies, model_type=model_config.get("model_type"))
    _check_widths(strategies, folder=folder)


def _check_model_type(model_config: Mapping[str, Any], *, stated: str | None, model: str) -> None:
    actual = model_config.get("model_type")
    if stated is not None and actual != stated:
        raise ConfigError(
            f"model {model!r}: the config states model_type {stated!r}, its config.json says {actual!r}; "
            f"set model_type: {actual} (the architecture decides which methods apply and their module names)"
        )


def _check_methods_apply(strategies: Mapping[str, Any], *, model_config: Mapping[str, Any], model: str) -> None:
    from ftcompare.methods import check_model

    for name, entry in strategies.items():
        if "method" in entry:  # resolved by validate_config (not a caller's partial config)
            check_model(
                name,
                entry["method"],
                entry,
                model_type=model_config.get("model_type"),
                model=model,
                model_config=model_config,
            )


def _check_virtual_tokens(strategies: Mapping[str, Any], *, limit: int, model: str, max_length: int) -> None:
    from ftcompare.methods import text_budget

    for name, entry in strategies.items():
        if "method" in entry:  # resolved by validate_config (not a caller's partial config)
            text_budget(name, entry["method"], entry, limit=limit, model=model, max_length=max_length)


def _check_default_targets(strategies: Mapping[str, Any], *, model_type: str | None) -> None:
    """target_modules left to PEFT (null) need PEFT to have a default for the architecture."""
    from ftcompare.methods import check_default_targets, default_target_checks

    for name, entry in strategies.items():
        if "method" not in entry:
            continue
        for key, peft_type in default_target_checks(name, entry, entry["method"]):
            check_default_targets(key, peft_type, model_type)


def _check_widths(strategies: Mapping[str, Any], *, folder: Path) -> None:
    """The methods whose settings must fit the model's module widths (OFT's block size)."""
    from ftcompare.methods import METHOD_TABLE, check_widths

    checked = [
        name
        for name, entry in strategies.items()
        if "method" in entry and METHOD_TABLE[entry["method"]].check_widths is not None
    ]
    if not checked:
        return
    from ftcompare.model import module_widths  # imports torch and transformers: a few seconds

    widths = module_widths(str(folder))
    for name in checked:
        check_widths(name, strategies[name]["method"], strategies[name], widths)


def _check_module_lists(strategies: Mapping[str, Any], *, folder: Path, model: str) -> None:
    """Every target_modules / feedforward_modules entry must name a module of the model.
    The safetensors header answers without torch for the usual case; only when it does not
    (an entry it cannot confirm, such as the classification head, which is created at
    load time, or no safetensors file) is the model's structure built, on the meta device."""
    lists = list(module_lists(strategies))
    if not lists:
        return
    names = weight_module_names(folder)
    if names is not None and all(matches_module(entry, names) for _, entries in lists for entry in entries):
        return
    from ftcompare.model import module_names  # imports torch and transformers: a few seconds

    try:
        check_module_lists(strategies, module_names(str(folder)), model=model)
    except ModelSourceError as exc:
        raise ConfigError(str(exc)) from exc


def cell_cache_keys(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """A cell's data and tokenized cache keys (results/data/<key>, results/tokenized/<key>):
    the keys of exactly the settings each stage reads (cache_key)."""
    from ftcompare.data import settings_used

    data_key = cache_key(settings_used(cfg["data"]))
    tokenize = {
        "data": f"results/data/{data_key}",
        "model": cfg["model"]["name_or_path"],
        "max_length": cfg["training"]["max_length"],
    }
    return data_key, cache_key(tokenize)
