"""Obtain the labelled text data once, check it, and carve the splits.

Sources (config `data.source`): `hub` (a Hugging Face dataset id, what users run),
`parquet` / `csv` (local files with a text and a label column) and `aclimdb` (the
unpacked original IMDB folder, `{train,test}/{neg,pos}/*.txt`).

Policy for empty or whitespace-only texts: they are dropped, and the count is logged and
recorded in the data summary. A review with no text carries no signal; failing a 50k-row
download over one blank line would help nobody, and the count keeps it visible.

The validation split is carved from train (stratified, seeded): the test split is never
used for any choice, including checkpoint selection.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Input data the workflow cannot use; the message says what and where."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedData:
    splits: dict[str, pd.DataFrame]
    num_labels: int
    dropped_empty: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {
            "num_labels": self.num_labels,
            "rows": {name: len(frame) for name, frame in self.splits.items()},
            "label_counts": {
                name: {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}
                for name, frame in self.splits.items()
            },
            "dropped_empty_texts": self.dropped_empty,
        }


# --- reading each source -------------------------------------------------------------


def _require_file(path: str | None, *, key: str) -> Path:
    if not path:
        raise DataError(f"{key} is not set; give the path of the file to read")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"{key} = {path!r} does not exist")
    return resolved


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{str(path)!r} is not a readable Parquet file: {exc}") from exc


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, encoding="utf-8", keep_default_na=False)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{str(path)!r} is not valid UTF-8 (byte {exc.start}: {exc.reason}); "
            "re-encode it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{str(path)!r} is not a readable CSV file: {exc}") from exc


def read_aclimdb_split(folder: Path) -> pd.DataFrame:
    """One split of the original aclImdb layout: neg/ is label 0, pos/ is label 1."""
    rows = []
    for label, sentiment in enumerate(("neg", "pos")):
        sub = folder / sentiment
        if not sub.is_dir():
            raise DataError(f"aclImdb folder {str(folder)!r} has no {sentiment}/ subfolder")
        for review in sorted(sub.glob("*.txt")):
            rows.append((review.read_text(encoding="utf-8"), label))
    return pd.DataFrame(rows, columns=["text", "label"])


def read_hub(name: str) -> dict[str, pd.DataFrame]:
    import datasets  # heavy import, only for this source

    loaded = datasets.load_dataset(name)
    missing = [s for s in ("train", "test") if s not in loaded]
    if missing:
        raise DataError(f"hub dataset {name!r} has no split(s) {missing}; it has {list(loaded)}")
    return {split: loaded[split].to_pandas() for split in ("train", "test")}


def read_source(data: Mapping[str, Any], *, hub_files: Mapping[str, Path] | None = None) -> dict[str, pd.DataFrame]:
    """Raw train and test frames from the configured source (columns as in the files).

    `hub_files`: for the hub source, the Parquet copies of its splits that the workflow's
    fetch_data rule wrote (ftcompare.fetch); without them the hub is asked directly."""
    source = data["source"]
    if source == "hub":
        if hub_files:
            return {split: read_parquet(Path(hub_files[split])) for split in ("train", "test")}
        return read_hub(data["name"])
    if source == "aclimdb":
        root = _require_file(data["train"], key="data.train")
        return {split: read_aclimdb_split(root / split) for split in ("train", "test")}
    reader = {"parquet": read_parquet, "csv": read_csv}.get(source)
    if reader is None:
        raise DataError(f"data.source = {source!r}; allowed: hub, parquet, csv, aclimdb")
    return {
        split: reader(_require_file(data[split], key=f"data.{split}")) for split in ("train", "test")
    }


# --- checking ------------------------------------------------------------------------


def standardise(frame: pd.DataFrame, *, split: str, text_column: str, label_column: str) -> pd.DataFrame:
    """Keep `text` and integer `label`, or raise DataError naming what is wrong."""
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{split} split has no column(s) {missing}; it has {list(frame.columns)} "
            "(set data.text_column / data.label_column)"
        )
    labels = frame[label_column]
    if not pd.api.types.is_integer_dtype(labels):
        as_number = pd.to_numeric(labels, errors="coerce")
        bad = labels[as_number.isna() | (as_number != np.round(as_number))]
        if len(bad):
            raise DataError(
                f"{split} split: labels must be integers 0..K-1; found {bad.iloc[0]!r} "
                f"(row {bad.index[0]}, dtype {labels.dtype})"
            )
        labels = as_number.astype("int64")
    texts = frame[text_column]
    if not texts.map(lambda t: isinstance(t, str)).all():
        bad_row = texts[~texts.map(lambda t: isinstance(t, str))].index[0]
        raise DataError(f"{split} split: text must be strings; row {bad_row} holds {texts[bad_row]!r}")
    return pd.DataFrame({"text": texts.to_numpy(), "label": labels.to_numpy(dtype="int64")})


def drop_empty_texts(frame: pd.DataFrame, *, split: str) -> tuple[pd.DataFrame, int]:
    empty = frame["text"].str.strip() == ""
    count = int(empty.sum())
    if count:
        log.warning("%s split: dropped %d empty or whitespace-only text(s)", split, count)
    return frame.loc[~empty].reset_index(drop=True), count


def check_labels(frames: Mapping[str, pd.DataFrame]) -> int:
    """Labels must be 0..K-1 with every class present in every split; returns K."""
    all_labels = np.concatenate([f["label"].to_numpy() for f in frames.values()])
    if len(all_labels) == 0:
        raise DataError("no labelled rows left after reading the data")
    num_labels = int(all_labels.max()) + 1
    if all_labels.min() < 0:
        raise DataError(f"labels must be integers 0..K-1; found {int(all_labels.min())}")
    if num_labels < 2:
        raise DataError(f"need at least 2 classes; every label is {int(all_labels.max())}")
    expected = set(range(num_labels))
    for split, frame in frames.items():
        missing = sorted(expected - set(frame["label"].unique().tolist()))
        if missing:
            raise DataError(
                f"{split} split is missing class(es) {missing}; labels must cover 0..{num_labels - 1} "
                "in every split"
            )
    return num_labels


# --- splitting ------------------------------------------------------------------------


def stratified_sample(frame: pd.DataFrame, *, size: int | None, seed: int, key: str) -> pd.DataFrame:
    """A stratified subset of `size` rows (None = all rows), in shuffled order."""
    if size is None or size == len(frame):
        return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if size > len(frame):
        raise DataError(f"{key} = {size} is larger than the {len(frame)} rows available")
    subset, _ = train_test_split(frame, train_size=size, stratify=frame["label"], random_state=seed)
    return subset.reset_index(drop=True)


def prepare(data: Mapping[str, Any], *, hub_files: Mapping[str, Path] | None = None) -> PreparedData:
    """Read, check and split the configured data (config `data` section, defaults filled;
    `hub_files` as in `read_source`)."""
    raw = read_source(data, hub_files=hub_files)
    frames: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    for split, frame in raw.items():
        standard = standardise(
            frame, split=split, text_column=data["text_column"], label_column=data["label_column"]
        )
        frames[split], dropped[split] = drop_empty_texts(standard, split=split)
    check_labels(frames)

    seed = data["split_seed"]
    train = stratified_sample(frames["train"], size=data["train_size"], seed=seed, key="data.train_size")
    test = stratified_sample(frames["test"], size=data["test_size"], seed=seed, key="data.test_size")
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
    num_labels = check_labels(splits)
    return PreparedData(splits=splits, num_labels=num_labels, dropped_empty=dropped)


def write_prepared(prepared: PreparedData, *, out_paths: Mapping[str, Path], summary_path: Path) -> None:
    for split in SPLITS:
        Path(out_paths[split]).parent.mkdir(parents=True, exist_ok=True)
        prepared.splits[split].to_parquet(out_paths[split], index=False)
    Path(summary_path).write_text(json.dumps(prepared.summary(), indent=2) + "\n")
