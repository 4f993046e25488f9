"""Turn the per-run train/eval JSON records into a summary table, figures and a Markdown report.

Reading order: loading and validating records, the per-run table, the per-strategy
aggregate, the figures, then the Markdown report.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are written from batch jobs without a display

import matplotlib.pyplot as plt  # noqa: E402  (must follow matplotlib.use)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Worst first wins when a run's train and eval records disagree.
STATUS_RANK: dict[str, int] = {"ok": 0, "skipped": 1, "failed": 2}

SUMMARY_COLUMNS: tuple[str, ...] = (
    "strategy", "method", "seed", "status", "reason",
    "accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1", "precision", "recall",
    "train_time_s", "eval_time_s", "tokens_per_s",
    "trainable_params", "total_params", "trainable_pct",
    "peak_gpu_mem_gb", "peak_rss_gb", "adapter_size_mb", "device",
    # Extra columns after the required ones; the report needs them.
    "device_type", "n_test", "best_epoch", "best_val_accuracy",
    # Why an ok run's best epoch is not to be trusted (one class for every validation
    # review); empty when it is fine.
    "degenerate_validation",
)
TEXT_COLUMNS: frozenset[str] = frozenset(
    {"strategy", "method", "status", "reason", "device", "device_type", "degenerate_validation"}
)
AGGREGATE_COLUMNS: tuple[str, ...] = (
    "accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1", "precision", "recall",
    "train_time_s", "eval_time_s", "tokens_per_s",
    "trainable_params", "total_params", "trainable_pct",
    "peak_gpu_mem_gb", "peak_rss_gb", "adapter_size_mb", "n_test",
)

FIGURE_NAMES: tuple[str, ...] = (
    "accuracy", "train_time", "trainable_params", "peak_memory", "pareto", "loss_curves",
)
FIGURE_CAPTIONS: dict[str, str] = {
    "accuracy": "Test accuracy per strategy (mean over successful seeds, 95% CI).",
    "train_time": "Wall-clock training time per strategy.",
    "trainable_params": "Trainable parameters per strategy (log scale).",
    "peak_memory": "Peak memory during training.",
    "pareto": "Accuracy against cost; Pareto-optimal strategies are highlighted.",
    "loss_curves": "Training loss and validation accuracy per epoch, one line per seed.",
}
DPI = 150

# The full IMDB test split; the reference notebook evaluated on all of it.
REFERENCE_TEST_SIZE = 25_000
DEFAULT_REFERENCE: dict[str, Any] = {
    "source": "reference notebook: lr 2e-5 for every strategy, fp32, every review padded to 512 tokens, one seed",
    "hardware": "RTX 3080",
    "recipe": "lr 2e-5 for every strategy, fp32, every review padded to 512 tokens, one seed",
    "results": {
        "full": {"accuracy": 0.9415, "train_time_s": 2657},
        "lora": {"accuracy": 0.9326, "train_time_s": 2307},
        "qlora": {"accuracy": 0.9388, "train_time_s": 4030},
        "ia3": {"accuracy": 0.9003, "train_time_s": 2367},
    },
    "published_full_ft_accuracy": 0.955,
}

# Two-sided 95% Student t quantiles by degrees of freedom; more than 30 seeds
# falls back to the normal quantile, which is within 3% of t there.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _t95(df: int) -> float:
    return _T95[df - 1] if df <= len(_T95) else 1.960


# --------------------------------------------------------------------------- loading


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
        return self.status == "ok"


def _read_record(path: Path, kind: str) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    if record.get("kind") != kind:
        raise ValueError(f"{path}: kind {record.get('kind')!r} where {kind!r} was expected")
    if record.get("status") not in STATUS_RANK:
        raise ValueError(f"{path}: status {record.get('status')!r} is not one of {sorted(STATUS_RANK)}")
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
        raise ValueError(
            f"(strategy, seed) pairs {unpaired} have only one of train/eval records; every run needs both"
        )
    strategy_order = list(dict.fromkeys(strategy for strategy, _ in trains))
    keys = sorted(trains, key=lambda key: (strategy_order.index(key[0]), key[1]))

    runs = []
    for strategy, seed in keys:
        train, ev = trains[(strategy, seed)], evals[(strategy, seed)]
        status = max(train["status"], ev["status"], key=STATUS_RANK.__getitem__)
        reason = train.get("reason") or ev.get("reason")
        runs.append(RunRecord(strategy=strategy, method=str(train.get("method") or strategy), seed=seed,
                              status=status, reason=reason, train=train, eval=ev))
    return runs


# --------------------------------------------------------------------------- per-run table


def _number(metrics: Mapping[str, Any], key: str) -> float:
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
        trainable, total = _number(train_m, "trainable_params"), _number(train_m, "total_params")
        # Reserved is what the process actually held from the card and what decides
        # an OOM; allocated (live tensors only) is the fallback when reserved is absent.
        gpu_mem = _number(train_m, "peak_gpu_mem_reserved_gb")
        if math.isnan(gpu_mem):
            gpu_mem = _number(train_m, "peak_gpu_mem_allocated_gb")
        rows.append({
            "strategy": run.strategy, "method": run.method, "seed": run.seed,
            "status": run.status, "reason": run.reason,
            **{key: _number(eval_m, key) for key in
               ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1", "precision", "recall")},
            "train_time_s": _number(train_m, "train_time_s"),
            "eval_time_s": _number(eval_m, "eval_time_s"),
            "tokens_per_s": _number(train_m, "tokens_per_s"),
            "trainable_params": trainable,
            "total_params": total,
            "trainable_pct": 100.0 * trainable / total if total > 0 else math.nan,
            "peak_gpu_mem_gb": gpu_mem,
            "peak_rss_gb": _number(train_m, "peak_rss_gb"),
            "adapter_size_mb": _number(train_m, "adapter_size_mb"),
            "device": _provenance(run, "device"),
            "device_type": _provenance(run, "device_type"),
            "n_test": _number(eval_m, "n_test"),
            "best_epoch": _number(train_m, "best_epoch"),
            "best_val_accuracy": _number(train_m, "best_val_accuracy"),
            "degenerate_validation": train_m.get("degenerate_validation") if run.ok else None,
        })
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    # Explicit dtypes so an empty or all-NaN column still aggregates as numbers.
    numeric = [c for c in SUMMARY_COLUMNS if c not in TEXT_COLUMNS and c != "seed"]
    return table.astype({**{c: float for c in numeric}, "seed": int})


def write_summary_csv(*, runs: Sequence[RunRecord], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary_table(runs=runs).to_csv(path, index=False)


# --------------------------------------------------------------------------- per-strategy aggregate


def _require_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    if missing := [c for c in columns if c not in table.columns]:
        raise ValueError(f"table lacks columns {missing}; build it with summary_table()")


def aggregate_by_strategy(*, table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and count over the ok seeds of each strategy.

    Columns: ``strategy, method, n_runs, n_ok``, then ``<col>_mean/_std/_count``
    for each of ``AGGREGATE_COLUMNS``, then ``accuracy_mean_ci_low/high`` and
    ``accuracy_ci_method``: the 95% CI of the mean accuracy over seeds (Student t)
    with at least two seeds, else the single run's own binomial CI. Strategies
    with no ok run keep their row (counts 0, NaN statistics), in table order.
    """
    _require_columns(table, ("strategy", "method", "status", *AGGREGATE_COLUMNS))
    strategies = list(dict.fromkeys(table["strategy"]))
    ok = table[table["status"] == "ok"]
    stats = ok.groupby("strategy", sort=False)[list(AGGREGATE_COLUMNS)].agg(["mean", "std", "count"])
    stats = stats.reindex(strategies)
    stats.columns = [f"{column}_{stat}" for column, stat in stats.columns]
    count_columns = [c for c in stats.columns if c.endswith("_count")]
    stats[count_columns] = stats[count_columns].fillna(0).astype(int)

    out = pd.DataFrame({
        "strategy": strategies,
        "method": table.groupby("strategy", sort=False)["method"].first().reindex(strategies).to_numpy(),
        "n_runs": table.groupby("strategy", sort=False).size().reindex(strategies).to_numpy(),
        "n_ok": ok.groupby("strategy", sort=False).size().reindex(strategies).fillna(0).astype(int).to_numpy(),
    })
    out = pd.concat([out, stats.reset_index(drop=True)], axis=1)

    n = out["accuracy_count"]
    half = pd.Series([_t95(k - 1) if k >= 2 else math.nan for k in n]) * out["accuracy_std"] / np.sqrt(n)
    over_seeds = n >= 2
    out["accuracy_mean_ci_low"] = np.where(over_seeds, out["accuracy_mean"] - half, out["accuracy_ci_low_mean"])
    out["accuracy_mean_ci_high"] = np.where(over_seeds, out["accuracy_mean"] + half, out["accuracy_ci_high_mean"])
    out[["accuracy_mean_ci_low", "accuracy_mean_ci_high"]] = out[
        ["accuracy_mean_ci_low", "accuracy_mean_ci_high"]].clip(0.0, 1.0)
    out["accuracy_ci_method"] = np.where(over_seeds, "t over seeds", np.where(n == 1, "binomial", None))
    return out


# --------------------------------------------------------------------------- figures


def _colors(strategies: Sequence[str]) -> dict[str, Any]:
    # Colour keyed by config position, so a strategy keeps its colour in every figure.
    cmap = plt.get_cmap("tab10")
    return {strategy: cmap(i % 10) for i, strategy in enumerate(strategies)}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _placeholder(path: Path, title: str) -> Path:
    # Snakemake declares every figure, so one is written even when there is nothing to plot.
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", fontsize=14)
    ax.set_title(title)
    ax.set_axis_off()
    return _save(fig, path)


def _memory_metric(agg: pd.DataFrame) -> tuple[str, str]:
    """GPU memory when any run measured it (CPU runs leave it NaN), else host RSS."""
    if agg["peak_gpu_mem_gb_mean"].notna().any():
        return "peak_gpu_mem_gb", "Peak GPU memory (GB)"
    return "peak_rss_gb", "Peak host RSS (GB, no GPU measurements)"


def _annotate_bars(ax: plt.Axes, xs: Sequence[float], tops: Sequence[float], labels: Sequence[str],
                   *, log: bool = False) -> None:
    for x, top, label in zip(xs, tops, labels):
        # On a log axis a multiplicative offset reads as the same gap at every height.
        ax.annotate(label, (x, top * 1.15 if log else top), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=9)


def _bar_with_std(ax: plt.Axes, agg: pd.DataFrame, column: str, colors: dict[str, Any]) -> list[float]:
    """Bars of the mean with ±1 std error bars (std only exists with ≥ 2 seeds); returns bar tops."""
    means = agg[f"{column}_mean"].to_numpy()
    stds = agg[f"{column}_std"].fillna(0.0).to_numpy()
    xs = np.arange(len(agg))
    ax.bar(xs, means, yerr=stds, capsize=4, color=[colors[s] for s in agg["strategy"]])
    ax.set_xticks(xs, agg["strategy"])
    tops = means + stds
    if np.isfinite(tops).any():
        ax.set_ylim(0, np.nanmax(tops) * 1.15)  # headroom for the value labels
    ax.grid(axis="y", alpha=0.3)
    return list(tops)


def _plot_accuracy(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    mean = agg["accuracy_mean"].to_numpy() * 100
    low = agg["accuracy_mean_ci_low"].fillna(agg["accuracy_mean"]).to_numpy() * 100
    high = agg["accuracy_mean_ci_high"].fillna(agg["accuracy_mean"]).to_numpy() * 100
    xs = np.arange(len(agg))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(agg) + 2), 4.5))
    ax.bar(xs, mean, yerr=[mean - low, high - mean], capsize=5, color=[colors[s] for s in agg["strategy"]])
    ax.set_xticks(xs, agg["strategy"])
    # Differences between strategies are a few points, invisible on a 0-100 axis.
    span = max(high.max() - low.min(), 1.0)
    bottom = max(0.0, low.min() - 0.3 * span)
    ax.set_ylim(bottom, min(100.0, high.max() + 0.1 * span))
    # Labels sit inside the bars' visible base: an error bar clipped at 100% can't run into them.
    for x, m in zip(xs, mean):
        ax.annotate(f"{m:.2f}%", (x, bottom), xytext=(0, 6), textcoords="offset points", ha="center",
                    va="bottom", color="white", fontweight="bold")
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title("Test accuracy (%): mean over successful seeds\n"
                 "error bars: 95% CI of the mean (≥2 seeds) or binomial CI (1 seed)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _plot_train_time(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(agg) + 2), 4.5))
    tops = _bar_with_std(ax, agg, "train_time_s", colors)
    _annotate_bars(ax, range(len(agg)), tops, [f"{v:,.0f} s" for v in agg["train_time_s_mean"]])
    ax.set_ylabel("Training time (s)")
    ax.set_title("Training time (s): mean ± std over successful seeds")
    return _save(fig, path)


def _plot_trainable_params(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    values = agg["trainable_params_mean"].to_numpy()
    xs = np.arange(len(agg))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(agg) + 2), 4.5))
    ax.bar(xs, values, color=[colors[s] for s in agg["strategy"]])
    ax.set_xticks(xs, agg["strategy"])
    # Adapters train 100-1000x fewer parameters than full fine-tuning.
    ax.set_yscale("log")
    labels = [f"{v:,.0f}\n({p:.2f}%)" if np.isfinite(v) else "n/a"
              for v, p in zip(values, agg["trainable_pct_mean"])]
    _annotate_bars(ax, xs, values, labels, log=True)
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size:
        ax.set_ylim(finite.min() / 3, finite.max() * 20)
    ax.set_ylabel("Trainable parameters (count, log scale)")
    ax.set_title("Trainable parameters (count, log scale; % of total in brackets)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _plot_peak_memory(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    column, label = _memory_metric(agg)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(agg) + 2), 4.5))
    tops = _bar_with_std(ax, agg, column, colors)
    _annotate_bars(ax, range(len(agg)), tops, [f"{v:.2f} GB" for v in agg[f"{column}_mean"]])
    ax.set_ylabel(label)
    # Say which GPU counter: reserved (held from the card) unless only allocated was recorded.
    detail = "reserved, else allocated" if column == "peak_gpu_mem_gb" else "resident set of the process"
    ax.set_title(f"{label} during training ({detail})\nmean ± std over successful seeds")
    return _save(fig, path)


def _pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point has lower-or-equal cost x and higher-or-equal accuracy y, one strictly."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dominated = [
        bool(np.any((x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))))
        for i in range(len(x))
    ]
    return ~np.array(dominated, dtype=bool)


def _pareto_panel(ax: plt.Axes, agg: pd.DataFrame, column: str, xlabel: str, colors: dict[str, Any]) -> None:
    data = agg[["strategy", f"{column}_mean", "accuracy_mean"]].dropna()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test accuracy (%)")
    if data.empty:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    x, y = data[f"{column}_mean"].to_numpy(), data["accuracy_mean"].to_numpy() * 100
    front = _pareto_mask(x, y)
    order = np.argsort(x[front])
    # Step line: the best accuracy reachable for any budget up to the next frontier point.
    ax.step(x[front][order], y[front][order], where="post", color="black", alpha=0.6, label="Pareto frontier")
    for xi, yi, strategy, on_front in zip(x, y, data["strategy"], front):
        ax.scatter(xi, yi, s=120 if on_front else 50, color=colors[strategy],
                   edgecolors="black" if on_front else "none", linewidths=1.5, zorder=3)
        ax.annotate(strategy + (" *" if on_front else ""), (xi, yi), xytext=(6, 4),
                    textcoords="offset points", fontsize=9)
    ax.margins(x=0.2, y=0.2)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _plot_pareto(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    column, label = _memory_metric(agg)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    _pareto_panel(left, agg, column, label, colors)
    left.set_title("Accuracy vs peak memory (GB)")
    _pareto_panel(right, agg, "train_time_s", "Training time (s)", colors)
    right.set_title("Accuracy vs training time (s)")
    fig.suptitle("Accuracy/cost trade-off (mean over successful seeds; * = Pareto-optimal)")
    return _save(fig, path)


def _plot_curves(runs: Sequence[RunRecord], colors: dict[str, Any], path: Path) -> Path:
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4.8))
    seed_styles = ("-", "--", ":", "-.")
    seen: dict[str, int] = {}
    for run in runs:
        style = seed_styles[seen.get(run.strategy, 0) % len(seed_styles)]
        seen[run.strategy] = seen.get(run.strategy, 0) + 1
        label = f"{run.strategy} seed {run.seed}"
        loss = run.train.get("loss_curve") or []
        val = run.train.get("val_curve") or []
        loss_ax.plot([p["epoch"] for p in loss], [p["loss"] for p in loss], style,
                     color=colors[run.strategy], label=label, alpha=0.85)
        val_ax.plot([p["epoch"] for p in val], [100 * p["accuracy"] for p in val], style, marker="o",
                    color=colors[run.strategy], label=label)
    loss_ax.set(xlabel="Epoch", ylabel="Training loss (cross-entropy)", title="Training loss vs epoch")
    val_ax.set(xlabel="Epoch", ylabel="Validation accuracy (%)", title="Validation accuracy (%) vs epoch")
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_figures(*, table: pd.DataFrame, runs: Sequence[RunRecord], out_dir: Path) -> dict[str, Path]:
    """Write ``<name>.png`` for every name in ``FIGURE_NAMES`` into ``out_dir``; only ok runs are plotted.

    Every file is written even with no ok run (a "no successful runs" placeholder).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.png" for name in FIGURE_NAMES}
    agg = aggregate_by_strategy(table=table)
    colors = _colors(list(agg["strategy"]))
    agg = agg[agg["n_ok"] > 0].reset_index(drop=True)
    ok_runs = [run for run in runs if run.ok]

    with plt.rc_context({"font.size": 11, "axes.titlesize": 11}):
        if agg.empty or not ok_runs:
            for name, path in paths.items():
                _placeholder(path, FIGURE_CAPTIONS[name])
            return paths
        _plot_accuracy(agg, colors, paths["accuracy"])
        _plot_train_time(agg, colors, paths["train_time"])
        _plot_trainable_params(agg, colors, paths["trainable_params"])
        _plot_peak_memory(agg, colors, paths["peak_memory"])
        _plot_pareto(agg, colors, paths["pareto"])
        _plot_curves(ok_runs, colors, paths["loss_curves"])
    return paths


# --------------------------------------------------------------------------- Markdown report

_MISSING = "—"


def _fmt_pct(value: float) -> str:
    return _MISSING if pd.isna(value) else f"{100 * value:.2f}%"


def _fmt_seconds(value: float) -> str:
    if pd.isna(value):
        return _MISSING
    return f"{value:,.0f} s" if value >= 100 else f"{value:.1f} s"


def _fmt_count(value: float) -> str:
    return _MISSING if pd.isna(value) else f"{round(value):,}"


def _fmt_float(value: float, digits: int) -> str:
    return _MISSING if pd.isna(value) else f"{value:,.{digits}f}"


def _one_line(text: str, limit: int = 500) -> str:
    # OOM messages span many lines; the report keeps one readable line, the CSV keeps all of it.
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _distinct(values: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values if v is not None and not pd.isna(v)))


def _describe_test_size(ok: pd.DataFrame) -> tuple[float, str]:
    sizes = ok["n_test"].dropna()
    if sizes.empty:
        return math.nan, "an unknown number of"
    low, high = sizes.min(), sizes.max()
    return low, f"{low:,.0f}" if low == high else f"{low:,.0f}–{high:,.0f}"


def _model_name(runs: Sequence[RunRecord]) -> str:
    """The fine-tuned model as configured; a local folder by its name alone."""
    names = {str((r.train.get("config") or {}).get("model_name_or_path", "")) for r in runs} - {""}
    if not names:
        return "an unnamed model"
    shown = [n if n.count("/") <= 1 and not n.startswith((".", "/")) else Path(n).name for n in sorted(names)]
    return ", ".join(f"`{n}`" for n in shown)


def _intro(table: pd.DataFrame, agg: pd.DataFrame, runs: Sequence[RunRecord]) -> str:
    ok = table[table["status"] == "ok"]
    strategies = ", ".join(
        f"`{s}`" if s == m else f"`{s}` ({m})" for s, m in zip(agg["strategy"], agg["method"])
    )
    seeds = ", ".join(str(s) for s in sorted(set(table["seed"])))
    _, test_size = _describe_test_size(ok)
    devices = ", ".join(_distinct(ok["device"])) or "no device (no successful run)"
    return (
        f"This report compares {len(agg)} fine-tuning strategies of {_model_name(runs)} for text "
        f"classification: {strategies}, with seeds {seeds}; "
        f"{len(ok)} of {len(table)} runs succeeded. Test metrics come from {test_size} held-out test "
        f"reviews, and runs executed on {devices}. Accuracy is the mean ± standard deviation over "
        f"successful seeds; its 95% CI is that of the mean over seeds (Student t) when there are at "
        f"least two seeds, otherwise the single run's binomial interval."
    )


def _degenerate_seeds(table: pd.DataFrame) -> dict[str, list[int]]:
    """Per strategy, the ok seeds whose best epoch predicted one class for all of validation."""
    flagged = table[(table["status"] == "ok") & table["degenerate_validation"].notna()]
    return {strategy: sorted(group["seed"]) for strategy, group in flagged.groupby("strategy", sort=False)}


def _results_table(agg: pd.DataFrame, degenerate: Mapping[str, list[int]]) -> str:
    memory_column, memory_label = _memory_metric(agg)
    header = ["Strategy", "Method", "Accuracy (mean ± std)", "Accuracy 95% CI", "Macro F1",
              "Train time", "Tokens/s", "Trainable params", "Trainable %", memory_label,
              "Adapter size (MB)", "Seeds ok"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in agg.to_dict("records"):
        accuracy = _fmt_pct(r["accuracy_mean"])
        if not pd.isna(r["accuracy_std"]):
            accuracy = f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}%"
        if seeds := degenerate.get(r["strategy"]):
            accuracy += f" ⚠ degenerate predictions (seed {', '.join(map(str, seeds))})"
        ci = (_MISSING if pd.isna(r["accuracy_mean_ci_low"])
              else f"{100 * r['accuracy_mean_ci_low']:.2f}–{100 * r['accuracy_mean_ci_high']:.2f}%")
        cells = [
            r["strategy"], r["method"], accuracy, ci, _fmt_pct(r["f1_mean"]),
            _fmt_seconds(r["train_time_s_mean"]), _fmt_count(r["tokens_per_s_mean"]),
            _fmt_count(r["trainable_params_mean"]),
            _MISSING if pd.isna(r["trainable_pct_mean"]) else f"{r['trainable_pct_mean']:.2f}%",
            _fmt_float(r[f"{memory_column}_mean"], 2), _fmt_float(r["adapter_size_mb_mean"], 2),
            f"{r['n_ok']}/{r['n_runs']}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _settings_table(runs: Sequence[RunRecord]) -> str:
    """How each strategy trained (first successful seed): what its time and memory depend on."""
    header = ["Strategy", "Precision", "Learning rate (applied)", "Reviews per step (mean)", "Token budget",
              "Recomputes activations", "Epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    shown: set[str] = set()
    for run in sorted(runs, key=lambda r: not r.ok):  # an ok run describes its strategy best
        if run.strategy in shown:
            continue
        shown.add(run.strategy)
        config, metrics = run.train.get("config") or {}, run.train.get("metrics") or {}
        lr = metrics.get("effective_learning_rate")
        per_step = metrics.get("mean_reviews_per_step")
        budget = config.get("max_tokens_per_batch")
        recompute = config.get("gradient_checkpointing")
        cells = [
            run.strategy,
            metrics.get("precision") or config.get("precision") or _MISSING,
            _MISSING if lr is None else f"{lr:.3g}",
            _MISSING if per_step is None else f"{per_step:.1f} (at most {config.get('batch_size', '?')})",
            "none" if budget is None and "max_tokens_per_batch" in config else (budget or _MISSING),
            _MISSING if recompute is None else ("yes" if recompute else "no"),
            config.get("epochs", _MISSING),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _figure_links(figures: Mapping[str, Path], report_path: Path) -> str:
    # Links relative to the report's folder keep working when results/ is moved or archived.
    base = os.path.abspath(Path(report_path).parent)
    blocks = []
    for name, path in figures.items():
        link = Path(os.path.relpath(os.path.abspath(path), base)).as_posix()
        caption = FIGURE_CAPTIONS.get(name, name)
        blocks.append(f"**{name}**: {caption}\n\n![{name}]({link})")
    return "\n\n".join(blocks) if blocks else "No figures were produced."


def _failures(runs: Sequence[RunRecord]) -> str:
    lines = [
        f"- `{run.strategy}` seed {run.seed}: **{run.status}**: {_one_line(run.reason or 'no reason recorded')}"
        for run in runs if not run.ok
    ]
    return "\n".join(lines) if lines else "None."


def _flagged(table: pd.DataFrame) -> str:
    flagged = table[(table["status"] == "ok") & table["degenerate_validation"].notna()]
    lines = [
        f"- `{row.strategy}` seed {row.seed}: {row.degenerate_validation} at its best epoch; its test accuracy "
        f"({_fmt_pct(row.accuracy)}) is what one constant answer scores, not a trained classifier's "
        "(counted in the means above, marked ⚠)"
        for row in flagged.itertuples()
    ]
    return "\n".join(lines) if lines else "None."


def _environment(runs: Sequence[RunRecord]) -> str:
    # Successful runs describe the results; fall back to all runs so there is something to show.
    chosen = [run for run in runs if run.ok] or list(runs)
    provenances = [record.get("provenance") or {} for run in chosen for record in (run.train, run.eval)]

    def field(key: str, missing: str) -> str:
        values = _distinct([p.get(key) for p in provenances])
        if not values:
            return missing
        return values[0] if len(values) == 1 else ", ".join(values) + " (differs between runs)"

    lines = [
        f"- Device: {field('device', 'unknown')} ({field('device_type', 'unknown type')})",
        f"- PyTorch: {field('torch', 'unknown')}",
        f"- CUDA: {field('cuda', 'none (no CUDA build or CPU run)')}",
        f"- Python: {field('python', 'unknown')}",
        f"- Git commit: {field('git_commit', 'unknown (not a git checkout)')}",
    ]
    # The cache folders are named by a hash of their settings; tokenization.json in each
    # says which data folder, model and max_length it holds.
    tokenized = _distinct([run.train.get("tokenized_dir") for run in chosen])
    if tokenized:
        lines.append(f"- Tokenized data: {', '.join(f'`{path}`' for path in tokenized)}")
    packages: dict[str, list[str]] = {}
    for provenance in provenances:
        for name, version in (provenance.get("packages") or {}).items():
            packages.setdefault(name, []).append(version)
    for name in sorted(packages):
        versions = _distinct(packages[name])
        suffix = " (differs between runs)" if len(versions) > 1 else ""
        lines.append(f"- {name}: {', '.join(versions)}{suffix}")
    return "\n".join(lines)


def _reference_section(reference: Mapping[str, Any] | None, table: pd.DataFrame, agg: pd.DataFrame) -> str:
    if reference is None:
        return "No reference results were given."
    results = reference.get("results")
    if not isinstance(results, Mapping):
        raise ValueError(f"reference['results'] is {results!r}; expected a mapping strategy -> "
                         "{'accuracy': float, 'train_time_s': float}")
    ours = agg.set_index("strategy")
    strategies = list(dict.fromkeys([*agg["strategy"], *results]))
    header = ["Strategy", "Reference accuracy", "Ours", "Difference (points)", "Reference time", "Our time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in strategies:
        ref = results.get(strategy) or {}
        ref_acc, ref_time = _number(ref, "accuracy"), _number(ref, "train_time_s")
        our_acc = ours["accuracy_mean"].get(strategy, math.nan)
        our_time = ours["train_time_s_mean"].get(strategy, math.nan)
        diff = _MISSING if pd.isna(ref_acc) or pd.isna(our_acc) else f"{100 * (our_acc - ref_acc):+.2f}"
        lines.append(f"| {strategy} | {_fmt_pct(ref_acc)} | {_fmt_pct(our_acc)} | {diff} | "
                     f"{_fmt_seconds(ref_time)} | {_fmt_seconds(our_time)} |")

    hardware = str(reference.get("hardware") or "unknown hardware")
    notes = [f"Reference: {reference.get('source', 'unnamed source')}, run on {hardware}."]
    recipe = reference.get("recipe")
    if recipe and recipe not in str(reference.get("source", "")):
        notes.append(f"Reference recipe: {recipe}.")
    if (published := reference.get("published_full_ft_accuracy")) is not None:
        notes.append(f"Published accuracy for full fine-tuning: {_fmt_pct(float(published))}.")
    notes.append(_caveat(table, hardware))
    return "\n".join(lines) + "\n\n" + " ".join(notes)


def _caveat(table: pd.DataFrame, hardware: str) -> str:
    ok = table[table["status"] == "ok"]
    if ok.empty:
        return "There is no successful run of ours to compare with the reference."
    smallest, test_size = _describe_test_size(ok)
    devices = _distinct(ok["device"])
    reasons = []
    if pd.isna(smallest) or smallest < REFERENCE_TEST_SIZE:
        reasons.append(f"ours used {test_size} test reviews, the reference the full "
                       f"{REFERENCE_TEST_SIZE:,}-review IMDB test set")
    # "NVIDIA GeForce RTX 3080" is the same card as the reference's "RTX 3080".
    if not devices or any(hardware.lower() not in device.lower() for device in devices):
        reasons.append(f"ours ran on {', '.join(devices) or 'an unknown device'}, the reference on {hardware}, "
                       "so training times are not comparable")
    if not reasons:
        return (f"Same test-set size ({REFERENCE_TEST_SIZE:,} reviews) and hardware as the reference, "
                "so differences mainly reflect the training recipe.")
    return f"These numbers are not directly comparable: {'; '.join(reasons)}."


def render_markdown(
    *,
    table: pd.DataFrame,
    runs: Sequence[RunRecord],
    figures: dict[str, Path],
    report_path: Path,
    reference: dict | None = None,
) -> str:
    """The Markdown report; figure links are relative to ``report_path``'s folder."""
    agg = aggregate_by_strategy(table=table)
    sections = [
        "# Fine-tuning strategies compared",
        _intro(table, agg, runs),
        "## Results",
        _results_table(agg, _degenerate_seeds(table)),
        "## Training settings",
        _settings_table(runs),
        "## Figures",
        _figure_links(figures, report_path),
        "## Skipped or failed runs",
        _failures(runs),
        "## Runs with degenerate predictions",
        _flagged(table),
        "## Hardware and software",
        _environment(runs),
        "## Comparison with the reference notebook",
        _reference_section(reference, table, agg),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(
    *,
    table: pd.DataFrame,
    runs: Sequence[RunRecord],
    figures: dict[str, Path],
    report_path: Path,
    reference: dict | None = None,
) -> Path:
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_markdown(table=table, runs=runs, figures=figures,
                                           report_path=report_path, reference=reference))
    return report_path
