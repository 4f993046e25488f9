"""Tests for ftcompare.contract.records: run status, and the attempt file whose retry marker is
the rerun trigger of failed runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftcompare.contract import FIRST_ATTEMPT, Status, retry_marker, write_attempt


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

    from ftcompare.evaluate import evaluate_job

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


# --- record formats: every record says its format; older ones are upgraded where read ------


def test_a_train_record_without_a_version_is_read_as_the_current_format(tmp_path: Path) -> None:
    from specs import make_spec

    from ftcompare.contract import FORMAT_VERSION, read_record
    from ftcompare.methods import RunSpec

    spec = make_spec(tmp_path / "model", "lora")
    # As the first format wrote it: no version, no settings that came later, null blocks.
    older = {k: v for k, v in spec.to_dict().items() if k not in ("bucket_width", "cuda_graphs", "metric")}
    record = {"kind": "train", "strategy": "lora", "seed": 0, "status": "ok", "config": {**older, "ia3": None}}
    path = write_record(tmp_path / "train.json", record)
    upgraded = read_record(path, kind="train")
    assert upgraded["format_version"] == FORMAT_VERSION
    loaded = RunSpec.from_dict(upgraded["config"])
    assert (loaded.bucket_width, loaded.cuda_graphs) == (None, False)  # how such a run trained
    assert loaded.metric == "accuracy"  # its best epoch was chosen on accuracy
    assert loaded.block("lora") == spec.block("lora") and loaded.block("ia3") is None


def test_format_1_metrics_read_as_format_2(tmp_path: Path) -> None:
    from ftcompare.contract import read_record

    # Format 1: `f1` was the macro-F1; the best epoch was chosen on accuracy.
    matrix = [[3, 1], [1, 5]]  # 5 of the positive class right, 1 missed, 1 false alarm
    eval_path = write_record(
        tmp_path / "eval.json",
        {
            "kind": "eval",
            "format_version": 1,
            "status": "ok",
            "metrics": {"accuracy": 0.8, "f1": 0.79, "confusion_matrix": matrix},
        },
    )
    metrics = read_record(eval_path, kind="eval")["metrics"]
    assert metrics["macro_f1"] == 0.79
    assert metrics["f1"] == pytest.approx(2 * 5 / (2 * 5 + 1 + 1))  # the positive class's now
    assert metrics["mcc"] == pytest.approx((5 * 3 - 1 * 1) / 24)  # (tp tn - fp fn) / sqrt(6 * 6 * 4 * 4)
    train_path = write_record(
        tmp_path / "train.json",
        {"kind": "train", "format_version": 1, "status": "ok", "metrics": {"best_val_accuracy": 0.9}},
    )
    train = read_record(train_path, kind="train")["metrics"]
    assert (train["best_val_metric"], train["best_val_score"]) == ("accuracy", 0.9)


def test_a_record_of_a_newer_format_is_refused_naming_it(tmp_path: Path) -> None:
    from ftcompare.contract import read_record

    path = write_record(tmp_path / "eval.json", {"kind": "eval", "format_version": 99, "status": "ok"})
    with pytest.raises(ValueError, match=r"eval\.json: record format_version 99 is newer"):
        read_record(path, kind="eval")


def test_the_jobs_records_carry_the_format_version(tmp_path: Path) -> None:
    from ftcompare.contract import FORMAT_VERSION, read_selection, write_selection

    write_attempt(tmp_path / "attempt.json", status=Status.OK, retry_marker="first", finished_at="2025-01-01")
    assert json.loads((tmp_path / "attempt.json").read_text())["format_version"] == FORMAT_VERSION
    selected = {"lora": {"values": {"learning_rate": 1e-3}, "val_accuracy": 0.9, "trial": "learning_rate=0.001"}}
    write_selection(tmp_path / "selected.yaml", selected)
    assert read_selection(tmp_path / "selected.yaml") == selected
    # A selection written before records had a version: the mapping alone.
    (tmp_path / "old.yaml").write_text("lora:\n  values: {learning_rate: 0.001}\n  val_accuracy: 0.9\n")
    assert read_selection(tmp_path / "old.yaml") == {"lora": {"values": {"learning_rate": 0.001}, "val_accuracy": 0.9}}
