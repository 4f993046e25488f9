"""Tests for ftcompare.plan.preflight.preflight: bad sources stop Snakemake before any job starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftcompare.contract import ConfigError
from ftcompare.plan import preflight_checks


def study(
    *,
    source: str = "parquet",
    train: Path | None = None,
    test: Path | None = None,
    model: str = "roberta-base",
    max_length: int = 512,
) -> dict[str, Any]:
    return {
        "data": {
            "source": source,
            "train": str(train) if train else None,
            "test": str(test) if test else None,
            "text_column": "text",
            "label_column": "label",
        },
        "model": {"name_or_path": model},
        "training": {"max_length": max_length},
    }


def parquet(path: Path, **columns: list) -> Path:
    import pandas as pd

    pd.DataFrame(columns).to_parquet(path)
    return path


def model_folder(path: Path, *, weights: bool = True, **config: Any) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    if weights:
        (path / "model.safetensors").write_bytes(b"weights")
    return path


def test_preflight_accepts_good_local_sources(tmp_path: Path) -> None:
    data = parquet(tmp_path / "d.parquet", text=["a", "b"], label=[0, 1])
    model = model_folder(tmp_path / "m", model_type="roberta", max_position_embeddings=514, pad_token_id=1)
    preflight_checks(study(train=data, test=data, model=str(model), max_length=512))


def test_preflight_refuses_the_positive_class_f1_for_three_classes(tmp_path: Path) -> None:
    data = parquet(tmp_path / "d.parquet", text=["a", "b", "c"], label=[0, 1, 2])
    config = study(train=data, test=data)
    config["data"]["metric"] = "f1"
    with pytest.raises(ConfigError, match="data.metric = 'f1' is the F1 of the positive class, for binary tasks"):
        preflight_checks(config)
    config["data"]["metric"] = "macro_f1"
    preflight_checks(config)


def test_preflight_leaves_hub_sources_to_the_jobs(tmp_path: Path) -> None:
    preflight_checks(study(source="hub"))


def test_preflight_names_missing_columns(tmp_path: Path) -> None:
    good = parquet(tmp_path / "good.parquet", text=["a", "b"], label=[0, 1])
    bad = parquet(tmp_path / "bad.parquet", review=["a"], label=[0])
    with pytest.raises(
        ConfigError, match=r"data.test = .*bad.parquet' has no column\(s\) \['text'\]; it has \['review', 'label'\]"
    ):
        preflight_checks(study(train=good, test=bad))


def test_preflight_rejects_non_utf8_csv(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("t\xe9xt,label\ncaf\xe9,0\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not valid UTF-8"):
        preflight_checks(study(source="csv", train=bad, test=bad))


def test_preflight_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.train = '.*nope.parquet' does not exist"):
        preflight_checks(study(train=tmp_path / "nope.parquet", test=tmp_path / "nope.parquet"))


def test_preflight_rejects_a_model_folder_without_weights(tmp_path: Path) -> None:
    data = parquet(tmp_path / "d.parquet", text=["a", "b"], label=[0, 1])
    model = model_folder(tmp_path / "m", weights=False, model_type="bert", max_position_embeddings=512)
    with pytest.raises(ConfigError, match="has no weights; expected one of"):
        preflight_checks(study(train=data, test=data, model=str(model)))


def test_preflight_rejects_max_length_above_the_position_limit(tmp_path: Path) -> None:
    data = parquet(tmp_path / "d.parquet", text=["a", "b"], label=[0, 1])
    model = model_folder(tmp_path / "m", model_type="roberta", max_position_embeddings=514, pad_token_id=1)
    with pytest.raises(ConfigError, match=r"training.max_length = 513 exceeds .* \(512 tokens"):
        preflight_checks(study(train=data, test=data, model=str(model), max_length=513))


def test_preflight_rejects_an_incomplete_aclimdb_folder(tmp_path: Path) -> None:
    (tmp_path / "aclImdb" / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no test/ folder"):
        preflight_checks(study(source="aclimdb", train=tmp_path / "aclImdb"))


# --- preflight reads labels, classes, row counts and encodings before any job -----------


def labelled(path: Path, labels: list, texts: list | None = None) -> Path:
    return parquet(path, text=texts or [f"review {i}" for i in range(len(labels))], label=labels)


def sized(data_train: Path, data_test: Path, *, source: str = "parquet", **sizes: Any) -> dict[str, Any]:
    config = study(source=source, train=data_train, test=data_test)
    config["data"].update(sizes)
    return config


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        (
            ["neg", "pos"] * 3,
            [0, 1],
            r"data.train = '.*train.parquet': row 0 has label 'neg' .* "
            r"map the class names to numbers, e.g. \{'neg': 0, 'pos': 1\}",
        ),
        ([1, 2] * 3, [1, 2], r"the labels are \[1, 2\], but they must be 0..K-1 .* renumber them: \{1: 0, 2: 1\}"),
        ([0, 1] * 3, [0, 0], r"data.test = '.*test.parquet' is missing class\(es\) \[1\]"),
        ([True, False] * 3, [0, 1], r"data.train = '.*train.parquet': label column 'label' holds booleans"),
    ],
    ids=["string-labels", "labels-1-2", "split-missing-a-class", "boolean-labels"],
)
def test_preflight_checks_every_label(tmp_path: Path, train: list, test: list, message: str) -> None:
    config = sized(labelled(tmp_path / "train.parquet", train), labelled(tmp_path / "test.parquet", test))
    with pytest.raises(ConfigError, match=message):
        preflight_checks(config)


def test_preflight_finds_null_texts(tmp_path: Path) -> None:
    train = labelled(tmp_path / "train.parquet", [0, 1, 0, 1], texts=["a", None, "c", "d"])
    with pytest.raises(
        ConfigError,
        match=r"data.train = '.*': text column 'text' has 1 missing \(null\) value\(s\), "
        r"the first in row 1",
    ):
        preflight_checks(sized(train, labelled(tmp_path / "test.parquet", [0, 1])))


def test_preflight_compares_subset_sizes_with_parquet_row_counts(tmp_path: Path) -> None:
    train, test = labelled(tmp_path / "train.parquet", [0, 1] * 5), labelled(tmp_path / "test.parquet", [0, 1] * 3)
    preflight_checks(sized(train, test, train_size=10, test_size=6))
    with pytest.raises(
        ConfigError,
        match=r"data.train_size = 11 is larger than the 10 rows of data.train = "
        r"'.*train.parquet'; use at most 10, or null for all",
    ):
        preflight_checks(sized(train, test, train_size=11))
    with pytest.raises(ConfigError, match=r"data.test_size = 7 is larger than the 6 rows of data.test"):
        preflight_checks(sized(train, test, test_size=7))


def test_preflight_reads_the_whole_csv_as_utf8(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("text,label\na,0\nb,1\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    content = b"text,label\n" + b"fine review,0\n" * 1000 + b"caf\xe9,1\n"
    bad.write_bytes(content)  # the header is fine: the bad byte is on line 1002
    offset = content.index(bytes([0xE9]))
    with pytest.raises(
        ConfigError,
        match=rf"data.train = '.*bad.csv' is not valid UTF-8: byte 0xe9 at offset "
        rf"{offset} \(line 1002\)",
    ):
        preflight_checks(study(source="csv", train=bad, test=good))


def test_preflight_reads_a_byte_order_mark_transparently(tmp_path: Path) -> None:
    bom = tmp_path / "excel.csv"
    bom.write_bytes(b"\xef\xbb\xbftext,label\na,0\nb,1\n")
    preflight_checks(study(source="csv", train=bom, test=bom))


def test_preflight_checks_csv_labels(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("text,label\na,0\nb,1\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\na,0\nb,\nc,1\n", encoding="utf-8")
    with pytest.raises(
        ConfigError,
        match=r"data.test = '.*bad.csv': label column 'label' has 1 missing value\(s\), "
        r"the first in row 1",
    ):
        preflight_checks(study(source="csv", train=good, test=bad))


def test_preflight_counts_aclimdb_reviews(tmp_path: Path) -> None:
    root = tmp_path / "aclImdb"
    for split, counts in (("train", (3, 3)), ("test", (2, 0))):
        for sentiment, count in zip(("neg", "pos"), counts):
            (root / split / sentiment).mkdir(parents=True)
            for i in range(count):
                (root / split / sentiment / f"{i}_1.txt").write_text("review")
    with pytest.raises(ConfigError, match=r"data.train = '.*aclImdb' \(test/\) is missing class\(es\) \[1\]"):
        preflight_checks(study(source="aclimdb", train=root))


def test_preflight_reads_the_full_imdb_copy() -> None:
    # Preflight runs every time Snakemake builds the job graph: at full size it reads
    # only labels and Parquet metadata (about 0.1 s for 25,000 + 25,000 reviews here).
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "imdb"
    if not (shared / "train.parquet").is_file():
        pytest.skip(f"the full IMDB copy is not at {shared} (a benchmark-sized check; the sample covers the rest)")
    preflight_checks(sized(shared / "train.parquet", shared / "test.parquet", train_size=25_000, test_size=25_000))


# --- target_modules / feedforward_modules name modules that exist -------------------------


def with_strategies(tmp_path: Path, model: Path, strategies: dict[str, Any]) -> dict[str, Any]:
    data = labelled(tmp_path / "d.parquet", [0, 1])
    config = study(train=data, test=data, model=str(model), max_length=64)
    config["strategies"] = strategies
    return config


def test_preflight_names_a_target_module_typo_and_its_close_match(tmp_path: Path, tiny_roberta: Path) -> None:
    config = with_strategies(tmp_path, tiny_roberta, {"lora": {"lora": {"target_modules": ["query", "vlaue"]}}})
    with pytest.raises(
        ConfigError,
        match=r"strategies.lora.lora.target_modules: 'vlaue' matches no module of "
        r"'.*' \(did you mean 'value'\?\)\. Its innermost modules are named "
        r".*\.\.\.query, .*\.\.\.value",
    ):
        preflight_checks(config)


def test_preflight_names_a_feedforward_module_typo(tmp_path: Path, tiny_roberta: Path) -> None:
    ia3 = {"target_modules": ["key", "value", "output.dense"], "feedforward_modules": ["output.dens"]}
    config = with_strategies(tmp_path, tiny_roberta, {"ia3": {"ia3": ia3}})
    with pytest.raises(
        ConfigError,
        match=r"strategies.ia3.ia3.feedforward_modules: 'output.dens' matches no module"
        r" of '.*' \(did you mean 'output.dense'",
    ):
        preflight_checks(config)


def test_preflight_accepts_modules_the_weights_file_does_not_hold(tmp_path: Path, tiny_roberta: Path) -> None:
    # RoBERTa's classification head (classifier.out_proj) is created at load time: the
    # safetensors header cannot confirm it, the model's structure does.
    preflight_checks(
        with_strategies(tmp_path, tiny_roberta, {"lora": {"lora": {"target_modules": ["query", "out_proj"]}}})
    )


def test_cache_keys_follow_exactly_the_settings_a_source_reads() -> None:
    from ftcompare.contract import cache_key
    from ftcompare.data import settings_used
    from ftcompare.plan import DEFAULT_CONFIG, load_yaml

    def key(**data: Any) -> str:
        return cache_key(
            settings_used(
                {
                    **load_yaml(DEFAULT_CONFIG)["data"],
                    "source": "parquet",
                    "train": "a.parquet",
                    "test": "b.parquet",
                    **data,
                }
            )
        )

    assert key() == key() and len(key()) == 12
    assert key(name="some/other-dataset") == key()  # Parquet files do not read data.name
    for change in ({"train": "c.parquet"}, {"train_size": 500}, {"split_seed": 7}, {"label_column": "y"}):
        assert key(**change) != key(), change


def test_preflight_checks_a_pair_column_like_the_text_column(tmp_path):
    """A sentence-pair task's second column: present, strings, no nulls, before any job."""
    import pandas as pd

    from ftcompare.plan import DEFAULT_CONFIG, load_yaml
    from ftcompare.plan.preflight import _check_data_source

    frame = pd.DataFrame({"s1": ["a b", "c d"] * 5, "s2": ["e", "f"] * 5, "label": [0, 1] * 5})
    frame.to_parquet(tmp_path / "train.parquet", index=False)
    frame.to_parquet(tmp_path / "test.parquet", index=False)
    data = {
        **load_yaml(DEFAULT_CONFIG)["data"],
        "source": "parquet",
        "train": str(tmp_path / "train.parquet"),
        "test": str(tmp_path / "test.parquet"),
        "text_column": "s1",
        "text_pair_column": "s2",
    }
    _check_data_source(data)  # a good pair passes
    with pytest.raises(ConfigError, match=r"has no column\(s\) \['s3'\].*data.text_pair_column"):
        _check_data_source({**data, "text_pair_column": "s3"})
    frame.loc[3, "s2"] = None
    frame.to_parquet(tmp_path / "test.parquet", index=False)
    with pytest.raises(Exception, match=r"text column 's2' has 1 missing \(null\) value"):
        _check_data_source(data)


def test_a_cells_cache_keys_follow_its_data_then_its_model_and_length() -> None:
    from ftcompare.plan import cell_cache_keys, checked_study, load_config

    repo = Path(__file__).resolve().parents[2]
    _, cells = checked_study(load_config(repo / "config" / "glue.yaml", repo / "config" / "encoders.yaml"))
    keys = {(cell.task, cell.model): cell_cache_keys(cfg) for cell, cfg in cells.items()}
    # Data is shared by a task's models; tokens are not.
    assert (
        keys[("rte", "roberta-base")][0] == keys[("rte", "bert-base-uncased")][0] != keys[("mnli", "roberta-base")][0]
    )
    assert keys[("rte", "roberta-base")][1] != keys[("rte", "bert-base-uncased")][1]
