"""Tests for ftcompare.report.tables: loading and pairing records, the per-run and per-strategy tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from records import (
    NO_BNB,
    OOM,
    REQUIRED_COLUMNS,
    all_failed_runs,
    eval_record,
    mixed_runs,
    right_on,
    train_record,
    write_records,
)

from ftcompare.report import (
    SUMMARY_COLUMNS,
    Results,
    StudyResults,
    aggregate_by_strategy,
    load_runs,
    summary_table,
    write_summary_csv,
)


def one_cell(study: StudyResults) -> Results:
    """A one-cell study's results, read as the report job reads them."""
    (results,) = study.cells.values()
    return results


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
    results = one_cell(
        StudyResults.load(
            train_paths=train_paths, eval_paths=eval_paths, prediction_paths=prediction_paths, baseline="full"
        )
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
    assert (lora_row["metric_name"], lora_row["test"]) == ("accuracy", "exact sign test (McNemar)")
    assert lora_row["metric_mean"] == pytest.approx(0.84)  # the primary metric is accuracy here


def test_a_task_scored_on_mcc_is_compared_by_the_paired_bootstrap(tmp_path: Path) -> None:
    from ftcompare.contract import score

    # 200 reviews; full right on 180, lora on 120: MCC about 0.8 against 0.2.
    full = [True] * 180 + [False] * 20
    lora = [True] * 120 + [False] * 80
    pairs = []
    for strategy, correct in (("full", full), ("lora", lora)):
        frame = predictions(correct)
        mcc = score("mcc", frame["label"], frame["prediction"], num_labels=2)
        train, ev = train_record(strategy, 0), eval_record(strategy, 0, accuracy=sum(correct) / 200, n_test=200)
        train["config"]["metric"] = "mcc"
        ev["metrics"] |= {"mcc": mcc, "macro_f1": 0.5}
        ev["format_version"] = train["format_version"] = 2  # (older records' MCC comes from the confusion matrix)
        pairs.append((train, ev, frame, mcc))
    train_paths, eval_paths = write_records(tmp_path, [(train, ev) for train, ev, _, _ in pairs])
    prediction_paths = [path.parent / "predictions.parquet" for path in eval_paths]
    for path, (_, _, frame, _) in zip(prediction_paths, pairs):
        frame.to_parquet(path)
    results = one_cell(
        StudyResults.load(
            train_paths=train_paths, eval_paths=eval_paths, prediction_paths=prediction_paths, baseline="full"
        )
    )
    assert list(results.table["metric_name"]) == ["mcc", "mcc"]
    assert list(results.table["metric"]) == pytest.approx([pairs[0][3], pairs[1][3]])
    assert results.agg.set_index("strategy").loc["lora", "metric_mean"] == pytest.approx(pairs[1][3])
    row = results.comparison.set_index("strategy").loc["lora"]
    assert (row["metric_name"], row["test"]) == ("mcc", "paired bootstrap")
    assert row["delta_vs_baseline"] == pytest.approx(100 * (pairs[1][3] - pairs[0][3]))
    assert row["p_value"] < 0.001 and row["delta_ci_low"] < row["delta_vs_baseline"] < row["delta_ci_high"] < 0
    assert row["accuracy_mean"] == pytest.approx(0.6)  # accuracy stays beside the metric


# ----------------------------------------------------------------------------- across tasks


def load_study(root: Path, **kwargs):
    from records import write_study

    from ftcompare.report import StudyResults

    train_paths, eval_paths, prediction_paths = write_study(root, **kwargs)
    return StudyResults.load(
        train_paths=train_paths, eval_paths=eval_paths, prediction_paths=prediction_paths, baseline="full"
    )


def test_runs_are_paired_aggregated_and_compared_within_their_cell(tmp_path: Path) -> None:
    study = load_study(tmp_path)
    # The same (strategy, seed) in four cells: four runs, not a clash.
    assert list(study.cells) == [("sst2", "roberta-base"), ("rte", "roberta-base"), ("sst2", "bert"), ("rte", "bert")]
    table = study.table
    assert list(table.columns[:3]) == ["task", "model", "strategy"] and len(table) == 12
    bitfit = table[(table["strategy"] == "bitfit")].set_index(["task", "model"])["accuracy"]
    assert bitfit[("sst2", "bert")] == pytest.approx(0.60) and bitfit[("rte", "bert")] == pytest.approx(0.90)
    agg = study.cells[("sst2", "bert")].agg
    assert agg[["task", "model"]].drop_duplicates().values.tolist() == [["sst2", "bert"]]
    comparison = study.comparison.set_index(["task", "model", "strategy"])
    assert list(study.comparison.columns[:3]) == ["task", "model", "strategy"]
    # Holm within a cell: bitfit's sst2 test is one of two in its cell.
    p = 2 * 0.5**30
    assert comparison.loc[("sst2", "bert", "bitfit"), "p_value"] == pytest.approx(p)
    assert comparison.loc[("sst2", "bert", "bitfit"), "p_value_holm"] == pytest.approx(2 * p)
    assert comparison.loc[("rte", "bert", "lora"), "p_value"] == pytest.approx(0.5)


def test_across_tasks_scores_ranks_and_verdicts_holm_over_all(tmp_path: Path) -> None:
    from ftcompare.report import across_tasks

    across = across_tasks(load_study(tmp_path))
    assert list(across.columns[:12]) == [
        "model",
        "strategy",
        "method",
        "sst2",
        "rte",
        "mean",
        "mean_rank",
        "better",
        "equivalent",
        "inconclusive",
        "worse",
        "did_not_learn",
    ]
    assert across[["model", "strategy"]].values.tolist() == [
        ["roberta-base", "full"],
        ["roberta-base", "lora"],
        ["roberta-base", "bitfit"],
        ["bert", "full"],
        ["bert", "lora"],
        ["bert", "bitfit"],
    ]
    rows = across[across["model"] == "bert"].set_index("strategy")
    assert rows.loc["lora", ["sst2", "rte", "mean"]].tolist() == pytest.approx([0.90, 0.92, 0.91])
    # sst2: full and lora tie at 0.90 (ranks 1.5), bitfit 3; rte: lora 1, full and bitfit 2.5.
    assert rows["rank_sst2"].tolist() == [1.5, 1.5, 3.0] and rows["rank_rte"].tolist() == [2.5, 1.0, 2.5]
    assert rows["mean_rank"].tolist() == [2.0, 1.25, 2.75]
    # Eight tests in the study (2 strategies x 2 tasks x 2 models): Holm multiplies the smallest by 8.
    assert rows.loc["bitfit", "p_holm_sst2"] == pytest.approx(8 * 2 * 0.5**30)
    assert rows.loc["lora", "p_holm_rte"] == pytest.approx(1.0)  # 0.5, adjusted over the eight
    # The same predictions as the baseline's are equivalent (an interval of one point, 0); 2
    # rows better of 100 is inside neither the test nor ±1 point: inconclusive.
    counts = ["better", "equivalent", "inconclusive", "worse", "did_not_learn"]
    assert rows.loc["bitfit", counts].tolist() == [0, 1, 0, 1, 0]
    assert rows.loc["lora", counts].tolist() == [0, 1, 1, 0, 0]
    assert rows.loc["full", counts].tolist() == [0, 0, 0, 0, 0]  # the baseline
    assert rows.loc["bitfit", ["verdict_sst2", "verdict_rte"]].tolist() == ["worse", "equivalent"]
    assert rows.loc["lora", "train_time_vs_baseline"] == pytest.approx(100 / 300)
    assert rows.loc["lora", "trainable_params_vs_baseline"] == pytest.approx(0.008)
    assert rows.loc["bitfit", "peak_memory_vs_baseline"] == pytest.approx(0.4)


def test_holm_over_all_can_leave_a_per_task_difference_unconfirmed(tmp_path: Path) -> None:
    # lora on rte: 7 reviews better than full, 0 worse: p = 2 / 128, significant after Holm
    # within its cell (2 tests: 0.031) but not over the study's 8 (two smaller p-values first,
    # then 6 x 2 / 128 = 0.094): a tie across tasks.
    import records

    from ftcompare.report import across_tasks, cell_scores

    original = records.study_correct

    def correct(task: str, strategy: str) -> list[bool]:
        if strategy == "lora" and task == "rte":
            return [True] * 97 + [False] * 3
        return original(task, strategy)

    records.study_correct = correct
    try:
        study = load_study(tmp_path)
    finally:
        records.study_correct = original
    scores = cell_scores(study).set_index(["task", "model", "strategy"])
    assert scores.loc[("rte", "bert", "lora"), "p_value"] == pytest.approx(2 / 128)
    cell = study.comparison.set_index(["task", "model", "strategy"])
    assert cell.loc[("rte", "bert", "lora"), "p_value_holm"] == pytest.approx(2 * 2 / 128)
    assert scores.loc[("rte", "bert", "lora"), "p_value_holm"] == pytest.approx(6 * 2 / 128)
    row = across_tasks(study).set_index(["model", "strategy"]).loc[("bert", "lora")]
    assert (row["better"], row["equivalent"], row["verdict_rte"]) == (0, 1, "inconclusive")


def test_a_strategy_without_a_result_on_some_task_has_no_mean(tmp_path: Path) -> None:
    from ftcompare.report import across_tasks

    across = across_tasks(load_study(tmp_path, baseline_fails=True)).set_index(["model", "strategy"])
    full = across.loc[("bert", "full")]
    assert math.isnan(full["sst2"]) and math.isnan(full["mean"]) and math.isnan(full["mean_rank"])
    # Nothing to compare with: no wins, ties or losses, and no cost relative to the baseline.
    assert across[["better", "equivalent", "inconclusive", "worse"]].to_numpy().sum() == 0
    assert across["train_time_vs_baseline"].isna().all()


def test_records_from_before_the_matrix_are_one_cell(mixed) -> None:
    # train records without task/model/metric, eval records without task/model (tests/records.py's defaults).
    # (records.SINGLE_TASK; the model named after its name_or_path, ftcompare.plan.matrix)
    assert {(run.task, run.model, run.metric) for run in mixed} == {("task", "roberta-tiny", "accuracy")}
    table = summary_table(runs=mixed)
    assert set(table["task"]) == {"task"} and set(table["model"]) == {"roberta-tiny"}


def test_tuning_summaries_go_to_their_cell(tmp_path: Path) -> None:
    from records import write_study

    from ftcompare.contract import write_selection
    from ftcompare.report import StudyResults

    train_paths, eval_paths, _ = write_study(tmp_path / "runs")
    summaries, selections = [], []
    for task, model in (("rte", "bert"), ("sst2", "roberta-base")):
        folder = tmp_path / "tuning" / task / model
        folder.mkdir(parents=True)
        pd.DataFrame(
            {
                "task": [task],
                "model": [model],
                "strategy": ["lora"],
                "trial": ["t0"],
                "learning_rate": [1e-4],
                "seed": [0],
                "status": ["ok"],
                "val_accuracy": [0.9],
                "val_loss": [0.3],
                "train_time_s": [10.0],
            }
        ).to_csv(folder / "summary.csv", index=False)
        write_selection(folder / "selected.yaml", {"lora": {"trial": "t0", "values": {"learning_rate": 1e-4}}})
        summaries.append(folder / "summary.csv")
        selections.append(folder / "selected.yaml")
    study = StudyResults.load(
        train_paths=train_paths, eval_paths=eval_paths, tuning_summaries=summaries, selections=selections
    )
    assert study.cells[("rte", "bert")].tuning["task"].tolist() == ["rte"]
    assert study.cells[("rte", "bert")].selected["lora"]["trial"] == "t0"
    assert study.cells[("rte", "roberta-base")].tuning is None
    assert study.tuning[["task", "model"]].values.tolist() == [["sst2", "roberta-base"], ["rte", "bert"]]


def test_tuning_summary_rows_name_their_cell(tmp_path: Path) -> None:
    import json

    from ftcompare.plan import Trial, select_settings_job

    trials = [Trial(strategy="lora", values={"learning_rate": rate}) for rate in (1e-4, 2e-4)]
    paths = []
    for trial, accuracy in zip(trials, (0.8, 0.9)):
        record = train_record("lora", 0, cell=("rte", "bert", "accuracy")) | {"trial": trial.id}
        record["metrics"]["best_val_accuracy"] = accuracy
        paths.append(tmp_path / f"{trial.id}.json")
        paths[-1].write_text(json.dumps(record))
    select_settings_job(
        trial_records=paths,
        grid={f"lora/{trial.id}": trial.values for trial in trials},
        summary_path=tmp_path / "summary.csv",
        selected_path=tmp_path / "selected.yaml",
    )
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.columns[:4]) == ["task", "model", "strategy", "trial"]
    assert summary[["task", "model"]].drop_duplicates().values.tolist() == [["rte", "bert"]]


# ----------------------------------------------------------------------------- verdicts


def verdict_case(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, strategy's predictions, baseline's) of a constructed comparison."""
    rng = np.random.default_rng(5)
    labels = np.tile([0, 1], 1000)  # 2,000 balanced rows
    if case == "better":
        return labels, right_on(labels, 0.95, rng), right_on(labels, 0.85, rng)
    if case == "worse":
        return labels, right_on(labels, 0.85, rng), right_on(labels, 0.95, rng)
    if case == "equivalent":  # the baseline's answers but for 6 rows, 3 each way
        baseline = right_on(labels, 0.85, rng)
        strategy = baseline.copy()
        right, wrong = np.flatnonzero(baseline == labels), np.flatnonzero(baseline != labels)
        strategy[right[:3]] = 1 - labels[right[:3]]
        strategy[wrong[:3]] = labels[wrong[:3]]
        return labels, strategy, baseline
    if case == "inconclusive":  # 200 rows: 85% against 82% is inside the noise
        labels = labels[:200]
        return labels, right_on(labels, 0.85, rng), right_on(labels, 0.82, rng)
    if case == "did not learn":  # guesses, with no relation to the labels
        return labels, rng.integers(0, 2, len(labels)), right_on(labels, 0.85, rng)
    raise ValueError(case)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "f1", "mcc"])
@pytest.mark.parametrize("case", ["better", "worse", "equivalent", "inconclusive", "did not learn"])
def test_each_verdict_on_constructed_predictions(tmp_path: Path, metric: str, case: str) -> None:
    from records import write_cells

    from ftcompare.report import StudyResults

    labels, strategy, baseline = verdict_case(case)
    paths = write_cells(tmp_path, {("task", "model", metric): {"full": (labels, baseline), "lora": (labels, strategy)}})
    study = StudyResults.load(**dict(zip(("train_paths", "eval_paths", "prediction_paths"), paths)), baseline="full")
    row = study.comparison.set_index("strategy").loc["lora"]
    print(
        f"{metric:9} {case:13} -> {row['verdict']:13} delta {row['delta_vs_baseline']:+6.2f} "
        f"90% CI {row['delta_ci90_low']:+6.2f} to {row['delta_ci90_high']:+6.2f} p(Holm) {row['p_value_holm']:.3g} "
        f"detects ±{row['detectable_difference']:.2f}"
    )
    assert row["verdict"] == case
    assert study.comparison.set_index("strategy").loc["full", "verdict"] == "baseline"
    if case == "did not learn":
        assert math.isnan(row["p_value"])  # not tested: it takes no verdict against the baseline
        run = study.table.set_index("strategy").loc["lora"]
        print(f"          lora did not learn: {run['did_not_learn']}")
        assert "not significantly above" in run["did_not_learn"]
    else:
        assert row["detectable_difference"] > 0 and row["equivalence_margin"] == 1.0


def test_a_run_that_predicts_nearly_one_class_did_not_learn(tmp_path: Path) -> None:
    # IMDB's LoRA: 185 of 200 reviews labelled one class, yet 57.5% right (above 50%, p = 0.02).
    from records import write_cells

    from ftcompare.report import StudyResults

    labels = np.repeat([0, 1], 100)
    lora = np.ones(200, dtype=int)
    lora[:15] = 0  # 15 negatives right; 100 positives right
    paths = write_cells(
        tmp_path,
        {("imdb", "model", "accuracy"): {"full": (labels, labels.copy()), "lora": (labels, lora)}},
    )
    study = StudyResults.load(**dict(zip(("train_paths", "eval_paths", "prediction_paths"), paths)), baseline="full")
    run = study.table.set_index("strategy").loc["lora"]
    assert run["accuracy"] == pytest.approx(0.575)
    assert run["did_not_learn"] == "predicts class 1 for 92.5% of test rows"
    assert study.comparison.set_index("strategy").loc["lora", "verdict"] == "did not learn"


def test_a_baseline_that_did_not_learn_compares_nothing(tmp_path: Path) -> None:
    from records import write_cells

    from ftcompare.report import StudyResults

    labels = np.repeat([0, 1], 100)
    paths = write_cells(
        tmp_path,
        {("rte", "model", "accuracy"): {"full": (labels, np.zeros(200, dtype=int)), "lora": (labels, labels.copy())}},
    )
    study = StudyResults.load(**dict(zip(("train_paths", "eval_paths", "prediction_paths"), paths)), baseline="full")
    verdicts = study.comparison.set_index("strategy")["verdict"]
    assert verdicts.to_dict() == {"full": "did not learn", "lora": "not compared"}


def test_a_strategy_most_of_whose_seeds_did_not_learn_did_not_learn(tmp_path: Path) -> None:
    # Three seeds: one constant answer is named, the strategy still learned; two are not.
    from records import write_cells

    from ftcompare.report import StudyResults

    labels = np.repeat([0, 1], 100)
    flat = np.zeros(200, dtype=int)
    paths = write_cells(
        tmp_path,
        {
            ("sst2", "model", "accuracy"): {
                "full": (labels, [labels, labels, labels]),
                "lora": (labels, [labels, labels, flat]),
                "ia3": (labels, [labels, flat, flat]),
            }
        },
    )
    study = StudyResults.load(**dict(zip(("train_paths", "eval_paths", "prediction_paths"), paths)), baseline="full")
    agg = study.cells[("sst2", "model")].agg.set_index("strategy")
    assert agg.loc["lora", ["did_not_learn", "did_not_learn_seeds"]].tolist() == [False, "2"]
    assert agg.loc["ia3", ["did_not_learn", "did_not_learn_seeds"]].tolist() == [True, "1, 2"]
    verdicts = study.comparison.set_index("strategy")
    assert verdicts.loc["ia3", "verdict"] == "did not learn" and verdicts.loc["lora", "verdict"] != "did not learn"
    # Three seeds: the interval resamples seeds as well as rows.
    assert verdicts.loc["lora", "test"] == "paired bootstrap over seeds and test rows"


def test_scores_equal_but_for_the_last_bit_tie_in_rank(tmp_path: Path) -> None:
    from ftcompare.report import StudyResults, cell_scores

    pairs = [
        (train_record(s, 0, cell=("sst2", "m", "accuracy")), eval_record(s, 0, accuracy=a, cell=("sst2", "m")))
        for s, a in (("full", 0.3), ("lora", 0.1 + 0.2), ("ia3", 0.2))
    ]
    assert 0.1 + 0.2 != 0.3  # one ulp apart
    runs = load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(tmp_path, pairs))))
    ranks = cell_scores(StudyResults.of(runs, baseline="full")).set_index("strategy")["rank"]
    assert ranks.to_dict() == {"full": 1.5, "lora": 1.5, "ia3": 3.0}


def test_a_task_where_every_run_predicts_the_majority_class_counts_for_nothing(tmp_path: Path) -> None:
    from records import all_majority_study

    from ftcompare.report import across_tasks

    study = all_majority_study(tmp_path)
    across = across_tasks(study).set_index("strategy")
    assert (across["verdict_agnews"] == "did not learn").all()
    assert across["did_not_learn"].tolist() == [1, 1, 1]
    assert across[["better", "equivalent", "inconclusive", "worse"]].sum(axis=1).tolist() == [0, 1, 1]
    assert across["rank_agnews"].isna().all()
    # The mean rank is over the tasks where anything learned: sst2's alone.
    assert across["mean_rank"].tolist() == across["rank_sst2"].tolist() == [1.0, 2.0, 3.0]
    majority = study.cells[("agnews", "roberta-base")].majority
    assert (majority.label, majority.share) == (0, pytest.approx(0.4))
    assert majority.scores["macro_f1"] == pytest.approx(2 * 0.4 / 1.4 / 4)
