"""Obtain the labelled text data once, check it, and carve the splits.

Sources (config `data.source`): `hub` (a Hugging Face dataset id, what users run),
`parquet` / `csv` (local files with a text and a label column) and `aclimdb` (the
unpacked original IMDB folder, `{train,test}/{neg,pos}/*.txt`).

Policy for empty or whitespace-only texts: they are dropped, and the count is logged and
recorded in the data summary. A review with no text carries no signal; failing a 50k-row
download over one blank line would help nobody, and the count keeps it visible.

The validation split is carved from train (stratified, seeded): the test split is never
used for any choice, including checkpoint selection.

Labels are integers 0..K-1 everywhere. Where the source also names the classes (a
Hugging Face `ClassLabel` column: hub datasets, and Parquet files written by `datasets`,
which keep a column's features in their schema metadata; the aclImdb folders neg/ and
pos/), the names are kept in the data summary, and from there reach the tokenized
cache and each trained model's config (id2label). Plain Parquet and CSV files name
nothing: their classes are their numbers.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Input data the workflow cannot use; the message says what and where."""


# The columns behind the prepared `text` and `text_pair` where a file records none: one text a
# row, named `text` (data prepared, tokenized or trained before the columns were recorded).
ONE_TEXT_COLUMN = MappingProxyType({"text": "text", "text_pair": None})


def text_columns_or_default(columns: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """`columns` as recorded, or ONE_TEXT_COLUMN where none were."""
    return dict(columns or ONE_TEXT_COLUMN)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedData:
    splits: dict[str, pd.DataFrame]
    num_labels: int
    dropped_empty: dict[str, int]
    label_names: list[str] | None = None  # label k is named label_names[k]; None: the source names none
    # The source's columns behind the prepared `text` and `text_pair` (None: one text a row):
    # what `ftcompare predict` and the model card read by default.
    text_columns: dict[str, str | None] = dataclasses.field(default_factory=lambda: text_columns_or_default(None))

    def summary(self) -> dict[str, Any]:
        return {
            "num_labels": self.num_labels,
            "text_columns": self.text_columns,
            "label_names": self.label_names,
            "rows": {name: len(frame) for name, frame in self.splits.items()},
            "label_counts": {
                name: {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}
                for name, frame in self.splits.items()
            },
            "dropped_empty_texts": self.dropped_empty,
        }


# --- which settings produce the data ---------------------------------------------------

# The `data` keys each source reads, besides those every source reads: together exactly
# the settings that decide the prepared splits, and so the key of their cache folder
# (ftcompare.contract.layout.cache_key). A key a source ignores (data.name for Parquet
# files) must not move its cache.
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "hub": ("name",),
    "parquet": ("train", "test"),
    "csv": ("train", "test"),
    "aclimdb": ("train",),
}
COMMON_KEYS = ("text_column", "label_column", "train_size", "test_size", "validation_fraction", "split_seed")
# Keys that came later, with the value that reads the data as before they existed. They
# join the settings only when set otherwise, so that a study that does not use them keeps
# its cache keys (and its finished outputs).
OPTIONAL_KEYS: dict[str, dict[str, Any]] = {
    "hub": {"config": None, "train_split": "train", "validation_split": None, "test_split": "test"},
    "parquet": {"validation": None},
    "csv": {"validation": None},
    "aclimdb": {},
}
COMMON_OPTIONAL_KEYS: dict[str, Any] = {"text_pair_column": None, "label_names": None}
# The keys one source reads and another does not; and validation_fraction, read only where
# validation is carved from train (no validation split or file given).
SOURCE_SPECIFIC_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(key for source in SOURCE_KEYS for key in (*SOURCE_KEYS[source], *OPTIONAL_KEYS[source]))
)


def unread_keys(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys of a task's `data` block its source does not read (nor a prepared split
    depends on): another source's keys, and validation_fraction beside a validation split.
    ftcompare.plan.checks refuses any the config sets."""
    source = data["source"]
    reads = {*SOURCE_KEYS[source], *OPTIONAL_KEYS[source]}
    unread = [key for key in SOURCE_SPECIFIC_KEYS if key not in reads]
    if "validation" in roles(data):
        unread.append("validation_fraction")
    return tuple(unread)


def settings_used(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a validated `data` section that the configured source reads."""
    source = data["source"]
    if source not in SOURCE_KEYS:
        raise DataError(f"data.source = {source!r}; allowed: {', '.join(SOURCE_KEYS)}")
    used = {"source": source, **{key: data[key] for key in (*SOURCE_KEYS[source], *COMMON_KEYS)}}
    for key, neutral in {**OPTIONAL_KEYS[source], **COMMON_OPTIONAL_KEYS}.items():
        if data.get(key, neutral) != neutral:
            used[key] = data[key]
    return used


def hub_splits(data: Mapping[str, Any]) -> dict[str, str]:
    """The hub split each role reads (train, test, and validation where one is configured;
    else validation is carved from train). A split in two roles would let the test split
    take part in a choice, or train on what is scored: refused."""
    splits = {"train": data.get("train_split") or "train", "test": data.get("test_split") or "test"}
    if data.get("validation_split"):
        splits["validation"] = data["validation_split"]
    roles: dict[str, list[str]] = {}
    for role, split in splits.items():
        roles.setdefault(split, []).append(role)
    if shared := {split: names for split, names in roles.items() if len(names) > 1}:
        split, names = next(iter(shared.items()))
        raise DataError(
            f"hub dataset {data.get('name')!r}: split {split!r} is configured for {' and '.join(names)} "
            f"({', '.join(f'data.{n}_split' for n in names)}); each role needs its own split. Where the test "
            "labels are hidden (GLUE), set test_split to the validation split and validation_split: null, "
            "which carves validation from train"
        )
    return splits


def roles(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The splits the configured source provides: train and test, and validation where one
    is configured (a hub split or a local file) rather than carved from train."""
    given = data.get("validation_split") if data["source"] == "hub" else data.get("validation")
    return ("train", "validation", "test") if given else ("train", "test")


# --- reading each source -------------------------------------------------------------


def _require_file(path: str | None, *, key: str) -> Path:
    if not path:
        raise DataError(f"{key} is not set; give the path of the file to read")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"{key} = {path!r} does not exist")
    return resolved


def read_parquet(path: Path, *, where: str | None = None) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{where or repr(str(path))} is not a readable Parquet file: {exc}") from exc


def check_utf8(source: Path | bytes, *, where: str | None = None) -> None:
    """Raise DataError at the first byte of `source` (a file, or its bytes) that is not
    UTF-8, giving its offset and its line. (pandas reports an offset within its read
    buffer instead.)"""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0  # bytes and line breaks of the file before `block`
    name = "input.csv" if isinstance(source, bytes) else Path(source).name
    with _binary(source) as handle:
        kind = binary_format(handle.read(8))
        if kind is not None:
            raise DataError(f"{where or repr(str(source))} is a {kind} file, not text (CSV): {BINARY_HINTS[kind]}")
        handle.seek(0)
        while True:
            block = handle.read(1 << 24)
            pending = decoder.getstate()[0]  # the start of a character split across reads
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                data = pending + block
                at = offset - len(pending) + exc.start
                line = newlines + data.count(b"\n", 0, exc.start) + 1
                raise DataError(
                    f"{where or repr(str(source))} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {at} "
                    f"(line {line}) is {exc.reason}; re-encode the file as UTF-8, e.g. "
                    f"`iconv -f latin1 -t utf-8 {name} > fixed.csv` if it is Latin-1"
                ) from exc
            if not block:
                return
            offset += len(block)
            newlines += block.count(b"\n")


# A binary file read as CSV: its format by its first bytes, and what to do instead.
MAGIC = {b"PAR1": "Parquet", b"PK\x03\x04": "ZIP (or Excel .xlsx)", b"\x1f\x8b": "gzip"}
BINARY_HINTS = {
    "Parquet": "read it as Parquet (source: parquet; for ftcompare predict, a .parquet name or --format parquet)",
    "ZIP (or Excel .xlsx)": "unpack it, or save the sheet as CSV (UTF-8)",
    "gzip": "decompress it (gunzip)",
}


def binary_format(head: bytes) -> str | None:
    """The binary format a file's first bytes announce (MAGIC), or None."""
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def _binary(source: Path | bytes) -> IO[bytes]:
    return io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb")


# utf-8-sig: Excel writes CSV with a byte-order mark, which plain utf-8 would keep as the
# first character of the first column name ('\ufefftext').
CSV_ENCODING = "utf-8-sig"


def check_fields(source: Path | bytes, *, where: str | None = None, sep: str = ",") -> None:
    """Every row of a CSV file (or its bytes) has no more fields than its header. Given
    more, pandas silently makes the first ones the row's index: an unquoted comma in a
    one-column file of reviews would cut each review at its comma."""
    with _binary(source) as raw, io.TextIOWrapper(raw, encoding=CSV_ENCODING, newline="") as handle:
        rows = csv.reader(handle, delimiter=sep)
        header = next(rows, [])
        for row in rows:
            if len(row) > len(header):
                name = "tab" if sep == "\t" else repr(sep)
                raise DataError(
                    f"{where or repr(str(source))}: line {rows.line_num} holds {len(row)} fields, its header "
                    f"{len(header)} ({', '.join(map(repr, header))}); a {name} inside a text must be quoted, "
                    'e.g. "Great movie, loved it" (as spreadsheets and pandas write CSV)'
                )


def read_csv(
    source: Path | bytes,
    *,
    where: str | None = None,
    usecols: list[str] | None = None,
    sep: str = ",",
    encoding_checked: bool = False,
) -> pd.DataFrame:
    """A user's CSV (or, with `sep` a tab, TSV) file, or its bytes: UTF-8 (with or without
    Excel's byte-order mark), empty cells as '', and every row within its header's fields
    (check_fields). Every reader of user CSV goes through here."""
    if not encoding_checked:
        check_utf8(source, where=where)
    check_fields(source, where=where, sep=sep)
    try:
        # index_col=False: never take a row's first fields as its index (check_fields refuses them).
        return pd.read_csv(
            io.BytesIO(source) if isinstance(source, bytes) else source,
            sep=sep,
            encoding=CSV_ENCODING,
            keep_default_na=False,
            usecols=usecols,
            index_col=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{where or repr(str(source))} is not a readable CSV file: {exc}") from exc


def read_aclimdb_split(folder: Path) -> pd.DataFrame:
    """One split of the original aclImdb layout: neg/ is label 0, pos/ is label 1."""
    rows = []
    for label, sentiment in enumerate(ACLIMDB_CLASSES):
        sub = folder / sentiment
        if not sub.is_dir():
            raise DataError(f"aclImdb folder {str(folder)!r} has no {sentiment}/ subfolder")
        for review in sorted(sub.glob("*.txt")):
            rows.append((review.read_text(encoding="utf-8"), label))
    return pd.DataFrame(rows, columns=["text", "label"])


ACLIMDB_CLASSES = ("neg", "pos")  # label 0, label 1


DEFAULT_HUB_SPLITS = {"train": "train", "test": "test"}


def load_hub(name: str, *, config: str | None = None, splits: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The splits of hub dataset `name` (configuration `config`, e.g. "sst2" of
    "nyu-mll/glue") by role, `splits` = {role: hub split name} (default: its train and
    test splits), as `datasets.Dataset`s (which keep the columns' features, class names
    included)."""
    import datasets  # heavy import, only for this source

    splits = dict(splits or DEFAULT_HUB_SPLITS)
    what = f"hub dataset {name!r}" + (f" (configuration {config!r})" if config else "")
    try:
        # Without a configuration, called as before one could be given.
        loaded = datasets.load_dataset(name, config) if config else datasets.load_dataset(name)
    except ValueError as exc:  # a configuration it lacks, or one it needs: datasets says which exist
        raise DataError(f"{what} does not load ({exc}); set data.config to one of its configurations") from exc
    missing = {role: split for role, split in splits.items() if split not in loaded}
    if missing:
        keys = ", ".join(f"data.{role}_split = {split!r}" for role, split in missing.items())
        raise DataError(f"{what} has no split for {keys}; it has {list(loaded)}")
    return {role: loaded[split] for role, split in splits.items()}


def read_hub(data: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    loaded = load_hub(data["name"], config=data.get("config"), splits=hub_splits(data))
    return {role: dataset.to_pandas() for role, dataset in loaded.items()}


def describe_task(data: Mapping[str, Any]) -> str:
    """The data in a message: the hub dataset and its configuration, or the source's files."""
    if data["source"] == "hub":
        return f"{data['name']}" + (f"/{data['config']}" if data.get("config") else "")
    if data["source"] == "aclimdb":
        return f"aclImdb folder {data['train']}"
    return ", ".join(str(data[role]) for role in roles(data))


def describe_source(data: Mapping[str, Any], split: str) -> str:
    """How messages name where a raw split comes from: the config key and its value."""
    if data["source"] == "hub":
        config = f", configuration {data['config']!r}" if data.get("config") else ""
        hub_split = hub_splits(data).get(split, split)
        return f"hub dataset {data['name']!r}{config} ({hub_split} split, data.{split}_split)"
    if data["source"] == "aclimdb":
        return f"data.train = {data['train']!r} ({split}/)"
    return f"data.{split} = {data[split]!r}"


def read_source(data: Mapping[str, Any], *, hub_files: Mapping[str, Path] | None = None) -> dict[str, pd.DataFrame]:
    """Raw frames by role (train, test, and validation where the data has one: `roles`)
    from the configured source (columns as in the files).

    `hub_files`: for the hub source, the Parquet copies of its splits by role that the
    workflow's fetch_data rule wrote (ftcompare.data.fetch); without them the hub is asked directly."""
    source = data["source"]
    if source == "hub":
        if hub_files:
            missing = [role for role in roles(data) if role not in hub_files]
            if missing:
                raise DataError(f"no fetched copy of the {missing} split(s) of {describe_task(data)}: rerun fetch_data")
            return {role: read_parquet(Path(hub_files[role])) for role in roles(data)}
        return read_hub(data)
    if source == "aclimdb":
        if data.get("validation"):
            raise DataError("data.validation: the aclImdb folders have no validation split; leave it null (carved)")
        root = _require_file(data["train"], key="data.train")
        return {split: read_aclimdb_split(root / split) for split in ("train", "test")}
    reader = {"parquet": read_parquet, "csv": read_csv}.get(source)
    if reader is None:
        raise DataError(f"data.source = {source!r}; allowed: hub, parquet, csv, aclimdb")
    return {
        split: reader(_require_file(data[split], key=f"data.{split}"), where=describe_source(data, split))
        for split in roles(data)
    }


# --- class names -----------------------------------------------------------------------


def class_label_names(features: Mapping[str, Any], column: str) -> list[str] | None:
    """The names of a `ClassLabel` column in `datasets`' serialised features
    (`Features.to_dict()`, or the `huggingface` metadata of the Parquet files it writes)."""
    feature = features.get(column)
    if isinstance(feature, Mapping) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return [str(name) for name in feature["names"]]
    return None


def parquet_label_names(path: Path, column: str) -> list[str] | None:
    """The class names a Parquet file written by `datasets` records for `column`, if any."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        features = json.loads(metadata.get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    except (OSError, ValueError, AttributeError):  # unreadable or foreign metadata: no names
        return None
    return class_label_names(features, column) if isinstance(features, Mapping) else None


def source_label_names(data: Mapping[str, Any], *, hub_files: Mapping[str, Path] | None = None) -> list[str] | None:
    """The class names the configured source records (see the module's docstring), or None.
    Cheap: file metadata, not the data (hub datasets read without `hub_files` excepted)."""
    source, column = data["source"], data["label_column"]
    if data.get("label_names"):  # named in the config: local files record no names
        return [str(name) for name in data["label_names"]]
    if source == "aclimdb":
        return list(ACLIMDB_CLASSES)
    if source == "csv":
        return None
    if source == "hub" and not hub_files:
        loaded = load_hub(data["name"], config=data.get("config"), splits=hub_splits(data))
        found = {split: class_label_names(dataset.features.to_dict(), column) for split, dataset in loaded.items()}
    else:
        paths = hub_files if source == "hub" else {split: data[split] for split in roles(data)}
        found = {split: parquet_label_names(Path(paths[split]), column) for split in roles(data)}
    named = {split: names for split, names in found.items() if names is not None}
    if len({tuple(names) for names in named.values()}) > 1:
        where = "; ".join(f"{describe_source(data, split)}: {names}" for split, names in named.items())
        raise DataError(
            f"the splits name the classes of column {column!r} differently ({where}); "
            "label k must mean the same class in both"
        )
    return next(iter(named.values()), None)


def check_label_names(names: list[str] | None, *, num_labels: int) -> list[str] | None:
    """The names of labels 0..num_labels-1 (a ClassLabel may name classes the data does not
    use), or DataError if they cannot name the predictions."""
    if names is None:
        return None
    if len(names) < num_labels:
        raise DataError(f"the source names {len(names)} classes {names}, but the labels go up to {num_labels - 1}")
    names = names[:num_labels]
    if len(set(names)) < len(names) or not all(name.strip() for name in names):
        raise DataError(f"the source's class names {names} must be distinct and non-empty to name the predictions")
    return names


# --- checking ------------------------------------------------------------------------


def _missing(values: pd.Series) -> pd.Series:
    """Null cells, and in text columns (CSV reads an empty cell as '') blank ones."""
    missing = values.isna()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        missing |= values.map(lambda v: isinstance(v, str) and not v.strip())
    return missing


def label_values(labels: pd.Series, *, where: str, column: str) -> np.ndarray:
    """The labels as int64, or DataError naming where they come from, the row, the value
    and what to do about it. Integral floats (1.0) pass; booleans, text, fractions and
    missing values do not."""
    missing = _missing(labels)
    if missing.any():
        raise DataError(
            f"{where}: label column {column!r} has {int(missing.sum())} missing value(s), the first in row "
            f"{labels.index[missing][0]}; give every row a label 0..K-1 or drop those rows"
        )
    if pd.api.types.is_bool_dtype(labels) or (
        labels.dtype == object and labels.map(lambda v: isinstance(v, (bool, np.bool_))).any()
    ):
        raise DataError(
            f"{where}: label column {column!r} holds booleans (True/False); labels must be integers 0..K-1: "
            "write False as 0 and True as 1"
        )
    if pd.api.types.is_integer_dtype(labels):
        return labels.to_numpy(dtype="int64")
    as_number = pd.to_numeric(labels, errors="coerce")
    bad = labels[as_number.isna() | (as_number != np.round(as_number))]
    if len(bad):
        hint = "labels must be integers 0..K-1"
        names = sorted({str(v) for v in labels[as_number.isna()]})
        if names and len(names) <= 20:
            hint += f": map the class names to numbers, e.g. {dict(zip(names, range(len(names))))}"
        raise DataError(
            f"{where}: row {bad.index[0]} has label {bad.iloc[0]!r} (column {column!r}, dtype {labels.dtype}); {hint}"
        )
    return as_number.to_numpy(dtype="int64")


def check_texts(texts: pd.Series, *, where: str, column: str) -> None:
    """Texts must be strings; empty ones are dropped later, missing (null) ones are errors."""
    null = texts.isna()
    if null.any():
        raise DataError(
            f"{where}: text column {column!r} has {int(null.sum())} missing (null) value(s), the first in row "
            f"{texts.index[null][0]}; drop those rows or give them text"
        )
    not_text = ~texts.map(lambda t: isinstance(t, str))
    if not_text.any():
        row = texts.index[not_text][0]
        raise DataError(f"{where}: text column {column!r} must hold strings; row {row} holds {texts[row]!r}")


def check_labelled(
    labels: pd.Series, *, where: str, column: str, task: str | None, split: str, hidden_hint: bool = False
) -> None:
    """Every row of a split that needs labels has one: a missing label or -1 (how hub
    datasets such as GLUE mark a hidden label) stops with the task, the split, the count
    and what to do. `hidden_hint`: the split is a hub test split, whose labels may be hidden."""
    unlabelled = labels.isna() | (pd.to_numeric(labels, errors="coerce") == -1)
    count = int(unlabelled.sum())
    if not count:
        return
    if hidden_hint:
        todo = (
            "its labels are hidden, as GLUE hides its test labels: set test_split to a labelled split "
            "(test_split: validation, with validation_split: null, which carves validation from train)"
        )
    else:
        todo = "drop those rows, give them labels, or choose a labelled split"
    raise DataError(
        ("" if task is None else f"task {task}: ")
        + f"the {split} split ({where}) has {count} unlabelled row(s) of {len(labels)} "
        f"(label column {column!r} missing or -1, the first in row {labels.index[unlabelled][0]}); {todo}"
    )


def standardise(
    frame: pd.DataFrame, *, where: str, text_column: str, label_column: str, text_pair_column: str | None = None
) -> pd.DataFrame:
    """Keep `text` (and `text_pair` for a sentence-pair task) and integer `label`, or raise
    DataError naming what is wrong."""
    columns = (text_column, *([text_pair_column] if text_pair_column else []), label_column)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where} has no column(s) {missing}; it has {list(frame.columns)} "
            "(set data.text_column / data.text_pair_column / data.label_column)"
        )
    labels = label_values(frame[label_column], where=where, column=label_column)
    check_texts(frame[text_column], where=where, column=text_column)
    standard = {"text": frame[text_column].to_numpy()}
    if text_pair_column:
        check_texts(frame[text_pair_column], where=where, column=text_pair_column)
        standard["text_pair"] = frame[text_pair_column].to_numpy()
    return pd.DataFrame({**standard, "label": labels})


TEXT_COLUMNS = ("text", "text_pair")  # the prepared splits' text columns (text_pair: pair tasks only)


def drop_empty_texts(frame: pd.DataFrame, *, split: str) -> tuple[pd.DataFrame, int]:
    """Rows whose text (or, in a pair, either text) is empty or whitespace are dropped."""
    empty = np.zeros(len(frame), dtype=bool)
    for column in TEXT_COLUMNS:
        if column in frame.columns:
            empty |= (frame[column].str.strip() == "").to_numpy()
    count = int(empty.sum())
    if count:
        log.warning("%s split: dropped %d empty or whitespace-only text(s)", split, count)
    return frame.loc[~empty].reset_index(drop=True), count


def check_labels(labels: Mapping[str, np.ndarray]) -> int:
    """Labels must be 0..K-1, each class in every split; returns K. `labels` maps how a
    split is named in messages (e.g. "data.test = 'test.csv'") to its labels."""
    present = {where: set(np.unique(values).tolist()) for where, values in labels.items()}
    seen = sorted(set().union(*present.values()))
    if not seen:
        raise DataError("no labelled rows left after reading the data")
    if seen[0] < 0:
        where = next(w for w, values in present.items() if seen[0] in values)
        raise DataError(f"{where}: label {seen[0]} is negative; labels must be integers 0..K-1")
    if len(seen) < 2:
        raise DataError(f"need at least 2 classes; every label is {seen[0]}")
    num_labels = seen[-1] + 1
    if len(seen) < num_labels:
        # e.g. 1/2 instead of 0/1: the classes must be numbered from 0 without gaps.
        renumber = dict(zip(seen, range(len(seen))))
        raise DataError(
            f"the labels are {seen}, but they must be 0..K-1 with every number used (here 0..{len(seen) - 1}); "
            f"renumber them: {renumber}"
        )
    for where, classes in present.items():
        if missing := sorted(set(range(num_labels)) - classes):
            raise DataError(
                f"{where} is missing class(es) {missing}; labels must cover 0..{num_labels - 1} in every split"
            )
    return num_labels


# --- splitting ------------------------------------------------------------------------


def check_size(size: int | None, *, rows: int, key: str, where: str) -> None:
    if size is not None and size > rows:
        raise DataError(
            f"{key} = {size} is larger than the {rows} rows of {where}; use at most {rows}, or null for all"
        )


def stratified_sample(frame: pd.DataFrame, *, size: int | None, seed: int, key: str, where: str) -> pd.DataFrame:
    """A stratified subset of `size` rows (None = all rows), in shuffled order."""
    from sklearn.model_selection import train_test_split  # a slow import; preflight needs none of it

    if size is None or size == len(frame):
        return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    check_size(size, rows=len(frame), key=key, where=where)
    subset, _ = train_test_split(frame, train_size=size, stratify=frame["label"], random_state=seed)
    return subset.reset_index(drop=True)


def prepare(data: Mapping[str, Any], *, hub_files: Mapping[str, Path] | None = None) -> PreparedData:
    """Read, check and split the configured data (config `data` section, defaults filled;
    `hub_files` as in `read_source`)."""
    from sklearn.model_selection import train_test_split

    raw = read_source(data, hub_files=hub_files)
    frames: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    where = {split: describe_source(data, split) for split in raw}
    for split, frame in raw.items():
        if data["label_column"] in frame.columns:
            check_labelled(
                frame[data["label_column"]],
                where=where[split],
                column=data["label_column"],
                # A hub dataset is named by its id and configuration; a local file by `where`.
                task=describe_task(data) if data["source"] == "hub" else None,
                split=split,
                hidden_hint=data["source"] == "hub" and split == "test",
            )
        standard = standardise(
            frame,
            where=where[split],
            text_column=data["text_column"],
            label_column=data["label_column"],
            text_pair_column=data.get("text_pair_column"),
        )
        frames[split], dropped[split] = drop_empty_texts(standard, split=split)
    check_labels({where[split]: frame["label"].to_numpy() for split, frame in frames.items()})

    seed = data["split_seed"]
    train = stratified_sample(
        frames["train"],
        size=data["train_size"],
        seed=seed,
        key="data.train_size",
        where=f"{where['train']} (non-empty texts)",
    )
    test = stratified_sample(
        frames["test"],
        size=data["test_size"],
        seed=seed,
        key="data.test_size",
        where=f"{where['test']} (non-empty texts)",
    )
    if "validation" in frames:  # the data's own validation split, used as given
        validation = frames["validation"]
    else:
        try:
            train, validation = train_test_split(
                train, test_size=data["validation_fraction"], stratify=train["label"], random_state=seed
            )
        except ValueError as exc:
            raise DataError(
                f"cannot carve a stratified validation split of {data['validation_fraction']} "
                f"from {len(train)} training rows: {exc}"
            ) from exc
    splits = {
        "train": train.reset_index(drop=True),
        "validation": validation.reset_index(drop=True),
        "test": test,
    }
    num_labels = check_labels({f"the {name} split": frame["label"].to_numpy() for name, frame in splits.items()})
    names = check_label_names(source_label_names(data, hub_files=hub_files), num_labels=num_labels)
    return PreparedData(
        splits=splits,
        num_labels=num_labels,
        dropped_empty=dropped,
        label_names=names,
        text_columns={"text": data["text_column"], "text_pair": data.get("text_pair_column")},
    )


def write_prepared(
    prepared: PreparedData,
    *,
    out_paths: Mapping[str, Path],
    summary_path: Path,
    settings: Mapping[str, Any] | None = None,
) -> None:
    """The splits as Parquet, each with the class names in its metadata (for the tokenize
    job, which reads the splits alone), and a summary that also says which `settings` made
    them (the cache folder is named by a hash of them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ftcompare.contract import versioned

    for split in SPLITS:
        Path(out_paths[split]).parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(prepared.splits[split], preserve_index=False)
        names = json.dumps({"label_names": prepared.label_names, "text_columns": prepared.text_columns}).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PREPARED_METADATA: names})
        pq.write_table(table, out_paths[split])
    summary = prepared.summary() if settings is None else {**prepared.summary(), "settings": dict(settings)}
    Path(summary_path).write_text(json.dumps(versioned(summary), indent=2) + "\n")


# The Parquet metadata key under which prepare_data keeps what a split's columns do not say.
PREPARED_METADATA = b"ftcompare"


def prepared_text_columns(path: Path) -> dict[str, str | None]:
    """The source columns prepare_data kept in a split's metadata behind `text` and
    `text_pair` (a split prepared before it kept them: one text, named `text`)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    columns = json.loads(metadata.get(PREPARED_METADATA, b"{}")).get("text_columns")
    return text_columns_or_default(columns)


def prepared_label_names(path: Path) -> list[str] | None:
    """The class names prepare_data kept in a split's metadata (None: the data names none,
    or the split was prepared before splits kept them)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    names = json.loads(metadata.get(PREPARED_METADATA, b"{}")).get("label_names")
    return None if names is None else [str(name) for name in names]
