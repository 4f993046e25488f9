"""Tests for ftcompare.tables: loading and pairing records, the per-run and per-strategy tables."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from records import NO_BNB, OOM, REQUIRED_COLUMNS, all_failed_runs, eval_record, mixed_runs, train_record, write_records

from ftcompare.tables import (
    SUMMARY_COLUMNS,
    Results,
    aggregate_by_strategy,
    load_runs,
    summary_table,
    write_summary_csv,
)


@pytest.fixture()
def mixed(tmp_path: Path):
    return mixed_runs(tmp_path / "runs")


@pytest.fixture()
def all_failed(tmp_path: Path):
    return all_failed_runs(tmp_path / "runs")


def test_pairing_and_status_precedence(mixed) -> None:
    keyed = {(run.strategy, run.seed): run for run in mixed}
    assert len(mixed) == 6
    assert keyed[("lora", 1)].eval["metrics"]["accuracy"] == 0.93
    assert keyed[("lora", 0)].eval["metrics"]["accuracy"] == 0.91
    # failed beats skipped, and the first non-null reason (train's) wins.
    assert keyed[("ia3", 0)].status == "failed"
    assert keyed[("ia3", 0)].reason == OOM
    assert keyed[("qlora", 0)].status == "skipped"
    assert keyed[("qlora", 0)].reason == NO_BNB
    assert keyed[("full", 0)].status == "ok" and keyed[("full", 0)].reason is None


def test_eval_failure_makes_an_ok_training_run_failed(tmp_path: Path) -> None:
    paths = write_records(
        tmp_path, [(train_record("lora", 0), eval_record("lora", 0, status="failed", reason="eval crashed"))]
    )
    (run,) = load_runs(train_paths=paths[0], eval_paths=paths[1])
    assert (run.status, run.reason) == ("failed", "eval crashed")


def test_runs_keep_config_order_and_sort_seeds(mixed) -> None:
    assert [(run.strategy, run.seed) for run in mixed] == [
        ("lora", 0),
        ("lora", 1),
        ("full", 0),
        ("full", 1),
        ("qlora", 0),
        ("ia3", 0),
    ]


def test_bad_status_raises_naming_it(tmp_path: Path) -> None:
    paths = write_records(tmp_path, [(train_record("lora", 0, status="crashed"), eval_record("lora", 0))])
    with pytest.raises(ValueError, match=r"'crashed' is not one of \['ok', 'skipped', 'failed'\]"):
        load_runs(train_paths=paths[0], eval_paths=paths[1])


def test_swapped_kinds_and_unpaired_runs_raise(tmp_path: Path) -> None:
    train_paths, eval_paths = write_records(tmp_path, [(train_record("lora", 0), eval_record("lora", 0))])
    with pytest.raises(ValueError, match="kind 'eval'"):
        load_runs(train_paths=eval_paths, eval_paths=train_paths)
    with pytest.raises(ValueError, match="only one of train/eval"):
        load_runs(train_paths=train_paths, eval_paths=[])


# --------------------------------------------------------------------------- tables


def test_summary_columns_order_and_values(mixed) -> None:
    table = summary_table(runs=mixed)
    assert list(table.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert list(dict.fromkeys(table["strategy"])) == ["lora", "full", "qlora", "ia3"]
    lora0 = table[(table["strategy"] == "lora") & (table["seed"] == 0)].iloc[0]
    assert lora0["accuracy"] == pytest.approx(0.91)
    assert lora0["trainable_pct"] == pytest.approx(100 * 890_000 / 125_000_000)
    assert lora0["peak_gpu_mem_gb"] == pytest.approx(10.0)  # reserved preferred over allocated (8.0)
    full0 = table[(table["strategy"] == "full") & (table["seed"] == 0)].iloc[0]
    assert full0["peak_gpu_mem_gb"] == pytest.approx(8.0)  # no reserved figure: allocated
    assert lora0["device"] == "NVIDIA H200"


def test_missing_metrics_are_nan(mixed) -> None:
    table = summary_table(runs=mixed).set_index("strategy")
    assert math.isnan(table.loc["qlora", "accuracy"])
    assert math.isnan(table.loc["qlora", "trainable_pct"])
    assert math.isnan(table.loc["ia3", "peak_rss_gb"])
    assert table.loc["ia3", "train_time_s"] == 5.0  # partial metrics survive
    assert table.loc["ia3", "reason"] == OOM


def test_write_summary_csv_round_trips(mixed, tmp_path: Path) -> None:
    path = tmp_path / "out" / "summary.csv"
    write_summary_csv(table=summary_table(runs=mixed), path=path)
    read = pd.read_csv(path)
    assert list(read.columns) == list(SUMMARY_COLUMNS)
    assert len(read) == 6


def test_aggregate_matches_hand_computed(mixed) -> None:
    agg = aggregate_by_strategy(table=summary_table(runs=mixed)).set_index("strategy")
    assert list(agg.index) == ["lora", "full", "qlora", "ia3"]
    assert agg.loc["lora", "accuracy_mean"] == pytest.approx(0.92)
    assert agg.loc["lora", "accuracy_std"] == pytest.approx(math.sqrt(2) * 0.01)  # ddof=1
    assert agg.loc["full", "train_time_s_mean"] == pytest.approx(320.0)
    assert agg.loc["full", "train_time_s_std"] == pytest.approx(math.sqrt(800.0))
    assert agg.loc["full", "accuracy_count"] == 2
    assert agg.loc["lora", "n_ok"] == 2
    # The failed ia3 run's partial train time must not enter the aggregate.
    assert agg.loc["ia3", "n_ok"] == 0 and agg.loc["ia3", "train_time_s_count"] == 0
    assert math.isnan(agg.loc["ia3", "train_time_s_mean"])
    # 95% CI of the mean over 2 seeds: with one degree of freedom t is Cauchy, so
    # t(0.975) = tan(0.475 pi) = 12.706; half-width t * sd / sqrt(2) = t * 0.01.
    t = math.tan(0.475 * math.pi)
    assert agg.loc["lora", "accuracy_mean_ci_high"] == pytest.approx(min(1.0, 0.92 + t * 0.01))
    assert agg.loc["lora", "accuracy_mean_ci_low"] == pytest.approx(0.92 - t * 0.01)


def test_aggregate_single_seed_uses_binomial_ci(tmp_path: Path) -> None:
    paths = write_records(tmp_path, [(train_record("lora", 0), eval_record("lora", 0, accuracy=0.9))])
    agg = aggregate_by_strategy(table=summary_table(runs=load_runs(train_paths=paths[0], eval_paths=paths[1])))
    assert agg.loc[0, "accuracy_mean_ci_low"] == pytest.approx(0.88)
    assert agg.loc[0, "accuracy_mean_ci_high"] == pytest.approx(0.92)
    assert agg.loc[0, "accuracy_ci_method"] == "binomial"


def predictions(correct: list[bool]) -> pd.DataFrame:
    """A run's predictions.parquet: review `row`, its label and the predicted class."""
    labels = [i % 2 for i in range(len(correct))]
    return pd.DataFrame(
        {
            "row": range(len(correct)),
            "label": labels,
            "prediction": [y if ok else 1 - y for y, ok in zip(labels, correct)],
        }
    )


def test_strategies_are_compared_with_the_baseline_on_the_same_reviews(tmp_path: Path) -> None:
    # 100 reviews. full right on 90; lora right on those 90 but wrong on 8 of them and
    # right on 2 that full got wrong: 8 against 2 on one seed, McNemar's exact p = 0.109.
    full = [True] * 90 + [False] * 10
    lora = [True] * 82 + [False] * 8 + [True] * 2 + [False] * 8
    pairs = [
        (train_record("full", 0), eval_record("full", 0, accuracy=0.90, n_test=100)),
        (train_record("lora", 0), eval_record("lora", 0, accuracy=0.84, n_test=100)),
        (train_record("ia3", 0, status="failed", reason=OOM, metrics={}), eval_record("ia3", 0, status="skipped")),
    ]
    train_paths, eval_paths = write_records(tmp_path, pairs)
    prediction_paths = []
    for path, correct in zip(eval_paths, (full, lora, [])):
        prediction_paths.append(path.parent / "predictions.parquet")
        (predictions(correct) if correct else pd.DataFrame({"row": [], "label": [], "prediction": []})).to_parquet(
            prediction_paths[-1]
        )
    results = Results.load(
        train_paths=train_paths, eval_paths=eval_paths, prediction_paths=prediction_paths, baseline="full"
    )
    table = results.comparison.set_index("strategy")
    assert list(results.comparison.columns[:14]) == [
        "task",
        "model",
        "strategy",
        "method",
        "n_ok",
        "accuracy_mean",
        "accuracy_sd",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "delta_vs_baseline",
        "delta_ci_low",
        "delta_ci_high",
        "p_value",
        "p_value_holm",
    ]
    lora_row = table.loc["lora"]
    assert lora_row["delta_vs_baseline"] == pytest.approx(-6.0)
    assert lora_row["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 1024)  # P(X <= 2 | Bin(10, 1/2)), doubled
    assert lora_row["p_value_holm"] == pytest.approx(lora_row["p_value"])  # the only test in the family
    assert (lora_row["reviews_better"], lora_row["reviews_worse"]) == (2, 8)
    # About -6 +- 1.96 * sqrt(10/100 - 0.06**2) / sqrt(100) * 100 = -6 +- 6.1 points.
    assert lora_row["delta_ci_low"] == pytest.approx(-12.1, abs=0.8) and lora_row["delta_ci_high"] == pytest.approx(
        0.1, abs=0.8
    )
    assert math.isnan(table.loc["full", "p_value"])  # the baseline is not compared with itself
    assert math.isnan(table.loc["ia3", "p_value"]) and table.loc["ia3", "n_ok"] == 0
