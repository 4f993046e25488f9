"""Tests for ftcompare.data.splits: reading each source, checking, splitting and writing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ftcompare.contract import versioned
from ftcompare.data import SPLITS, DataError, prepare, prepared_label_names, write_prepared
from ftcompare.plan import DEFAULT_CONFIG, load_yaml

# The committed sample: 1,000 reviews per split, 500 per class.
SAMPLE = Path(__file__).resolve().parents[2] / ".test" / "data"
TRAIN_1K = SAMPLE / "train.parquet"
TEST_1K = SAMPLE / "test.parquet"


def data_config(**overrides: Any) -> dict[str, Any]:
    """A `data` section with defaults filled, as validate_config returns it."""
    return {**load_yaml(DEFAULT_CONFIG)["data"], **overrides}


def imdb_config(**overrides: Any) -> dict[str, Any]:
    return data_config(source="parquet", train=str(TRAIN_1K), test=str(TEST_1K), **overrides)


def synthetic(n_per_class: int, num_labels: int = 2, *, prefix: str = "") -> pd.DataFrame:
    rows = [
        (f"{prefix}review {label}-{i} " + "word " * (i % 7), label)
        for label in range(num_labels)
        for i in range(n_per_class)
    ]
    return pd.DataFrame(rows, columns=["text", "label"])


def write_parquet_pair(tmp_path: Path, train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    train.to_parquet(tmp_path / "train.parquet", index=False)
    test.to_parquet(tmp_path / "test.parquet", index=False)
    return data_config(source="parquet", train=str(tmp_path / "train.parquet"), test=str(tmp_path / "test.parquet"))


def data_error(data: dict[str, Any]) -> str:
    with pytest.raises(DataError) as info:
        prepare(data)
    return str(info.value)


# --- the real IMDB sample -----------------------------------------------------------------


def test_parquet_split_sizes_and_stratification() -> None:
    prepared = prepare(imdb_config(train_size=600, test_size=400, validation_fraction=0.2))
    rows = {name: len(frame) for name, frame in prepared.splits.items()}
    assert rows == {"train": 480, "validation": 120, "test": 400}
    assert prepared.num_labels == 2
    assert set(prepared.splits) == set(SPLITS)
    # Both sample files are balanced 500/500, so a stratified subset is balanced too.
    for name, frame in prepared.splits.items():
        counts = frame["label"].value_counts()
        for label in (0, 1):
            assert abs(counts[label] - len(frame) / 2) <= 1, (name, counts.to_dict())
        assert list(frame.columns) == ["text", "label"]
        assert frame["label"].dtype == np.int64
        assert list(frame.index) == list(range(len(frame)))
    summary = prepared.summary()
    assert summary["rows"] == rows
    assert summary["label_counts"]["validation"] == {"0": 60, "1": 60}
    assert summary["dropped_empty_texts"] == {"train": 0, "test": 0}


def test_parquet_all_rows_and_no_overlap() -> None:
    prepared = prepare(imdb_config())
    train, validation, test = (prepared.splits[s] for s in SPLITS)
    assert (len(train), len(validation), len(test)) == (900, 100, 1000)
    assert set(train["text"]).isdisjoint(validation["text"])
    original_train = pd.read_parquet(TRAIN_1K)
    assert set(train["text"]) | set(validation["text"]) == set(original_train["text"])
    # Each text keeps its own label.
    truth = dict(zip(original_train["text"], original_train["label"]))
    assert all(truth[t] == label for t, label in zip(validation["text"], validation["label"]))


def test_split_is_deterministic_per_seed() -> None:
    first = prepare(imdb_config(train_size=500, test_size=200))
    again = prepare(imdb_config(train_size=500, test_size=200))
    other = prepare(imdb_config(train_size=500, test_size=200, split_seed=7))
    for split in SPLITS:
        pd.testing.assert_frame_equal(first.splits[split], again.splits[split])
    assert set(first.splits["validation"]["text"]) != set(other.splits["validation"]["text"])
    assert set(first.splits["test"]["text"]) != set(other.splits["test"]["text"])


def test_train_size_larger_than_available() -> None:
    message = data_error(imdb_config(train_size=5000))
    assert "data.train_size = 5000" in message and "1000 rows" in message


def test_write_prepared(tmp_path: Path) -> None:
    prepared = prepare(imdb_config(train_size=200, test_size=100))
    out_paths = {split: tmp_path / "prepared" / f"{split}.parquet" for split in SPLITS}
    summary_path = tmp_path / "prepared" / "summary.json"
    write_prepared(prepared, out_paths=out_paths, summary_path=summary_path)
    for split in SPLITS:
        pd.testing.assert_frame_equal(pd.read_parquet(out_paths[split]), prepared.splits[split], check_dtype=False)
    summary = json.loads(summary_path.read_text())
    assert summary == versioned(prepared.summary())  # the format it is written in, and the summary
    # The class names travel with the splits too, for the tokenize job, which reads them alone.
    assert prepared_label_names(out_paths["train"]) is None  # the sample names none
    write_prepared(
        dataclasses.replace(prepared, label_names=["neg", "pos"]), out_paths=out_paths, summary_path=summary_path
    )
    assert prepared_label_names(out_paths["train"]) == ["neg", "pos"]
    assert summary["rows"] == {"train": 180, "validation": 20, "test": 100}
    assert summary["num_labels"] == 2


# --- other sources ------------------------------------------------------------------------


def test_csv_source(tmp_path: Path) -> None:
    synthetic(20).to_csv(tmp_path / "train.csv", index=False)
    synthetic(10, prefix="t ").to_csv(tmp_path / "test.csv", index=False)
    data = data_config(
        source="csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), validation_fraction=0.25
    )
    prepared = prepare(data)
    assert prepared.summary()["rows"] == {"train": 30, "validation": 10, "test": 20}
    assert prepared.summary()["label_counts"]["validation"] == {"0": 5, "1": 5}
    assert set(prepared.splits["test"]["text"]) == set(synthetic(10, prefix="t ")["text"])


def test_csv_custom_column_names(tmp_path: Path) -> None:
    frame = synthetic(10).rename(columns={"text": "review", "label": "sentiment"})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "test.csv", index=False)
    data = data_config(
        source="csv",
        train=str(tmp_path / "train.csv"),
        test=str(tmp_path / "test.csv"),
        text_column="review",
        label_column="sentiment",
        validation_fraction=0.2,
    )
    prepared = prepare(data)
    assert list(prepared.splits["train"].columns) == ["text", "label"]
    assert len(prepared.splits["test"]) == 20


def test_aclimdb_source(tmp_path: Path) -> None:
    root = tmp_path / "aclImdb"
    texts = {}
    for split, n in (("train", 10), ("test", 4)):
        for sentiment in ("neg", "pos"):
            folder = root / split / sentiment
            folder.mkdir(parents=True)
            for i in range(n):
                text = f"{split} {sentiment} review number {i}"
                (folder / f"{i}_{i + 1}.txt").write_text(text, encoding="utf-8")
                texts[text] = 0 if sentiment == "neg" else 1
    prepared = prepare(data_config(source="aclimdb", train=str(root), validation_fraction=0.2))
    assert prepared.num_labels == 2
    assert prepared.summary()["rows"] == {"train": 16, "validation": 4, "test": 8}
    for frame in prepared.splits.values():
        assert all(texts[t] == label for t, label in zip(frame["text"], frame["label"]))
    assert all(t.startswith("test ") for t in prepared.splits["test"]["text"])


def test_aclimdb_missing_subfolder(tmp_path: Path) -> None:
    (tmp_path / "train" / "neg").mkdir(parents=True)
    (tmp_path / "train" / "neg" / "0_1.txt").write_text("bad")
    message = data_error(data_config(source="aclimdb", train=str(tmp_path)))
    assert "pos/" in message and str(tmp_path / "train") in message


def test_multiclass(tmp_path: Path) -> None:
    data = write_parquet_pair(tmp_path, synthetic(20, num_labels=5), synthetic(4, num_labels=5, prefix="t "))
    prepared = prepare({**data, "validation_fraction": 0.25})
    assert prepared.num_labels == 5
    assert prepared.summary()["num_labels"] == 5
    assert prepared.summary()["label_counts"]["validation"] == {str(k): 5 for k in range(5)}
    assert prepared.summary()["label_counts"]["train"] == {str(k): 15 for k in range(5)}


def test_integral_float_labels_are_accepted(tmp_path: Path) -> None:
    train = synthetic(10)
    train["label"] = train["label"].astype(float)
    data = write_parquet_pair(tmp_path, train, synthetic(5))
    prepared = prepare(data)
    assert prepared.splits["train"]["label"].dtype == np.int64
    assert sorted(prepared.splits["train"]["label"].unique()) == [0, 1]


# --- errors -------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    message = data_error(data_config(source="parquet", train=str(missing), test=str(missing)))
    assert "data.train" in message and str(missing) in message and "does not exist" in message


def test_unset_path() -> None:
    message = data_error(data_config(source="csv", train=None, test=None))
    assert "data.train is not set" in message


def test_unknown_source() -> None:
    message = data_error(data_config(source="s3"))
    assert "'s3'" in message and "parquet" in message


@pytest.mark.parametrize("drop", ["text", "label"])
def test_parquet_missing_column_lists_columns_found(tmp_path: Path, drop: str) -> None:
    train = synthetic(5).rename(columns={drop: "other"})
    data = write_parquet_pair(tmp_path, train, synthetic(5))
    message = data_error(data)
    assert f"no column(s) ['{drop}']" in message
    assert f"data.train = '{tmp_path / 'train.parquet'}'" in message
    assert "'other'" in message  # the columns that are there


@pytest.mark.parametrize(
    ("labels", "shown"),
    [(["pos", "neg"], "'pos'"), ([0.5, 1.0], "0.5")],
    ids=["strings", "fractions"],
)
def test_labels_not_integers(tmp_path: Path, labels: list[Any], shown: str) -> None:
    train = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": labels * 2})
    data = write_parquet_pair(tmp_path, train, synthetic(3))
    message = data_error(data)
    assert "labels must be integers" in message
    assert shown in message
    assert f"data.train = '{tmp_path / 'train.parquet'}'" in message  # names the file


def test_split_missing_a_class(tmp_path: Path) -> None:
    data = write_parquet_pair(tmp_path, synthetic(10, num_labels=3), synthetic(10, num_labels=2))
    message = data_error(data)
    assert f"data.test = '{tmp_path / 'test.parquet'}' is missing class(es) [2]" in message
    assert "0..2" in message


def test_negative_label(tmp_path: Path) -> None:
    train = synthetic(5)
    train.loc[0, "label"] = -2  # -1 marks an unlabelled row (test_unlabelled_rows...)
    message = data_error(write_parquet_pair(tmp_path, train, synthetic(5)))
    assert "-2" in message and "0..K-1" in message


def test_single_class(tmp_path: Path) -> None:
    message = data_error(write_parquet_pair(tmp_path, synthetic(5, num_labels=1), synthetic(5, num_labels=1)))
    assert "at least 2 classes" in message


def test_non_utf8_csv(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_bytes(b"text,label\ncaf\xe9 au lait,0\ngood,1\n")
    synthetic(5).to_csv(tmp_path / "test.csv", index=False)
    data = data_config(source="csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))
    message = data_error(data)
    assert str(tmp_path / "train.csv") in message
    assert "UTF-8" in message


def test_corrupt_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "train.parquet").write_bytes(rng.bytes(4096))
    synthetic(5).to_parquet(tmp_path / "test.parquet")
    data = data_config(source="parquet", train=str(tmp_path / "train.parquet"), test=str(tmp_path / "test.parquet"))
    message = data_error(data)
    assert str(tmp_path / "train.parquet") in message
    assert "not a readable Parquet file" in message


def test_validation_split_too_small(tmp_path: Path) -> None:
    data = write_parquet_pair(tmp_path, synthetic(3), synthetic(3))
    message = data_error({**data, "validation_fraction": 0.1})
    assert "validation split" in message and "6 training rows" in message


# --- empty texts --------------------------------------------------------------------------


def test_empty_and_whitespace_texts_are_dropped_and_counted(tmp_path: Path) -> None:
    train = pd.concat(
        [synthetic(10), pd.DataFrame({"text": ["", "   ", "\n\t"], "label": [0, 1, 1]})], ignore_index=True
    )
    test = pd.concat([synthetic(5), pd.DataFrame({"text": [" "], "label": [0]})], ignore_index=True)
    prepared = prepare(write_parquet_pair(tmp_path, train, test))
    assert prepared.summary()["dropped_empty_texts"] == {"train": 3, "test": 1}
    assert prepared.summary()["rows"] == {"train": 18, "validation": 2, "test": 10}
    for frame in prepared.splits.values():
        assert (frame["text"].str.strip() != "").all()


def test_empty_csv_cells_are_dropped_not_nan(tmp_path: Path) -> None:
    lines = ["text,label"] + [f"review {i},{i % 2}" for i in range(20)] + [",0", '"  ",1']
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    synthetic(5).to_csv(tmp_path / "test.csv", index=False)
    data = data_config(source="csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))
    prepared = prepare(data)
    assert prepared.dropped_empty == {"train": 2, "test": 0}
    assert len(prepared.splits["train"]) + len(prepared.splits["validation"]) == 20


# --- messages that name the file, the value and the fix ------------------------------------


def csv_pair(tmp_path: Path, train_bytes: bytes) -> dict[str, Any]:
    (tmp_path / "train.csv").write_bytes(train_bytes)
    synthetic(5).to_csv(tmp_path / "test.csv", index=False)
    return data_config(source="csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))


def test_a_byte_order_mark_is_read_transparently(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts the file with EF BB BF.
    text = synthetic(10).to_csv(index=False)
    prepared = prepare(csv_pair(tmp_path, b"\xef\xbb\xbf" + text.encode("utf-8")))
    assert prepared.summary()["rows"]["train"] + prepared.summary()["rows"]["validation"] == 20


def test_non_utf8_error_gives_the_byte_offset_in_the_file_and_the_line(tmp_path: Path) -> None:
    # Past pandas' first read buffer, whose own offset counts from the buffer's start.
    lines = [b"text,label"] + [f"review number {i},{i % 2}".encode() for i in range(20_000)]
    lines[15_001] = b"caf\xe9 au lait,0"
    content = b"\n".join(lines) + b"\n"
    message = data_error(csv_pair(tmp_path, content))
    offset = content.index(b"\xe9")
    assert (
        f"data.train = '{tmp_path / 'train.csv'}' is not valid UTF-8: byte 0xe9 at offset {offset} (line 15002)"
        in message
    )
    assert "iconv -f latin1 -t utf-8" in message


@pytest.mark.parametrize(
    ("head", "says"),
    [(b"PAR1", "is a Parquet file, not text (CSV): read it as Parquet"), (b"\x1f\x8b\x08", "is a gzip file")],
)
def test_a_binary_file_read_as_csv_says_what_it_is(tmp_path: Path, head: bytes, says: str) -> None:
    message = data_error(csv_pair(tmp_path, head + b"\x00\xd2\xff binary"))
    assert f"data.train = '{tmp_path / 'train.csv'}' {says}" in message and "iconv" not in message


def test_nullable_labels_with_missing_values_are_named(tmp_path: Path) -> None:
    train = synthetic(10)
    train["label"] = pd.array([0, 1] * 9 + [None, 1], dtype="Int64")
    message = data_error(write_parquet_pair(tmp_path, train, synthetic(5)))
    assert message == (
        f"the train split (data.train = '{tmp_path / 'train.parquet'}') has 1 unlabelled row(s) of 20 "
        "(label column 'label' missing or -1, the first in row 18); drop those rows, give them labels, "
        "or choose a labelled split"
    )


def test_boolean_labels_are_refused(tmp_path: Path) -> None:
    train = synthetic(10)
    train["label"] = train["label"].astype(bool)
    message = data_error(write_parquet_pair(tmp_path, train, synthetic(5)))
    assert f"data.train = '{tmp_path / 'train.parquet'}': label column 'label' holds booleans" in message
    assert "write False as 0 and True as 1" in message


def test_labels_one_and_two_are_told_to_start_at_zero(tmp_path: Path) -> None:
    train, test = synthetic(10), synthetic(5)
    train["label"] += 1
    test["label"] += 1
    message = data_error(write_parquet_pair(tmp_path, train, test))
    assert "the labels are [1, 2], but they must be 0..K-1" in message and "renumber them: {1: 0, 2: 1}" in message


def test_string_labels_get_a_mapping_to_numbers(tmp_path: Path) -> None:
    train = synthetic(10)
    train["label"] = train["label"].map({0: "neg", 1: "pos"})
    message = data_error(write_parquet_pair(tmp_path, train, synthetic(5)))
    assert "map the class names to numbers, e.g. {'neg': 0, 'pos': 1}" in message


def test_null_texts_are_named(tmp_path: Path) -> None:
    train = synthetic(10)
    train.loc[4, "text"] = None
    message = data_error(write_parquet_pair(tmp_path, train, synthetic(5)))
    assert (
        f"data.train = '{tmp_path / 'train.parquet'}': text column 'text' has 1 missing (null) value(s), "
        "the first in row 4" in message
    )


# --- class names ----------------------------------------------------------------------------


def hub_dataset(frame: pd.DataFrame, names: list[str] | None):
    """A `datasets.Dataset` as the hub serves one: the label column a ClassLabel of `names`."""
    import datasets

    label = datasets.Value("int64") if names is None else datasets.ClassLabel(names=names)
    return datasets.Dataset.from_pandas(
        frame, features=datasets.Features({"text": datasets.Value("string"), "label": label})
    )


def test_a_hub_datasets_class_names_survive_the_fetched_copy(tmp_path: Path, monkeypatch) -> None:
    import datasets

    from ftcompare.data import fetch_dataset

    hub = datasets.DatasetDict(
        {"train": hub_dataset(synthetic(20), ["neg", "pos"]), "test": hub_dataset(synthetic(10), ["neg", "pos"])}
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda name: hub)
    files = {split: tmp_path / f"{split}.parquet" for split in ("train", "test")}
    fetch_dataset("org/reviews", files)
    prepared = prepare(data_config(source="hub", name="org/reviews", validation_fraction=0.2), hub_files=files)
    assert prepared.label_names == ["neg", "pos"]
    assert prepared.summary()["label_names"] == ["neg", "pos"]
    # Read straight from the hub (no fetched copy), the names are the same.
    assert prepare(data_config(source="hub", name="org/reviews", validation_fraction=0.2)).label_names == ["neg", "pos"]


def test_a_hub_dataset_out_of_reach_is_one_line_in_the_fetch_rules_log(tmp_path: Path, monkeypatch) -> None:
    import logging

    import datasets

    from ftcompare.contract import one_line_errors, setup_logging
    from ftcompare.data import fetch_dataset

    def offline(*args):
        raise ConnectionError("Couldn't reach 'org/reviews' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    log, root = tmp_path / "fetch_data.log", logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging(log)
    try:
        with pytest.raises(SystemExit) as info, one_line_errors(DataError):
            fetch_dataset("org/reviews", {"train": tmp_path / "train.parquet", "test": tmp_path / "test.parquet"})
    finally:  # the test's handlers again, not the log file's
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    assert info.value.code == 1
    (line,) = log.read_text().splitlines()
    assert line.endswith(
        "data.name = 'org/reviews': cannot download it from the Hugging Face Hub (ConnectionError: Couldn't reach "
        "'org/reviews' on the Hub (OfflineModeIsEnabled)). Run where the Hub is reachable (HF_HUB_OFFLINE and "
        "HF_DATASETS_OFFLINE unset), or point the task at local files (source: parquet or csv, train and test)"
    )


def test_parquet_written_by_datasets_keeps_its_names_plain_files_name_nothing(tmp_path: Path) -> None:
    hub_dataset(synthetic(20), ["bad", "good"]).to_parquet(str(tmp_path / "named.parquet"))
    hub_dataset(synthetic(10), ["bad", "good"]).to_parquet(str(tmp_path / "named-test.parquet"))
    named = data_config(
        source="parquet", train=str(tmp_path / "named.parquet"), test=str(tmp_path / "named-test.parquet")
    )
    assert prepare({**named, "validation_fraction": 0.2}).label_names == ["bad", "good"]
    assert prepare(imdb_config(train_size=200, test_size=100)).label_names is None
    synthetic(20).to_csv(tmp_path / "train.csv", index=False)
    synthetic(10).to_csv(tmp_path / "test.csv", index=False)
    csv = data_config(source="csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))
    assert prepare({**csv, "validation_fraction": 0.2}).label_names is None


def test_aclimdb_classes_are_named_by_their_folders(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for sentiment in ("neg", "pos"):
            (tmp_path / split / sentiment).mkdir(parents=True)
            for i in range(5):
                (tmp_path / split / sentiment / f"{i}_1.txt").write_text(f"{split} {sentiment} {i}")
    assert prepare(data_config(source="aclimdb", train=str(tmp_path), validation_fraction=0.2)).label_names == [
        "neg",
        "pos",
    ]


def test_class_names_the_data_does_not_use_are_left_out_and_disagreeing_splits_are_refused(tmp_path: Path) -> None:
    hub_dataset(synthetic(20), ["neg", "pos", "unused"]).to_parquet(str(tmp_path / "train.parquet"))
    hub_dataset(synthetic(10), ["neg", "pos", "unused"]).to_parquet(str(tmp_path / "test.parquet"))
    data = data_config(source="parquet", train=str(tmp_path / "train.parquet"), test=str(tmp_path / "test.parquet"))
    assert prepare({**data, "validation_fraction": 0.2}).label_names == ["neg", "pos"]
    hub_dataset(synthetic(10), ["pos", "neg"]).to_parquet(str(tmp_path / "test.parquet"))
    message = data_error({**data, "validation_fraction": 0.2})
    assert "name the classes of column 'label' differently" in message and "['pos', 'neg']" in message


def test_a_csv_row_with_an_unquoted_comma_is_refused_not_cut(tmp_path: Path) -> None:
    from ftcompare.contract import ConfigError
    from ftcompare.plan import preflight_checks

    # pandas would make "Great movie" the row's index and train on " loved it".
    lines = ["text,label", "Great movie, loved it,1", *(f"review {i},{i % 2}" for i in range(20))]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    synthetic(5).to_csv(tmp_path / "test.csv", index=False)
    data = data_config(source="csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))
    message = data_error(data)
    assert message.startswith(f"data.train = {str(tmp_path / 'train.csv')!r}: line 2 holds 3 fields, its header 2")
    assert 'must be quoted, e.g. "Great movie, loved it"' in message
    config = load_yaml(DEFAULT_CONFIG)
    config["data"] = data
    config["model"]["name_or_path"] = "roberta-base"  # a hub id: preflight leaves it to the jobs
    with pytest.raises(ConfigError, match="line 2 holds 3 fields"):
        preflight_checks(config)


# --- hub configurations, named splits, hidden labels (issue 19) -------------------------------

FAKE_HUB = Path(__file__).resolve().parents[1] / "fake_hub"


def pairs(n_per_class: int, *, prefix: str = "", label: int | None = None) -> pd.DataFrame:
    """A sentence-pair split as GLUE's MRPC has it: sentence1, sentence2, label, idx."""
    frame = synthetic(n_per_class, prefix=prefix)
    return pd.DataFrame(
        {
            "sentence1": frame["text"],
            "sentence2": "second " + frame["text"],
            "label": frame["label"] if label is None else label,
            "idx": range(len(frame)),
        }
    )


def glue_like(root: Path) -> Path:
    """A hub dataset with two configurations as nyu-mll/glue has them: sst2 (one sentence)
    and mrpc (a pair), each with train, validation and a test split whose labels are -1."""
    for config, make, text in (("sst2", synthetic, "text"), ("mrpc", pairs, None)):
        folder = root / "glue" / config
        folder.mkdir(parents=True)
        for split, n, prefix in (("train", 20, "tr "), ("validation", 6, "va "), ("test", 5, "te ")):
            frame = make(n, prefix=prefix)
            if text:
                frame = frame.rename(columns={"text": "sentence"})
            if split == "test":
                frame["label"] = -1  # hidden, as on the hub
            frame.to_parquet(folder / f"{split}.parquet", index=False)
        (folder / "label_names.json").write_text(json.dumps(["no", "yes"]))
    return root / "glue"


def fetch_with_fake_hub(tmp_path: Path, *, name: str, folder: Path, config: str | None, splits: dict[str, str]):
    """Run ftcompare.data.fetch.fetch_dataset in a process where the hub is the tests' fake hub
    (tests/fake_hub, as the workflow tests use it): returns the files by role and the hub calls."""
    import os
    import subprocess
    import sys

    files = {role: tmp_path / "fetched" / f"{role}.parquet" for role in splits}
    log_path = tmp_path / "hub.jsonl"
    log_path.touch()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(FAKE_HUB), str(Path(__file__).resolve().parents[2] / "src")]),
        FAKE_HUB_LOG=str(log_path),
        FAKE_HUB_DATASETS=json.dumps({name: str(folder)}),
    )
    code = (
        "import json, sys; from ftcompare.data.fetch import fetch_dataset; "
        "args = json.loads(sys.argv[1]); print(json.dumps(fetch_dataset(args['name'], args['files'], "
        "config=args['config'], splits=args['splits'])))"
    )
    args = {"name": name, "files": {k: str(v) for k, v in files.items()}, "config": config, "splits": splits}
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], env=env, capture_output=True, text=True, timeout=300
    )
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    return result, files, events


def test_a_glue_task_fetches_its_configuration_and_tests_on_its_validation_split(tmp_path: Path) -> None:
    """GLUE's test labels are hidden: test = the hub's validation split, validation carved
    from train. The fetch asks the (fake) hub for the configuration and writes one file a role."""
    folder = glue_like(tmp_path / "hub")
    data = data_config(
        source="hub",
        name="nyu-mll/glue",
        config="sst2",
        test_split="validation",
        text_column="sentence",
        validation_fraction=0.25,
    )
    from ftcompare.data import hub_splits

    result, files, events = fetch_with_fake_hub(
        tmp_path, name="nyu-mll/glue", folder=folder, config="sst2", splits=hub_splits(data)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {"train": 40, "test": 12}
    assert [(e["event"], e["name"], e["config"]) for e in events] == [("load_dataset", "nyu-mll/glue", "sst2")]
    assert sorted(p.name for p in files["train"].parent.iterdir()) == ["test.parquet", "train.parquet"]
    prepared = prepare(data, hub_files=files)
    # The test split is the hub's validation split, whole; validation is a quarter of train.
    assert sorted(prepared.splits["test"]["text"]) == sorted(
        pd.read_parquet(folder / "sst2" / "validation.parquet")["sentence"]
    )
    assert (len(prepared.splits["train"]), len(prepared.splits["validation"])) == (30, 10)
    assert all(t.startswith("tr ") for t in prepared.splits["validation"]["text"])
    assert prepared.label_names == ["no", "yes"]


def test_a_validation_split_the_hub_has_is_used_as_given_not_carved(tmp_path: Path) -> None:
    folder = glue_like(tmp_path / "hub")
    data = data_config(
        source="hub",
        name="org/glue",
        config="mrpc",
        validation_split="validation",
        test_split="validation",
        text_column="sentence1",
        text_pair_column="sentence2",
    )
    from ftcompare.data import hub_splits

    with pytest.raises(DataError, match="'validation' is configured for test and validation"):
        hub_splits(data)
    # Train on part of train, choose on the hub's validation split, test on... the hidden test: refused below.
    data = {**data, "train_split": "train", "test_split": "test"}
    result, files, _ = fetch_with_fake_hub(
        tmp_path, name="org/glue", folder=folder, config="mrpc", splits=hub_splits(data)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(files) == {"train", "validation", "test"} and all(p.is_file() for p in files.values())
    message = str(pytest.raises(DataError, prepare, data, hub_files=files).value)
    assert "org/glue/mrpc" in message and "test split" in message and "10 unlabelled row(s) of 10" in message
    assert "GLUE hides its test labels" in message and "test_split: validation" in message
    # With a labelled test split (here the fake hub's train split renamed would do; use a local copy instead).
    labelled = tmp_path / "labelled-test.parquet"
    pairs(5, prefix="lt ").to_parquet(labelled, index=False)
    prepared = prepare(data, hub_files={**files, "test": labelled})
    assert len(prepared.splits["train"]) == 40  # nothing carved from train
    assert sorted(prepared.splits["validation"]["text"]) == sorted(pairs(6, prefix="va ")["sentence1"])
    for frame in prepared.splits.values():
        assert list(frame.columns) == ["text", "text_pair", "label"]
        assert (frame["text_pair"] == "second " + frame["text"]).all()  # the pair stays together
    assert prepared.text_columns == {"text": "sentence1", "text_pair": "sentence2"}


def test_an_unknown_configuration_or_split_names_what_the_hub_has(tmp_path: Path) -> None:
    folder = glue_like(tmp_path / "hub")
    result, _, _ = fetch_with_fake_hub(
        tmp_path, name="nyu-mll/glue", folder=folder, config="sst2", splits={"train": "train", "test": "dev"}
    )
    assert result.returncode != 0
    assert "data.test_split = 'dev'" in result.stderr and "'validation'" in result.stderr
    result, _, _ = fetch_with_fake_hub(
        tmp_path, name="nyu-mll/glue", folder=folder, config="sst-2", splits={"train": "train", "test": "test"}
    )
    assert result.returncode != 0 and "set data.config" in result.stderr


def test_unlabelled_rows_in_a_local_split_stop_with_the_file_split_and_count(tmp_path: Path) -> None:
    train, test = synthetic(10), synthetic(5, prefix="t ")
    test["label"] = test["label"].astype("float")
    test.loc[[1, 3], "label"] = np.nan
    test.loc[4, "label"] = -1
    data = write_parquet_pair(tmp_path, train, test)
    message = data_error({**data, "validation_fraction": 0.2})
    assert "the test split" in message and "3 unlabelled row(s) of 10" in message and "test.parquet" in message
    assert "GLUE" not in message  # a local file: no hidden hub labels to blame


def test_a_local_validation_file_is_used_as_given(tmp_path: Path) -> None:
    data = write_parquet_pair(tmp_path, synthetic(10), synthetic(5, prefix="t "))
    synthetic(4, prefix="v ").to_parquet(tmp_path / "validation.parquet", index=False)
    prepared = prepare({**data, "validation": str(tmp_path / "validation.parquet")})
    assert len(prepared.splits["train"]) == 20
    assert sorted(prepared.splits["validation"]["text"]) == sorted(synthetic(4, prefix="v ")["text"])


def test_new_data_keys_move_the_cache_only_when_set() -> None:
    from ftcompare.data import settings_used

    default = data_config()
    assert set(settings_used(default)) == {"source", "name", *COMMON_SETTING_KEYS}  # as before the new keys
    glue = settings_used(
        data_config(name="nyu-mll/glue", config="mrpc", test_split="validation", text_pair_column="s2")
    )
    assert (glue["config"], glue["test_split"], glue["text_pair_column"]) == ("mrpc", "validation", "s2")
    assert "validation_split" not in glue and "train_split" not in glue
    local = settings_used(data_config(source="parquet", train="a", test="b", validation="v", config="ignored"))
    assert local["validation"] == "v" and "config" not in local  # a key the source ignores moves nothing


COMMON_SETTING_KEYS = ("text_column", "label_column", "train_size", "test_size", "validation_fraction", "split_seed")


def test_local_files_name_their_classes_by_label_names(tmp_path: Path) -> None:
    from ftcompare.contract import ConfigError
    from ftcompare.plan import checked_config, load_config

    synthetic(20).to_csv(tmp_path / "train.csv", index=False)
    synthetic(10).to_csv(tmp_path / "test.csv", index=False)
    csv = data_config(source="csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))
    named = prepare({**csv, "validation_fraction": 0.2, "label_names": ["negative", "positive"]})
    assert named.label_names == ["negative", "positive"] and named.summary()["label_names"] == named.label_names
    assert prepare(imdb_config(train_size=200, test_size=100, label_names=["neg", "pos"])).label_names == ["neg", "pos"]
    # Names that cannot name every class apart: refused.
    assert "distinct" in data_error({**csv, "validation_fraction": 0.2, "label_names": ["same", "same"]})
    assert "names 1 classes" in data_error({**csv, "validation_fraction": 0.2, "label_names": ["negative"]})
    config = load_config()
    config["data"]["label_names"] = "negative"  # not a list
    with pytest.raises(ConfigError, match="label_names"):
        checked_config(config)
