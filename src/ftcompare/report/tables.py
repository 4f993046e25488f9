"""Run records into tables: the per-run summary and the per-strategy aggregate.

`StudyResults.load` reads the train and eval records once, into each cell's `Results`; the figures
(`ftcompare.report.figures`) and the Markdown report (`ftcompare.report.markdown`) are drawn from the same `Results`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftcompare.contract import (
    ACROSS_COLUMNS,
    ACROSS_COST_COLUMNS,
    ACROSS_TASK_PREFIXES,
    COUNTED_VERDICTS,
    VERDICT_COUNT_COLUMNS,
    Status,
    Verdict,
    cell_settings,
    read_record,
    read_selection,
)
from ftcompare.data import tokenization_meta
from ftcompare.methods import method_family
from ftcompare.report.stats import (
    DEFAULT_EQUIVALENCE_MARGIN,
    Learning,
    detectable_difference,
    holm,
    learned,
    majority_class,
    mean_interval,
    paired_bootstrap,
    paired_comparison,
    verdict,
)

# What a trained run costs to apply, from the evaluate job (eval.json metrics of the same
# names): single-review latency, and the adapter merged into its base weights, with the
# share of test reviews it labels as the adapter does; empty where nothing merges.
INFERENCE_COLUMNS: tuple[str, ...] = (
    "latency_p50_ms",
    "latency_p95_ms",
    "merged_eval_reviews_per_s",
    "merged_latency_p50_ms",
    "merged_latency_p95_ms",
    "merged_agreement",
)
# Per run in summary.csv, and aggregated over seeds per strategy.
METRIC_COLUMNS: tuple[str, ...] = (
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "f1",
    "precision",
    "recall",
    "train_time_s",
    "eval_time_s",
    "tokens_per_s",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "peak_gpu_mem_gb",
    "peak_rss_gb",
    "adapter_size_mb",
)
# A run's cell in the study matrix (records' settings `task` and `model`): the first columns
# of every table, and what every aggregate and comparison is computed within.
CELL_COLUMNS: tuple[str, ...] = ("task", "model")
SUMMARY_COLUMNS: tuple[str, ...] = (
    *CELL_COLUMNS,
    "strategy",
    "method",
    "seed",
    "status",
    "reason",
    *METRIC_COLUMNS,
    "device",
    "eval_reviews_per_s",
    *INFERENCE_COLUMNS,
    "merged_error",
    # Extra columns after the required ones; the report needs them.
    "device_type",
    "n_test",
    "best_epoch",
    "best_val_accuracy",
    # Why an ok run's best epoch is not to be trusted (one class for every validation
    # review); empty when it is fine.
    "degenerate_validation",
    # trainable_params split: the method's own weights and the classification head that
    # every adapter trains beside them (absent from records made before the split).
    "method_params",
    "head_params",
    # The method's family (methods.FAMILIES): the figures group strategies by it.
    "family",
    # The task's other metrics (ftcompare.contract.metrics; `f1` above is the positive class's, binary
    # tasks only), and its primary one: `metric_name` and the run's test score on it, `metric`.
    "macro_f1",
    "mcc",
    "metric_name",
    "metric",
    # Whether the run learned (stats.learned, from its predictions): why not, in words (empty
    # where it did); the one-sided p-value against the majority class; the majority-class
    # predictor's score on the primary metric; the largest share of predictions in one class.
    "did_not_learn",
    "learned_p_value",
    "majority_score",
    "top_prediction_share",
)
TEXT_COLUMNS: frozenset[str] = frozenset(
    {
        *CELL_COLUMNS,
        "strategy",
        "method",
        "status",
        "reason",
        "device",
        "device_type",
        "degenerate_validation",
        "merged_error",
        "family",
        "metric_name",
        "did_not_learn",
    }
)
AGGREGATE_COLUMNS: tuple[str, ...] = (
    *METRIC_COLUMNS,
    "n_test",
    "eval_reviews_per_s",
    *INFERENCE_COLUMNS,
    "method_params",
    "head_params",
    "macro_f1",
    "mcc",
    "metric",
)


CellKey = tuple[
    str, str
]  # (task, model): a cell of the matrix, as the report keys its results (plan.matrix.Cell is the plan's)
RunKey = tuple[str, str, str, int]  # (task, model, strategy, seed)


@dataclass(frozen=True)
class RunRecord:
    """One (task, model, strategy, seed) run: the paired train and eval records and the combined status."""

    strategy: str
    method: str
    seed: int
    status: str
    reason: str | None
    train: dict[str, Any]
    eval: dict[str, Any]
    task: str
    model: str
    metric: str  # the task's primary metric (records keep every metric)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def cell(self) -> CellKey:
        return (self.task, self.model)

    @property
    def key(self) -> RunKey:
        return (self.task, self.model, self.strategy, self.seed)

    @property
    def score(self) -> float:
        """The primary metric on the test split; NaN where the run has none."""
        return number(self.eval.get("metrics") or {}, self.metric)


def _read_record(path: Path, kind: str) -> dict[str, Any]:
    record = read_record(path, kind=kind)  # any format, as the current one has it
    if record.get("status") not in list(Status):
        raise ValueError(f"{path}: status {record.get('status')!r} is not one of {[str(s) for s in Status]}")
    if not isinstance(record.get("strategy"), str) or not record["strategy"]:
        raise ValueError(f"{path}: strategy {record.get('strategy')!r} must be a non-empty string")
    seed = record.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"{path}: seed {seed!r} must be an integer")
    return record


def _train_key(record: Mapping[str, Any]) -> RunKey:
    cell = cell_settings(record)
    return (cell["task"], cell["model"], record["strategy"], record["seed"])


def eval_key(record: Mapping[str, Any], train_keys: Sequence[RunKey]) -> RunKey:
    """The run an eval record belongs to. It names its task and model where the evaluate job
    wrote them; an older one, without, is the train record's of the same (strategy, seed),
    which must then be the only one."""
    strategy, seed = record["strategy"], record["seed"]
    if record.get("task") is not None and record.get("model") is not None:
        return (str(record["task"]), str(record["model"]), strategy, seed)
    matches = [key for key in train_keys if key[2:] == (strategy, seed)]
    if len(matches) != 1:
        raise ValueError(
            f"an eval record of strategy {strategy!r} seed {seed} names no task and model, and "
            f"{len(matches)} train records match it: {matches}"
        )
    return matches[0]


def load_runs(*, train_paths: Sequence[Path], eval_paths: Sequence[Path]) -> list[RunRecord]:
    """Pair train and eval records by (task, model, strategy, seed).

    Runs come out cell by cell in the order cells first appear in ``train_paths``, within a
    cell in the order strategies first appear (the config order), seeds ascending.
    """
    trains: dict[RunKey, dict[str, Any]] = {}
    for path in train_paths:
        record = _read_record(Path(path), "train")
        key = _train_key(record)
        if key in trains:
            raise ValueError(
                f"{path}: a second train record for task {key[0]!r} model {key[1]!r} strategy {key[2]!r} seed {key[3]}"
            )
        trains[key] = record
    evals: dict[RunKey, dict[str, Any]] = {}
    for path in eval_paths:
        record = _read_record(Path(path), "eval")
        key = eval_key(record, list(trains))
        if key in evals:
            raise ValueError(
                f"{path}: a second eval record for task {key[0]!r} model {key[1]!r} strategy {key[2]!r} seed {key[3]}"
            )
        evals[key] = record
    if unpaired := sorted(set(trains) ^ set(evals)):
        raise ValueError(
            f"(task, model, strategy, seed) runs {unpaired} have only one of train/eval records; every run needs both"
        )
    cell_order = list(dict.fromkeys(key[:2] for key in trains))
    strategy_order = list(dict.fromkeys(key[2] for key in trains))
    keys = sorted(trains, key=lambda key: (cell_order.index(key[:2]), strategy_order.index(key[2]), key[3]))

    runs = []
    for key in keys:
        train, ev = trains[key], evals[key]
        task, model, strategy, seed = key
        status = Status.worst(train["status"], ev["status"])
        reason = train.get("reason") or ev.get("reason")
        runs.append(
            RunRecord(
                strategy=strategy,
                method=str(train.get("method") or strategy),
                seed=seed,
                status=status,
                reason=reason,
                train=train,
                eval=ev,
                task=task,
                model=model,
                metric=cell_settings(train)["metric"],
            )
        )
    return runs


def cells_of(frame: pd.DataFrame) -> list[CellKey]:
    """The (task, model) cells of a table with CELL_COLUMNS, in table order."""
    return list(dict.fromkeys(zip(frame["task"], frame["model"])))


def in_cell(frame: pd.DataFrame, cell: CellKey) -> pd.DataFrame:
    return frame[(frame["task"] == cell[0]) & (frame["model"] == cell[1])]


def number(metrics: Mapping[str, Any], key: str) -> float:
    """A metric as float, NaN when absent: failed runs write partial or empty metrics."""
    value = metrics.get(key)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"metric {key!r} is {value!r}; expected a number or null")
    return float(value)


def _provenance(run: RunRecord, key: str) -> str | None:
    for record in (run.train, run.eval):
        value = (record.get("provenance") or {}).get(key)
        if value is not None:
            return str(value)
    return None


def summary_table(*, runs: Sequence[RunRecord], learning: Mapping[RunKey, Learning] | None = None) -> pd.DataFrame:
    """One row per run, columns ``SUMMARY_COLUMNS``; missing metrics are NaN. `learning`:
    per run, whether it learned (runs without predictions: NaN)."""
    learning = learning or {}
    rows = []
    for run in runs:
        learnt = learning.get(run.key)
        train_m = run.train.get("metrics") or {}
        eval_m = run.eval.get("metrics") or {}
        trainable, total = number(train_m, "trainable_params"), number(train_m, "total_params")
        # Reserved is what the process actually held from the card and what decides
        # an OOM; allocated (live tensors only) is the fallback when reserved is absent.
        gpu_mem = number(train_m, "peak_gpu_mem_reserved_gb")
        if math.isnan(gpu_mem):
            gpu_mem = number(train_m, "peak_gpu_mem_allocated_gb")
        rows.append(
            {
                "task": run.task,
                "model": run.model,
                "strategy": run.strategy,
                "method": run.method,
                "seed": run.seed,
                "status": run.status,
                "reason": run.reason,
                **{
                    key: number(eval_m, key)
                    for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1", "precision", "recall")
                },
                "train_time_s": number(train_m, "train_time_s"),
                "eval_time_s": number(eval_m, "eval_time_s"),
                "eval_reviews_per_s": number(eval_m, "eval_reviews_per_s"),
                **{key: number(eval_m, key) for key in INFERENCE_COLUMNS},
                "merged_error": eval_m.get("merged_error") if run.ok else None,
                "tokens_per_s": number(train_m, "tokens_per_s"),
                "trainable_params": trainable,
                "total_params": total,
                "trainable_pct": 100.0 * trainable / total if total > 0 else math.nan,
                "peak_gpu_mem_gb": gpu_mem,
                "peak_rss_gb": number(train_m, "peak_rss_gb"),
                "adapter_size_mb": number(train_m, "adapter_size_mb"),
                "device": _provenance(run, "device"),
                "device_type": _provenance(run, "device_type"),
                "n_test": number(eval_m, "n_test"),
                "best_epoch": number(train_m, "best_epoch"),
                "best_val_accuracy": number(train_m, "best_val_accuracy"),
                "degenerate_validation": train_m.get("degenerate_validation") if run.ok else None,
                "method_params": number(train_m, "method_params"),
                "head_params": number(train_m, "head_params"),
                "family": method_family(run.method),
                "macro_f1": number(eval_m, "macro_f1"),
                "mcc": number(eval_m, "mcc"),
                "metric_name": run.metric,
                "metric": number(eval_m, run.metric),
                "did_not_learn": None if learnt is None or learnt.learned else learnt.reason,
                "learned_p_value": math.nan if learnt is None else learnt.p_value,
                "majority_score": math.nan if learnt is None else learnt.majority_score,
                "top_prediction_share": math.nan if learnt is None else learnt.top_share,
            }
        )
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    # Explicit dtypes so an empty or all-NaN column still aggregates as numbers.
    numeric = [c for c in SUMMARY_COLUMNS if c not in TEXT_COLUMNS and c != "seed"]
    return table.astype({**{c: float for c in numeric}, "seed": int})


def write_summary_csv(*, table: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)


def _require_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    if missing := [c for c in columns if c not in table.columns]:
        raise ValueError(f"table lacks columns {missing}; build it with summary_table()")


def aggregate_by_strategy(*, table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and count over the ok seeds of each strategy within each (task,
    model) cell, cells in table order (see _aggregate_cell); ``task, model`` first."""
    _require_columns(table, CELL_COLUMNS)
    parts = []
    for cell in cells_of(table):
        part = _aggregate_cell(in_cell(table, cell))
        parts.append(
            pd.concat([pd.DataFrame({"task": [cell[0]] * len(part), "model": [cell[1]] * len(part)}), part], axis=1)
        )
    if not parts:
        return pd.concat([pd.DataFrame(columns=list(CELL_COLUMNS)), _aggregate_cell(table)], axis=1)
    return pd.concat(parts, ignore_index=True)


def _aggregate_cell(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and count over the ok seeds of each strategy of one cell.

    Columns: ``strategy, method, family, n_runs, n_ok``, then ``<col>_mean/_std/_count``
    for each of ``AGGREGATE_COLUMNS``, then ``accuracy_mean_ci_low/high`` and
    ``accuracy_ci_method``: the 95% CI of the mean accuracy over seeds (Student t)
    with at least two seeds, else the single run's own binomial CI. Strategies
    with no ok run keep their row (counts 0, NaN statistics), in table order.
    """
    _require_columns(table, ("strategy", "method", "status", *AGGREGATE_COLUMNS))
    strategies = list(dict.fromkeys(table["strategy"]))
    ok = table[table["status"] == Status.OK]
    stats = ok.groupby("strategy", sort=False)[list(AGGREGATE_COLUMNS)].agg(["mean", "std", "count"])
    stats = stats.reindex(strategies)
    stats.columns = [f"{column}_{stat}" for column, stat in stats.columns]
    count_columns = [c for c in stats.columns if c.endswith("_count")]
    stats[count_columns] = stats[count_columns].fillna(0).astype(int)

    methods = table.groupby("strategy", sort=False)["method"].first().reindex(strategies).to_numpy()
    out = pd.DataFrame(
        {
            "strategy": strategies,
            "method": methods,
            "family": [method_family(method) for method in methods],
            "n_runs": table.groupby("strategy", sort=False).size().reindex(strategies).to_numpy(),
            "n_ok": ok.groupby("strategy", sort=False).size().reindex(strategies).fillna(0).astype(int).to_numpy(),
        }
    )
    out = pd.concat([out, stats.reset_index(drop=True)], axis=1)

    n = out["accuracy_count"]
    over_seeds = n >= 2
    intervals = [
        mean_interval(ok.loc[ok["strategy"] == s, "accuracy"].dropna()) if k >= 2 else (math.nan, math.nan)
        for s, k in zip(strategies, n)
    ]
    low, high = (np.array(side) for side in zip(*intervals)) if intervals else (np.array([]), np.array([]))
    out["accuracy_mean_ci_low"] = np.where(over_seeds, low, out["accuracy_ci_low_mean"])
    out["accuracy_mean_ci_high"] = np.where(over_seeds, high, out["accuracy_ci_high_mean"])
    out[["accuracy_mean_ci_low", "accuracy_mean_ci_high"]] = out[
        ["accuracy_mean_ci_low", "accuracy_mean_ci_high"]
    ].clip(0.0, 1.0)
    out["accuracy_ci_method"] = np.where(over_seeds, "t over seeds", np.where(n == 1, "binomial", None))
    # The primary metric's mean with a t interval over seeds (one seed: accuracy's binomial
    # interval where the metric is accuracy, else none).
    names = table.groupby("strategy", sort=False)["metric_name"].first().reindex(strategies).to_numpy()
    out.insert(out.columns.get_loc("metric_mean"), "metric_name", names)
    k = out["metric_count"]
    intervals = [
        mean_interval(ok.loc[ok["strategy"] == s, "metric"].dropna()) if count >= 2 else (math.nan, math.nan)
        for s, count in zip(strategies, k)
    ]
    low, high = (np.array(side) for side in zip(*intervals)) if intervals else (np.array([]), np.array([]))
    one_accuracy = (k == 1) & (out["metric_name"] == "accuracy")
    out["metric_mean_ci_low"] = np.where(k >= 2, low, np.where(one_accuracy, out["accuracy_mean_ci_low"], math.nan))
    out["metric_mean_ci_high"] = np.where(k >= 2, high, np.where(one_accuracy, out["accuracy_mean_ci_high"], math.nan))
    # A strategy did not learn on this task where at least half its ok seeds did not (stats.learned):
    # half a strategy's runs at the majority class's level is no result to recommend it on. Each
    # such seed is named, also where the strategy as a whole learned.
    flagged = ok[ok["did_not_learn"].notna()] if "did_not_learn" in ok else ok.iloc[:0]
    seeds = flagged.groupby("strategy", sort=False)["seed"].apply(lambda s: ", ".join(map(str, sorted(s))))
    n_flagged = flagged.groupby("strategy", sort=False).size().reindex(strategies).fillna(0).to_numpy()
    out["did_not_learn_seeds"] = seeds.reindex(strategies).to_numpy()
    out["did_not_learn"] = (out["n_ok"] > 0) & (2 * n_flagged >= out["n_ok"]) & (n_flagged > 0)
    return out


COMPARISON_COLUMNS: tuple[str, ...] = (
    *CELL_COLUMNS,
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
    # Beyond the required ones: what the test rests on, and inference speed.
    "paired_seeds",
    "reviews_better",
    "reviews_worse",
    "eval_reviews_per_s",
    # The task's primary metric over seeds; the delta, its interval and the p-value are on it,
    # from `test`: McNemar's exact test (its extension to seeds) for accuracy, else the
    # paired bootstrap (ftcompare.report.stats).
    "metric_name",
    "metric_mean",
    "metric_sd",
    "metric_ci_low",
    "metric_ci_high",
    "test",
    # The 90% interval (the equivalence test's), what the intervals resample (test rows; seeds
    # too with two or more), the smallest difference the test detects (stats.detectable_difference),
    # and the verdict (Verdict) at `equivalence_margin` points.
    "delta_ci90_low",
    "delta_ci90_high",
    "interval",
    "standard_error",
    "detectable_difference",
    "equivalence_margin",
    "did_not_learn",
    "verdict",
)


def correctness(predictions: pd.DataFrame) -> np.ndarray:
    """Per test review, in the test split's order, whether the run predicted its label."""
    ordered = predictions.sort_values("row")
    return ordered["prediction"].to_numpy() == ordered["label"].to_numpy()


def outcomes(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """A run's test labels and predicted labels in the test split's order, and the number of
    classes (its probability columns)."""
    ordered = predictions.sort_values("row")
    seen = int(max(ordered["label"].max(), ordered["prediction"].max())) + 1
    num_labels = max(sum(column.startswith("prob_") for column in ordered.columns), seen, 2)
    return ordered["label"].to_numpy(), ordered["prediction"].to_numpy(), num_labels


def compare_strategies(
    *,
    agg: pd.DataFrame,
    runs: Sequence[RunRecord],
    correct: Mapping[RunKey, np.ndarray],
    baseline: str,
    predicted: Mapping[RunKey, tuple[np.ndarray, np.ndarray, int]] | None = None,
    margin: float = DEFAULT_EQUIVALENCE_MARGIN,
) -> pd.DataFrame:
    """Within each (task, model) cell, one row per strategy against `baseline` on the same test
    reviews (ftcompare.report.stats): accuracy and the task's metric over seeds, the paired
    difference on the metric in points with its 95% interval, the p-value (`test`: with one
    seed, McNemar's exact test on accuracy, from `correct`, and the paired bootstrap over rows
    on another metric, from `predicted`, each run's `outcomes`; with several, the bootstrap
    over seeds and rows on any metric), its Holm adjustment across the cell's strategies that
    learned, and the verdict (equivalent: the 90% interval inside ±`margin` points). A side
    that did not learn (`agg`'s did_not_learn) is not tested: the strategy's verdict is
    did-not-learn, or not compared where the baseline did not learn. Empty where a side has
    no ok run."""
    parts = [
        _compare_cell(
            agg=in_cell(agg, cell),
            runs=[run for run in runs if run.cell == cell],
            correct=correct,
            predicted=predicted,
            baseline=baseline,
            margin=margin,
        )
        for cell in cells_of(agg)
    ]
    if not parts:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def _compare_cell(
    *,
    agg: pd.DataFrame,
    runs: Sequence[RunRecord],
    correct: Mapping[RunKey, np.ndarray],
    predicted: Mapping[RunKey, tuple[np.ndarray, np.ndarray, int]] | None,
    baseline: str,
    margin: float,
) -> pd.DataFrame:
    names = set(agg["metric_name"].dropna()) if "metric_name" in agg else set()
    if len(names) > 1:
        raise ValueError(f"runs of one comparison name different metrics: {sorted(names)}")
    metric = names.pop() if names else "accuracy"
    if metric != "accuracy" and predicted is None:
        raise ValueError(f"comparing on {metric} needs each run's predictions (`predicted`)")
    several = any(n >= 2 for n in agg["n_ok"])
    # Several seeds: the bootstrap over seeds and rows, on any metric (stats.paired_bootstrap).
    bootstrap = metric != "accuracy" or (several and predicted is not None)
    per_run = predicted if bootstrap else correct
    ok_seeds: dict[str, dict[int, Any]] = {}
    for run in runs:
        if run.ok and run.key in per_run:
            ok_seeds.setdefault(run.strategy, {})[run.seed] = per_run[run.key]
    base = ok_seeds.get(baseline, {})
    not_learned = set(agg.loc[agg["did_not_learn"].astype(bool), "strategy"]) if "did_not_learn" in agg else set()
    rows = []
    for record in agg.to_dict("records"):
        strategy, seeds = record["strategy"], ok_seeds.get(record["strategy"], {})
        row = _comparison_row(record, metric=metric) | {"did_not_learn": strategy in not_learned}
        if strategy in not_learned or baseline in not_learned:
            pass  # no test: a side is the majority class's level, not a trained classifier's
        elif strategy != baseline and seeds and base and set(seeds) & set(base):
            row |= _paired_test(metric, seeds, base, bootstrap=bootstrap)
        rows.append(row)
    return _with_verdicts(
        pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)), baseline=baseline, not_learned=not_learned, margin=margin
    )


def _comparison_row(record: Mapping[str, Any], *, metric: str) -> dict[str, Any]:
    """A strategy's aggregate (one row of aggregate_by_strategy) as a comparison row, before its test."""
    return {
        "task": record["task"],
        "model": record["model"],
        "strategy": record["strategy"],
        "method": record["method"],
        "n_ok": record["n_ok"],
        "accuracy_mean": record["accuracy_mean"],
        "accuracy_sd": record["accuracy_std"],
        "accuracy_ci_low": record["accuracy_mean_ci_low"],
        "accuracy_ci_high": record["accuracy_mean_ci_high"],
        "eval_reviews_per_s": record["eval_reviews_per_s_mean"],
        "metric_name": metric,
        "metric_mean": record.get("metric_mean"),
        "metric_sd": record.get("metric_std"),
        "metric_ci_low": record.get("metric_mean_ci_low"),
        "metric_ci_high": record.get("metric_mean_ci_high"),
    }


def _paired_test(metric: str, seeds: Mapping[int, Any], base: Mapping[int, Any], *, bootstrap: bool) -> dict[str, Any]:
    """A strategy's seeds against the baseline's: the exact sign test on accuracy with one seed a
    side, else the paired bootstrap over seeds and rows; its columns of the comparison row."""
    if not bootstrap:
        compared = paired_comparison(seeds, base)
    else:
        labels, _, num_labels = next(iter(base.values()))
        compared = paired_bootstrap(
            metric,
            labels,
            {seed: predictions for seed, (_, predictions, _) in seeds.items()},
            {seed: predictions for seed, (_, predictions, _) in base.items()},
            num_labels=num_labels,
        )
    return {
        "test": compared.test,
        "delta_vs_baseline": compared.delta,
        "delta_ci_low": compared.delta_ci_low,
        "delta_ci_high": compared.delta_ci_high,
        "p_value": compared.p_value,
        "paired_seeds": ",".join(map(str, compared.seeds)),
        "reviews_better": compared.better,
        "reviews_worse": compared.worse,
        "delta_ci90_low": compared.delta_ci90_low,
        "delta_ci90_high": compared.delta_ci90_high,
        "interval": compared.interval,
        "standard_error": compared.standard_error,
    }


def _with_verdicts(table: pd.DataFrame, *, baseline: str, not_learned: set[str], margin: float) -> pd.DataFrame:
    """The comparison table with Holm's adjustment over its tests, each test's detectable
    difference, and every row's verdict."""
    table = table.astype({"p_value": float, "p_value_holm": float, "detectable_difference": float})
    tested = table["p_value"].notna()
    table.loc[tested, "p_value_holm"] = holm(table.loc[tested, "p_value"].tolist())
    table.loc[tested, "detectable_difference"] = [
        detectable_difference(se, tests=int(tested.sum())) for se in table.loc[tested, "standard_error"]
    ]
    table["equivalence_margin"] = float(margin)
    table["verdict"] = [
        _verdict(row, baseline=baseline, baseline_learned=baseline not in not_learned, margin=margin)
        for row in table.to_dict("records")
    ]
    return table


def _verdict(row: Mapping[str, Any], *, baseline: str, baseline_learned: bool, margin: float) -> Verdict:
    """A comparison row's verdict (stats.verdict), from its Holm-adjusted p and 90% interval."""
    if row["did_not_learn"]:
        return Verdict.DID_NOT_LEARN
    if row["strategy"] == baseline:
        return Verdict.BASELINE
    if not baseline_learned or pd.isna(row["p_value_holm"]):
        return Verdict.NOT_COMPARED
    return verdict(
        p_holm=row["p_value_holm"],
        delta=row["delta_vs_baseline"],
        ci90_low=row["delta_ci90_low"],
        ci90_high=row["delta_ci90_high"],
        margin=margin,
    )


@dataclass(frozen=True)
class Majority:
    """Labelling every test row of a cell with its most common class: the level a run must beat."""

    label: int
    name: str | None  # the class's name where the data names its classes
    share: float  # of the test labels
    scores: dict[str, float]  # every metric the task has, of that constant answer

    @property
    def shown(self) -> str:
        return self.name if self.name is not None else str(self.label)


def label_names(runs: Sequence[RunRecord]) -> list[str] | None:
    """The classes' names, from the tokenized data's tokenization.json (`label_names`) that a
    train record names; None where nothing names them or the file is not there."""
    for run in runs:
        folder = run.train.get("tokenized_dir")
        if not folder:
            continue
        try:
            names = tokenization_meta(folder).get("label_names")
        except (OSError, ValueError):
            continue
        if names:
            return [str(name) for name in names]
    return None


def majority_of(
    runs: Sequence[RunRecord], predicted: Mapping[RunKey, tuple[np.ndarray, np.ndarray, int]]
) -> Majority | None:
    """The majority class of a cell's test labels (any run's predictions hold them)."""
    from ftcompare.contract import all_scores

    for run in runs:
        if run.key in predicted:
            labels, _, num_labels = predicted[run.key]
            label, share = majority_class(labels, num_labels=num_labels)
            names = label_names(runs)
            return Majority(
                label=label,
                name=names[label] if names and label < len(names) else None,
                share=share,
                scores=all_scores(labels, np.full_like(labels, label), num_labels=num_labels),
            )
    return None


@dataclass(frozen=True)
class Results:
    """Everything the figures and the report of one (task, model) cell are drawn from, computed
    once (`Results.of` accepts runs of several cells; `StudyResults` splits a study into cells)."""

    runs: list[RunRecord]
    table: pd.DataFrame  # one row per run: SUMMARY_COLUMNS
    agg: pd.DataFrame  # one row per strategy: aggregate_by_strategy
    baseline: str | None = None
    comparison: pd.DataFrame | None = None  # one row per strategy: COMPARISON_COLUMNS
    tuning: pd.DataFrame | None = None  # one row per trial run (results/tuning/summary.csv)
    selected: dict[str, Any] | None = None  # per tuned strategy, its choice (results/tuning/selected.yaml)
    majority: Majority | None = None  # the majority class of the test labels (from the predictions)
    unit: str = "examples"  # what a test row is, in words (config data.unit)
    margin: float = DEFAULT_EQUIVALENCE_MARGIN  # report.equivalence_margin, in points
    predicted: Mapping[RunKey, tuple[np.ndarray, np.ndarray, int]] | None = None
    # compared_with's tables by reference strategy, made once: the report asks more than once.
    versus: dict[str, pd.DataFrame] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        runs: Sequence[RunRecord],
        *,
        predictions: Mapping[RunKey, pd.DataFrame] | None = None,
        baseline: str | None = None,
        tuning: pd.DataFrame | None = None,
        selected: dict[str, Any] | None = None,
        unit: str = "examples",
        margin: float = DEFAULT_EQUIVALENCE_MARGIN,
    ) -> Results:
        correct = predicted = learning = majority = None
        if predictions is not None:
            correct = {key: correctness(frame) for key, frame in predictions.items() if len(frame)}
            predicted = {key: outcomes(frame) for key, frame in predictions.items() if len(frame)}
            names = label_names(runs)
            learning = {
                run.key: learned(
                    run.metric, *predicted[run.key][:2], num_labels=predicted[run.key][2], label_names=names
                )
                for run in runs
                if run.ok and run.key in predicted
            }
            majority = majority_of(runs, predicted)
        table = summary_table(runs=runs, learning=learning)
        agg = aggregate_by_strategy(table=table)
        comparison = None
        if predictions is not None and baseline is not None:
            comparison = compare_strategies(
                agg=agg, runs=runs, correct=correct, baseline=baseline, predicted=predicted, margin=margin
            )
        return cls(
            runs=list(runs),
            table=table,
            agg=agg,
            baseline=baseline,
            comparison=comparison,
            tuning=tuning,
            selected=selected,
            majority=majority,
            unit=unit,
            margin=margin,
            predicted=predicted,
        )

    def compared_with(self, reference: str) -> pd.DataFrame | None:
        """Every strategy against `reference` as `comparison` is against the baseline (None
        without predictions)."""
        if self.predicted is None:
            return None
        if reference == self.baseline:
            return self.comparison
        if reference not in self.versus:
            correct = {key: labels == predictions for key, (labels, predictions, _) in self.predicted.items()}
            self.versus[reference] = compare_strategies(
                agg=self.agg,
                runs=self.runs,
                correct=correct,
                baseline=reference,
                predicted=self.predicted,
                margin=self.margin,
            )
        return self.versus[reference]


def _read_predictions(
    runs: Sequence[RunRecord], eval_paths: Sequence[Path], prediction_paths: Sequence[Path] | None
) -> dict[RunKey, pd.DataFrame] | None:
    if prediction_paths is None:
        return None
    if len(prediction_paths) != len(eval_paths):
        raise ValueError(f"{len(prediction_paths)} prediction files for {len(eval_paths)} eval records")
    keys = [run.key for run in runs]
    return {
        eval_key(json.loads(Path(eval_path).read_text()), keys): pd.read_parquet(path)
        for eval_path, path in zip(eval_paths, prediction_paths)
    }


def cell_tuning(
    summaries: Sequence[Path], selections: Sequence[Path], cells: Sequence[CellKey]
) -> dict[CellKey, tuple[pd.DataFrame, dict[str, Any]]]:
    """Each cell's tuning trials and selection. `summaries` and `selections` are parallel (a
    cell's summary.csv and selected.yaml); a summary names its cell in its task and model
    columns, and one without them (a study before the matrix) belongs to the study's one cell."""
    if len(summaries) != len(selections):
        raise ValueError(f"{len(summaries)} tuning summaries for {len(selections)} selections")
    tuned: dict[CellKey, tuple[pd.DataFrame, dict[str, Any]]] = {}
    for summary, selection in zip(summaries, selections):
        trials = pd.read_csv(summary)
        if not set(CELL_COLUMNS) <= set(trials.columns):
            if len(cells) != 1:
                raise ValueError(f"{summary}: no task and model columns, and the study has {len(cells)} cells")
            trials.insert(0, "model", cells[0][1])
            trials.insert(0, "task", cells[0][0])
        found = cells_of(trials) or list(cells[:1])
        if len(found) != 1:
            raise ValueError(f"{summary}: trials of {len(found)} cells {found}; one summary per cell")
        tuned[found[0]] = (trials, read_selection(selection))
    return tuned


@dataclass(frozen=True)
class StudyResults:
    """A study: its (task, model) cells, each a `Results`, in the order the records list them."""

    cells: dict[CellKey, Results]
    baseline: str | None = None
    margin: float = DEFAULT_EQUIVALENCE_MARGIN  # report.equivalence_margin, in points

    @classmethod
    def of(
        cls,
        runs: Sequence[RunRecord],
        *,
        predictions: Mapping[RunKey, pd.DataFrame] | None = None,
        baseline: str | None = None,
        tuning: Mapping[CellKey, tuple[pd.DataFrame, dict[str, Any]]] | None = None,
        units: Mapping[str, str] | None = None,
        margin: float = DEFAULT_EQUIVALENCE_MARGIN,
    ) -> StudyResults:
        """`units`: each task's test rows in words (config data.unit; default "examples")."""
        by_cell: dict[CellKey, list[RunRecord]] = {}
        for run in runs:
            by_cell.setdefault(run.cell, []).append(run)
        tuning = tuning or {}
        cells = {}
        for cell, cell_runs in by_cell.items():
            keys = {run.key for run in cell_runs}
            trials, selected = tuning.get(cell, (None, None))
            cells[cell] = Results.of(
                cell_runs,
                predictions=None if predictions is None else {k: v for k, v in predictions.items() if k in keys},
                baseline=baseline,
                tuning=trials,
                selected=selected,
                unit=(units or {}).get(cell[0], "examples"),
                margin=margin,
            )
        return cls(cells=cells, baseline=baseline, margin=margin)

    @classmethod
    def load(
        cls,
        *,
        train_paths: Sequence[Path],
        eval_paths: Sequence[Path],
        prediction_paths: Sequence[Path] | None = None,
        baseline: str | None = None,
        tuning_summaries: Sequence[Path] = (),
        selections: Sequence[Path] = (),
        units: Mapping[str, str] | None = None,
        margin: float = DEFAULT_EQUIVALENCE_MARGIN,
    ) -> StudyResults:
        runs = load_runs(train_paths=train_paths, eval_paths=eval_paths)
        cells = list(dict.fromkeys(run.cell for run in runs))
        return cls.of(
            runs,
            predictions=_read_predictions(runs, eval_paths, prediction_paths),
            baseline=baseline,
            tuning=cell_tuning(tuning_summaries, selections, cells),
            units=units,
            margin=margin,
        )

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(task for task, _ in self.cells))

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(model for _, model in self.cells))

    def _concat(self, frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
        present = [frame for frame in frames if frame is not None]
        return pd.concat(present, ignore_index=True) if present else None

    @property
    def table(self) -> pd.DataFrame:
        """results/summary.csv: every run, cell by cell."""
        return self._concat([r.table for r in self.cells.values()])

    @property
    def comparison(self) -> pd.DataFrame | None:
        """results/summary_by_strategy.csv: each cell's strategies against the baseline."""
        return self._concat([r.comparison for r in self.cells.values()])

    @property
    def tuning(self) -> pd.DataFrame | None:
        """results/tuning/summary.csv: every cell's trials, with task and model first."""
        return self._concat([r.tuning for r in self.cells.values()])


# Scores are rounded to this many decimals before ranking: two means of the same seed scores,
# summed in another order, can differ in the last bit, and must still tie.
RANK_DECIMALS = 9


def cell_scores(study: StudyResults) -> pd.DataFrame:
    """One row per (task, model, strategy): the primary metric (mean over ok seeds), whether
    the strategy did not learn there, its rank among the cell's strategies that learned (1 =
    best, exact ties share the mean rank; none where it did not learn), the per-task paired
    test against the baseline (compare_strategies' p-value and 90% interval, whichever test
    it ran), Holm-adjusted over every test of the study, its verdict (Verdict), and the
    costs relative to the baseline's in the same cell."""
    rows = [row for (task, model), results in study.cells.items() for row in _cell_rows(task, model, results, study)]
    scores = pd.DataFrame(rows)
    if scores.empty:
        return scores
    ranked = scores["score"].round(RANK_DECIMALS).where(~scores["did_not_learn"])
    scores["rank"] = ranked.groupby([scores["task"], scores["model"]], sort=False).rank(
        ascending=False, method="average"
    )
    # The family is every per-task test of the study: a verdict across tasks is one claim
    # over all of them, so Holm adjusts over all tasks, strategies and models together.
    tested = scores["p_value"].notna()
    scores["p_value_holm"] = math.nan
    if tested.any():
        scores.loc[tested, "p_value_holm"] = holm(scores.loc[tested, "p_value"].astype(float).tolist())
    scores["verdict"] = [str(v) for v in _study_verdicts(scores, study)]
    return scores


def _cell_rows(task: str, model: str, results: Results, study: StudyResults) -> list[dict[str, Any]]:
    """One cell's rows of cell_scores, before the study-wide rank, Holm adjustment and verdicts."""
    agg = results.agg.set_index("strategy")
    memory_column = "peak_gpu_mem_gb" if agg["peak_gpu_mem_gb_mean"].notna().any() else "peak_rss_gb"
    comparison = None if results.comparison is None else results.comparison.set_index("strategy")
    metrics = {run.metric for run in results.runs}
    base = agg.loc[study.baseline] if study.baseline in agg.index else None
    rows = []
    for strategy in agg.index:
        scores = [run.score for run in results.runs if run.strategy == strategy and run.ok]
        scores = [s for s in scores if not math.isnan(s)]
        row = {
            "task": task,
            "model": model,
            "strategy": strategy,
            "method": agg.loc[strategy, "method"],
            "metric": ", ".join(sorted(metrics)),
            "score": float(np.mean(scores)) if scores else math.nan,
            "did_not_learn": bool(agg.loc[strategy].get("did_not_learn", False)),
            "p_value": math.nan,
            "delta": math.nan,
            "delta_ci90_low": math.nan,
            "delta_ci90_high": math.nan,
            "standard_error": math.nan,
        }
        if comparison is not None and strategy in comparison.index and strategy != study.baseline:
            for name, column in (
                ("p_value", "p_value"),
                ("delta", "delta_vs_baseline"),
                ("delta_ci90_low", "delta_ci90_low"),
                ("delta_ci90_high", "delta_ci90_high"),
                ("standard_error", "standard_error"),
            ):
                row[name] = comparison.loc[strategy, column] if column in comparison else math.nan
        for name, column in zip(ACROSS_COST_COLUMNS, ("train_time_s", "trainable_params", memory_column)):
            ours = agg.loc[strategy, f"{column}_mean"]
            theirs = math.nan if base is None else base[f"{column}_mean"]
            row[name] = ours / theirs if theirs and not math.isnan(theirs) else math.nan
        rows.append(row)
    return rows


def _study_verdicts(scores: pd.DataFrame, study: StudyResults) -> list[Verdict]:
    """Each row's verdict against the baseline of its cell, on the study-wide Holm p-values."""
    learned_baseline = {
        (t, m): not d
        for t, m, s, d in scores[["task", "model", "strategy", "did_not_learn"]].itertuples(index=False)
        if s == study.baseline
    }
    verdicts = []
    for row in scores.to_dict("records"):
        if row["did_not_learn"]:
            verdicts.append(Verdict.DID_NOT_LEARN)
        elif row["strategy"] == study.baseline:
            verdicts.append(Verdict.BASELINE)
        elif not learned_baseline.get((row["task"], row["model"]), False) or pd.isna(row["p_value_holm"]):
            verdicts.append(Verdict.NOT_COMPARED)
        else:
            verdicts.append(
                verdict(
                    p_holm=row["p_value_holm"],
                    delta=row["delta"],
                    ci90_low=row["delta_ci90_low"],
                    ci90_high=row["delta_ci90_high"],
                    margin=study.margin,
                )
            )
    return verdicts


def across_tasks(study: StudyResults) -> pd.DataFrame:
    """results/summary_across_tasks.csv: one row per model × strategy. Per task (a column named
    by the task) the primary metric, then its mean over tasks (of different metrics where the
    tasks' differ), the mean rank over the tasks where any strategy learned (1 = best in each
    task), the counts of each verdict against the baseline from the per-task paired tests
    (Holm-adjusted over all of them; VERDICT_COUNT_COLUMNS), each task's rank, adjusted
    p-value and verdict, and the costs relative to the baseline (the mean over tasks of each
    task's ratio). The mean needs a score on every task, and the mean rank a rank on every
    ranked task: a strategy without one (it failed, or did not learn) has none (NaN)."""
    scores = cell_scores(study)
    tasks = study.tasks
    rows = []
    if scores.empty:
        return pd.DataFrame(columns=list(ACROSS_COLUMNS[:3]) + tasks + list(ACROSS_COLUMNS[3:]))
    for (model, strategy), group in scores.groupby(["model", "strategy"], sort=False):
        by_task = group.set_index("task")
        mine = scores[scores["model"] == model]
        ranked_tasks = [task for task in tasks if mine.loc[mine["task"] == task, "rank"].notna().any()]
        per_task = [by_task["score"].get(task, math.nan) for task in tasks]
        ranks = [by_task["rank"].get(task, math.nan) for task in ranked_tasks]
        verdicts = group["verdict"].tolist()
        row = {
            "model": model,
            "strategy": strategy,
            "method": group["method"].iloc[0],
            **dict(zip(tasks, per_task)),
            "mean": float(np.mean(per_task)) if not np.isnan(per_task).any() else math.nan,
            "mean_rank": float(np.mean(ranks)) if ranks and not np.isnan(ranks).any() else math.nan,
            **{column: verdicts.count(str(v)) for column, v in zip(VERDICT_COUNT_COLUMNS, COUNTED_VERDICTS)},
            **{f"{ACROSS_TASK_PREFIXES[0]}{task}": by_task["rank"].get(task, math.nan) for task in tasks},
            **{f"{ACROSS_TASK_PREFIXES[1]}{task}": by_task["p_value_holm"].get(task, math.nan) for task in tasks},
            **{f"{ACROSS_TASK_PREFIXES[2]}{task}": by_task["verdict"].get(task) for task in tasks},
            **{name: group[name].mean() for name in ACROSS_COST_COLUMNS},
        }
        rows.append(row)
    return pd.DataFrame(rows)


def detectable_by_task(study: StudyResults) -> dict[str, float]:
    """Per task, the smallest difference (points of its primary metric) that the study's
    tests detect with 80% power (stats.detectable_difference): the median over the task's
    comparisons of the bootstrap standard error, at the alpha Holm's strictest step gives
    over every test of the study. NaN where nothing was compared."""
    scores = cell_scores(study)
    if scores.empty:
        return {}
    tested = scores[scores["p_value"].notna()]
    return {
        task: detectable_difference(float(group["standard_error"].median()), tests=len(tested))
        if len(group)
        else math.nan
        for task in study.tasks
        for group in [tested[tested["task"] == task]]
    }
