"""Tests for ftcompare.records: run status, and the attempt file whose retry marker is
the rerun trigger of failed runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftcompare.records import FIRST_ATTEMPT, Status, retry_marker, write_attempt


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


def test_a_run_that_would_fail_the_same_way_is_not_retried(tmp_path: Path) -> None:
    # A diverged run: the same settings diverge again, so a plain rerun leaves it failed.
    path = tmp_path / "attempt.json"
    write_attempt(path, status=Status.FAILED, retry_marker="first", finished_at="2025-03-01T12:00:00", retry=False)
    assert retry_marker(path) == "first"
    write_attempt(path, status=Status.FAILED, retry_marker="first", finished_at="2025-03-01T12:00:00")
    assert retry_marker(path).startswith("retry-after-failed")


def test_the_worst_status_wins() -> None:
    assert Status.worst("ok", "skipped") is Status.SKIPPED
    assert Status.worst("failed", "ok", "skipped") is Status.FAILED
    assert Status.worst("ok") == "ok"  # statuses are the plain words records hold
    with pytest.raises(ValueError):
        Status.worst("ok", "diverged")


def test_evaluating_a_run_that_did_not_train_passes_its_status_on_once(tmp_path: Path) -> None:
    # Evaluating it again would give the same record: a plain rerun must not plan it.
    from specs import make_spec

    from ftcompare.jobs import evaluate_job

    spec = make_spec(tmp_path / "model", "lora")
    train = {
        "kind": "train",
        "strategy": "lora",
        "seed": 0,
        "status": "failed",
        "reason": "diverged",
        "config": spec.to_dict(),
    }
    (tmp_path / "train.json").write_text(json.dumps(train))
    attempt = tmp_path / "eval-attempt.json"
    record = evaluate_job(
        train_record_path=tmp_path / "train.json",
        tokenized_dir=tmp_path / "unused",
        model_dir=tmp_path / "unused",
        record_path=tmp_path / "eval.json",
        predictions_path=tmp_path / "predictions.parquet",
        attempt_path=attempt,
        retry_marker="first",
    )
    assert (record["status"], record["reason"]) == ("failed", "diverged")
    assert retry_marker(attempt) == "first"
