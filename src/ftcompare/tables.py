"""Run records into tables: the per-run summary and the per-strategy aggregate.

`Results.load` reads the train and eval records once; the figures (`ftcompare.figures`)
and the Markdown report (`ftcompare.report`) are drawn from the same `Results`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftcompare.methods import method_family
from ftcompare.records import Status, read_record, read_selection
from ftcompare.stats import holm, mean_interval, paired_bootstrap, paired_comparison

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
SUMMARY_COLUMNS: tuple[str, ...] = (
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
    # The task's other metrics (ftcompare.metrics; `f1` above is the positive class's, binary
    # tasks only), and its primary one: `metric_name` and the run's test score on it, `metric`.
    "macro_f1",
    "mcc",
    "metric_name",
    "metric",
)
TEXT_COLUMNS: frozenset[str] = frozenset(
    {
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


@dataclass(frozen=True)
class RunRecord:
    """One (strategy, seed) run: the paired train and eval records and the combined status."""

    strategy: str
    method: str
    seed: int
    status: str
    reason: str | None
    train: dict[str, Any]
    eval: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def metric(self) -> str:
        """The task's primary metric, as the run's settings say (records before it: accuracy)."""
        return str((self.train.get("config") or {}).get("metric") or "accuracy")


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


def _index_records(paths: Sequence[Path], kind: str) -> dict[tuple[str, int], dict[str, Any]]:
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for path in paths:
        record = _read_record(Path(path), kind)
        key = (record["strategy"], record["seed"])
        if key in records:
            raise ValueError(f"{path}: a second {kind} record for strategy {key[0]!r} seed {key[1]}")
        records[key] = record
    return records


def load_runs(*, train_paths: Sequence[Path], eval_paths: Sequence[Path]) -> list[RunRecord]:
    """Pair train and eval records by (strategy, seed).

    Runs come out in the order strategies first appear in ``train_paths`` (the
    config order), seeds ascending within a strategy.
    """
    trains = _index_records(train_paths, "train")
    evals = _index_records(eval_paths, "eval")
    if unpaired := sorted(set(trains) ^ set(evals)):
        raise ValueError(f"(strategy, seed) pairs {unpaired} have only one of train/eval records; every run needs both")
    strategy_order = list(dict.fromkeys(strategy for strategy, _ in trains))
    keys = sorted(trains, key=lambda key: (strategy_order.index(key[0]), key[1]))

    runs = []
    for strategy, seed in keys:
        train, ev = trains[(strategy, seed)], evals[(strategy, seed)]
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
            )
        )
    return runs


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


def summary_table(*, runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run, columns ``SUMMARY_COLUMNS``; missing metrics are NaN."""
    rows = []
    for run in runs:
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
    """Mean, std (ddof=1) and count over the ok seeds of each strategy.

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
    return out


COMPARISON_COLUMNS: tuple[str, ...] = (
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
    # paired bootstrap (ftcompare.stats).
    "metric_name",
    "metric_mean",
    "metric_sd",
    "metric_ci_low",
    "metric_ci_high",
    "test",
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
    correct: Mapping[tuple[str, int], np.ndarray],
    baseline: str,
    predicted: Mapping[tuple[str, int], tuple[np.ndarray, np.ndarray, int]] | None = None,
) -> pd.DataFrame:
    """One row per strategy against `baseline` on the same test reviews (ftcompare.stats):
    accuracy and the task's metric over seeds, the paired difference on the metric in
    points with its 95% interval, the p-value (`test`: McNemar's exact test on accuracy,
    from `correct`; the paired bootstrap on another metric, from `predicted`, each run's
    `outcomes`) and its Holm adjustment across strategies. Empty where a side has no ok run."""
    names = set(agg["metric_name"].dropna()) if "metric_name" in agg else set()
    if len(names) > 1:
        raise ValueError(f"runs of one comparison name different metrics: {sorted(names)}")
    metric = names.pop() if names else "accuracy"
    if metric != "accuracy" and predicted is None:
        raise ValueError(f"comparing on {metric} needs each run's predictions (`predicted`)")
    per_run = correct if metric == "accuracy" else predicted
    ok_seeds: dict[str, dict[int, Any]] = {}
    for run in runs:
        if run.ok and (run.strategy, run.seed) in per_run:
            ok_seeds.setdefault(run.strategy, {})[run.seed] = per_run[(run.strategy, run.seed)]
    base = ok_seeds.get(baseline, {})
    rows = []
    for record in agg.to_dict("records"):
        strategy, seeds = record["strategy"], ok_seeds.get(record["strategy"], {})
        row = {
            "strategy": strategy,
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
        if strategy != baseline and seeds and base and set(seeds) & set(base):
            if metric == "accuracy":
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
            row |= {
                "test": compared.test,
                "delta_vs_baseline": compared.delta,
                "delta_ci_low": compared.delta_ci_low,
                "delta_ci_high": compared.delta_ci_high,
                "p_value": compared.p_value,
                "paired_seeds": ",".join(map(str, compared.seeds)),
                "reviews_better": compared.better,
                "reviews_worse": compared.worse,
            }
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    tested = table["p_value"].notna()
    table.loc[tested, "p_value_holm"] = holm(table.loc[tested, "p_value"].tolist())
    return table


@dataclass(frozen=True)
class Results:
    """Everything the figures and the report are drawn from, computed once."""

    runs: list[RunRecord]
    table: pd.DataFrame  # one row per run: SUMMARY_COLUMNS
    agg: pd.DataFrame  # one row per strategy: aggregate_by_strategy
    baseline: str | None = None
    comparison: pd.DataFrame | None = None  # one row per strategy: COMPARISON_COLUMNS
    tuning: pd.DataFrame | None = None  # one row per trial run (results/tuning/summary.csv)
    selected: dict[str, Any] | None = None  # per tuned strategy, its choice (results/tuning/selected.yaml)

    @classmethod
    def of(
        cls,
        runs: Sequence[RunRecord],
        *,
        predictions: Mapping[tuple[str, int], pd.DataFrame] | None = None,
        baseline: str | None = None,
        tuning: pd.DataFrame | None = None,
        selected: dict[str, Any] | None = None,
    ) -> Results:
        table = summary_table(runs=runs)
        agg = aggregate_by_strategy(table=table)
        comparison = None
        if predictions is not None and baseline is not None:
            correct = {key: correctness(frame) for key, frame in predictions.items() if len(frame)}
            predicted = {key: outcomes(frame) for key, frame in predictions.items() if len(frame)}
            comparison = compare_strategies(agg=agg, runs=runs, correct=correct, baseline=baseline, predicted=predicted)
        return cls(
            runs=list(runs),
            table=table,
            agg=agg,
            baseline=baseline,
            comparison=comparison,
            tuning=tuning,
            selected=selected,
        )

    @classmethod
    def load(
        cls,
        *,
        train_paths: Sequence[Path],
        eval_paths: Sequence[Path],
        prediction_paths: Sequence[Path] | None = None,
        baseline: str | None = None,
        tuning_summary: Path | None = None,
        selected: Path | None = None,
    ) -> Results:
        """`prediction_paths` run parallel to `eval_paths` (each run's predictions.parquet)."""

        runs = load_runs(train_paths=train_paths, eval_paths=eval_paths)
        predictions = None
        if prediction_paths is not None:
            if len(prediction_paths) != len(eval_paths):
                raise ValueError(f"{len(prediction_paths)} prediction files for {len(eval_paths)} eval records")
            predictions = {}
            for eval_path, path in zip(eval_paths, prediction_paths):
                record = json.loads(Path(eval_path).read_text())
                predictions[(record["strategy"], record["seed"])] = pd.read_parquet(path)
        return cls.of(
            runs,
            predictions=predictions,
            baseline=baseline,
            tuning=None if tuning_summary is None else pd.read_csv(tuning_summary),
            selected=None if selected is None else read_selection(selected),
        )
