"""Tests for ftcompare.workflow_support.retry_marker: the rerun trigger of failed runs.

The file it reads is the attempt file a fine-tune job writes beside its outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftcompare.workflow_support import FIRST_ATTEMPT, retry_marker


def write_record(path: Path, record: Any) -> Path:
    path.write_text(json.dumps(record))
    return path


@pytest.fixture
def record_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "lora" / "seed0" / "record.json"


def test_no_record_is_the_first_attempt(record_path: Path) -> None:
    assert FIRST_ATTEMPT == "first"
    assert retry_marker(record_path) == "first"
    assert retry_marker(str(record_path)) == "first"


def test_a_directory_is_not_a_record(tmp_path: Path) -> None:
    assert retry_marker(tmp_path) == "first"


@pytest.mark.parametrize("stored", ["first", "retry-after-failed-2025-01-01T00:00:00"])
def test_ok_record_returns_its_stored_marker(tmp_path: Path, stored: str) -> None:
    path = write_record(
        tmp_path / "record.json",
        {"status": "ok", "retry_marker": stored, "finished_at": "2025-02-02T10:00:00"},
    )
    assert retry_marker(path) == stored


def test_ok_record_without_marker_is_first(tmp_path: Path) -> None:
    path = write_record(tmp_path / "record.json", {"status": "ok"})
    assert retry_marker(path) == FIRST_ATTEMPT


@pytest.mark.parametrize("status", ["failed", "skipped"])
def test_failed_or_skipped_record_triggers_a_retry(tmp_path: Path, status: str) -> None:
    def marker(finished_at: str, stored: str = FIRST_ATTEMPT) -> str:
        path = write_record(
            tmp_path / f"{status}.json",
            {"status": status, "retry_marker": stored, "finished_at": finished_at},
        )
        return retry_marker(path)

    first = marker("2025-03-01T12:00:00")
    assert first != FIRST_ATTEMPT
    assert status in first
    assert "2025-03-01T12:00:00" in first
    later = marker("2025-03-02T08:30:00", stored=first)
    assert later != first  # a second failure (recorded with the first marker) retries again
    assert later != FIRST_ATTEMPT
    assert marker("2025-03-01T12:00:00") == first  # deterministic for the same record
    assert marker("2025-03-01T12:00:00", stored="x") != "x"


def test_failed_and_skipped_markers_differ(tmp_path: Path) -> None:
    finished = "2025-03-01T12:00:00"
    failed = retry_marker(write_record(tmp_path / "a.json", {"status": "failed", "finished_at": finished}))
    skipped = retry_marker(write_record(tmp_path / "b.json", {"status": "skipped", "finished_at": finished}))
    assert failed != skipped


def test_failed_record_without_finish_time(tmp_path: Path) -> None:
    path = write_record(tmp_path / "record.json", {"status": "failed"})
    marker = retry_marker(path)
    assert marker not in (FIRST_ATTEMPT, "")
    assert "failed" in marker


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b'{"status": "ok", ', b"\xff\xfe\x00garbage"],
    ids=["broken", "empty", "truncated", "binary"],
)
def test_unreadable_record_triggers_a_retry(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "record.json"
    path.write_bytes(content)
    marker = retry_marker(path)
    assert isinstance(marker, str)
    assert marker != FIRST_ATTEMPT
    assert "unreadable" in marker


@pytest.mark.parametrize("record", [[], ["ok"], "ok", 3, None], ids=["list", "list1", "str", "int", "null"])
def test_json_that_is_not_an_object_triggers_a_retry(tmp_path: Path, record: Any) -> None:
    marker = retry_marker(write_record(tmp_path / "record.json", record))
    assert marker != FIRST_ATTEMPT
    assert "unreadable" in marker


# --- preflight: bad sources stop Snakemake before any job starts -----------------------

from ftcompare.config import ConfigError  # noqa: E402
from ftcompare.workflow_support import preflight  # noqa: E402


def study(*, source: str = "parquet", train: Path | None = None, test: Path | None = None,
          model: str = "roberta-base", max_length: int = 512) -> dict[str, Any]:  # fmt: skip
    return {
        "data": {"source": source, "train": str(train) if train else None, "test": str(test) if test else None,
                 "text_column": "text", "label_column": "label"},  # fmt: skip
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
    data = parquet(tmp_path / "d.parquet", text=["a"], label=[0])
    model = model_folder(tmp_path / "m", model_type="roberta", max_position_embeddings=514, pad_token_id=1)
    preflight(study(train=data, test=data, model=str(model), max_length=512))


def test_preflight_leaves_hub_sources_to_the_jobs(tmp_path: Path) -> None:
    preflight(study(source="hub"))


def test_preflight_names_missing_columns(tmp_path: Path) -> None:
    good = parquet(tmp_path / "good.parquet", text=["a"], label=[0])
    bad = parquet(tmp_path / "bad.parquet", review=["a"], label=[0])
    with pytest.raises(ConfigError, match=r"data.test = .*bad.parquet' has no column\(s\) \['text'\]; it has \['review', 'label'\]"):
        preflight(study(train=good, test=bad))


def test_preflight_rejects_non_utf8_csv(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("t\xe9xt,label\ncaf\xe9,0\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not valid UTF-8"):
        preflight(study(source="csv", train=bad, test=bad))


def test_preflight_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.train = '.*nope.parquet' does not exist"):
        preflight(study(train=tmp_path / "nope.parquet", test=tmp_path / "nope.parquet"))


def test_preflight_rejects_a_model_folder_without_weights(tmp_path: Path) -> None:
    data = parquet(tmp_path / "d.parquet", text=["a"], label=[0])
    model = model_folder(tmp_path / "m", weights=False, model_type="bert", max_position_embeddings=512)
    with pytest.raises(ConfigError, match="has no weights; expected one of"):
        preflight(study(train=data, test=data, model=str(model)))


def test_preflight_rejects_max_length_above_the_position_limit(tmp_path: Path) -> None:
    data = parquet(tmp_path / "d.parquet", text=["a"], label=[0])
    model = model_folder(tmp_path / "m", model_type="roberta", max_position_embeddings=514, pad_token_id=1)
    with pytest.raises(ConfigError, match=r"training.max_length = 513 exceeds .* \(512 tokens"):
        preflight(study(train=data, test=data, model=str(model), max_length=513))


def test_preflight_rejects_an_incomplete_aclimdb_folder(tmp_path: Path) -> None:
    (tmp_path / "aclImdb" / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no test/ folder"):
        preflight(study(source="aclimdb", train=tmp_path / "aclImdb"))
