"""The report's figures, drawn from `tables.Results`.

Their names are declared here once, in `FIGURE_CAPTIONS`: the Snakefile builds the
report rule's outputs from them, and the rule hands those paths back to `plot_figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are written from batch jobs without a display

import matplotlib.pyplot as plt  # noqa: E402  (must follow matplotlib.use)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ftcompare.records import Status  # noqa: E402
from ftcompare.tables import Results, RunRecord  # noqa: E402

FIGURE_CAPTIONS: dict[str, str] = {
    "accuracy": "Test accuracy per strategy (mean over successful seeds, 95% CI; one dot per seed).",
    "train_time": "Wall-clock training time per strategy.",
    "trainable_params": "Trainable parameters per strategy (log scale).",
    "peak_memory": "Peak memory during training.",
    "pareto": "Accuracy against cost with error bars; Pareto-optimal strategies (*) and those within noise of the "
    "frontier (≈) are marked.",
    "loss_curves": "Training loss and validation accuracy per epoch, one line per seed.",
    "tuning": "Validation accuracy of every tuning trial against each tuned value; the chosen setting is starred.",
}
FIGURE_NAMES: tuple[str, ...] = tuple(FIGURE_CAPTIONS)


def figure_names(*, tuning: bool) -> list[str]:
    """The figures of a study: `tuning` only when it tuned."""
    return [name for name in FIGURE_NAMES if tuning or name != "tuning"]


DPI = 150


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


def memory_metric(agg: pd.DataFrame) -> tuple[str, str]:
    """GPU memory when any run measured it (CPU runs leave it NaN), else host RSS."""
    if agg["peak_gpu_mem_gb_mean"].notna().any():
        return "peak_gpu_mem_gb", "Peak GPU memory (GB)"
    return "peak_rss_gb", "Peak host RSS (GB, no GPU measurements)"


def _annotate_bars(
    ax: plt.Axes, xs: Sequence[float], tops: Sequence[float], labels: Sequence[str], *, log: bool = False
) -> None:
    for x, top, label in zip(xs, tops, labels):
        # On a log axis a multiplicative offset reads as the same gap at every height.
        ax.annotate(
            label,
            (x, top * 1.15 if log else top),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )


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


def _plot_accuracy(agg: pd.DataFrame, seeds: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    import seaborn as sns  # here, not at the top: the Snakefile imports this module for the names

    mean = agg["accuracy_mean"].to_numpy() * 100
    low = agg["accuracy_mean_ci_low"].fillna(agg["accuracy_mean"]).to_numpy() * 100
    high = agg["accuracy_mean_ci_high"].fillna(agg["accuracy_mean"]).to_numpy() * 100
    points = seeds.assign(accuracy_pct=seeds["accuracy"] * 100)
    xs = np.arange(len(agg))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(agg) + 2), 4.5))
    ax.bar(xs, mean, yerr=[mean - low, high - mean], capsize=5, color=[colors[s] for s in agg["strategy"]], alpha=0.75)
    # Each seed as a point over its bar: two seeds 3 points apart say more than their mean.
    sns.stripplot(
        data=points,
        x="strategy",
        y="accuracy_pct",
        order=list(agg["strategy"]),
        ax=ax,
        color="black",
        size=5,
        jitter=0.15,
    )
    ax.set_xticks(xs, agg["strategy"])
    ax.set_xlabel("")
    # Differences between strategies are a few points, invisible on a 0-100 axis.
    lowest = min(low.min(), points["accuracy_pct"].min())
    highest = max(high.max(), points["accuracy_pct"].max())
    span = max(highest - lowest, 1.0)
    bottom = max(0.0, lowest - 0.3 * span)
    ax.set_ylim(bottom, min(100.0, highest + 0.1 * span))
    # Labels sit inside the bars' visible base: an error bar clipped at 100% can't run into them.
    for x, m in zip(xs, mean):
        ax.annotate(
            f"{m:.2f}%",
            (x, bottom),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            va="bottom",
            color="white",
            fontweight="bold",
        )
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title(
        "Test accuracy (%): mean over successful seeds, one dot per seed\n"
        "error bars: 95% CI of the mean (≥2 seeds) or binomial CI (1 seed)"
    )
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
    labels = [f"{v:,.0f}\n({p:.2f}%)" if np.isfinite(v) else "n/a" for v, p in zip(values, agg["trainable_pct_mean"])]
    _annotate_bars(ax, xs, values, labels, log=True)
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size:
        ax.set_ylim(finite.min() / 3, finite.max() * 20)
    ax.set_ylabel("Trainable parameters (count, log scale)")
    ax.set_title("Trainable parameters (count, log scale; % of total in brackets)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _plot_peak_memory(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    column, label = memory_metric(agg)
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
    dominated = [bool(np.any((x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i])))) for i in range(len(x))]
    return ~np.array(dominated, dtype=bool)


def within_noise_of_frontier(x: np.ndarray, y: np.ndarray, y_high: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Off the frontier, yet the upper end of the accuracy interval reaches the best
    accuracy the frontier offers at no greater cost: not shown to be worse."""
    reach = np.array([y[front & (x <= xi)].max() if (front & (x <= xi)).any() else -np.inf for xi in x])
    return ~front & (y_high >= reach)


def _pareto_panel(ax: plt.Axes, agg: pd.DataFrame, column: str, xlabel: str, colors: dict[str, Any]) -> None:
    data = agg[
        [
            "strategy",
            f"{column}_mean",
            f"{column}_std",
            "accuracy_mean",
            "accuracy_mean_ci_low",
            "accuracy_mean_ci_high",
        ]
    ].dropna(subset=[f"{column}_mean", "accuracy_mean"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test accuracy (%)")
    if data.empty:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    x, y = data[f"{column}_mean"].to_numpy(), data["accuracy_mean"].to_numpy() * 100
    y_low = data["accuracy_mean_ci_low"].fillna(data["accuracy_mean"]).to_numpy() * 100
    y_high = data["accuracy_mean_ci_high"].fillna(data["accuracy_mean"]).to_numpy() * 100
    x_err = data[f"{column}_std"].fillna(0.0).to_numpy()
    front = _pareto_mask(x, y)
    near = within_noise_of_frontier(x, y, y_high, front)
    order = np.argsort(x[front])
    # Step line: the best accuracy reachable for any budget up to the next frontier point.
    ax.step(x[front][order], y[front][order], where="post", color="black", alpha=0.6, label="Pareto frontier")
    for i, (xi, yi, strategy) in enumerate(zip(x, y, data["strategy"])):
        # Error bars: the accuracy's 95% interval; the cost's standard deviation over seeds.
        ax.errorbar(
            xi,
            yi,
            yerr=[[yi - y_low[i]], [y_high[i] - yi]],
            xerr=x_err[i],
            fmt="none",
            ecolor=colors[strategy],
            alpha=0.6,
            capsize=3,
            zorder=2,
        )
        ax.scatter(
            xi,
            yi,
            s=120 if front[i] else 50,
            color=colors[strategy] if not near[i] else "white",
            edgecolors="black" if front[i] else colors[strategy],
            linewidths=1.5,
            zorder=3,
        )
        mark = " *" if front[i] else (" ≈" if near[i] else "")
        ax.annotate(strategy + mark, (xi, yi), xytext=(6, 4), textcoords="offset points", fontsize=9)
    ax.margins(x=0.2, y=0.2)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _plot_pareto(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    column, label = memory_metric(agg)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    _pareto_panel(left, agg, column, label, colors)
    left.set_title("Accuracy vs peak memory (GB)")
    _pareto_panel(right, agg, "train_time_s", "Training time (s)", colors)
    right.set_title("Accuracy vs training time (s)")
    fig.suptitle(
        "Accuracy/cost trade-off (mean over successful seeds, 95% interval; * = Pareto-optimal, "
        "≈ = within noise of the frontier)"
    )
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
        loss_ax.plot(
            [p["epoch"] for p in loss],
            [p["loss"] for p in loss],
            style,
            color=colors[run.strategy],
            label=label,
            alpha=0.85,
        )
        val_ax.plot(
            [p["epoch"] for p in val],
            [100 * p["accuracy"] for p in val],
            style,
            marker="o",
            color=colors[run.strategy],
            label=label,
        )
    loss_ax.set(xlabel="Epoch", ylabel="Training loss (cross-entropy)", title="Training loss vs epoch")
    val_ax.set(xlabel="Epoch", ylabel="Validation accuracy (%)", title="Validation accuracy (%) vs epoch")
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_figures(*, results: Results, paths: Sequence[str | Path]) -> dict[str, Path]:
    """Draw every figure of `figure_names` to the path whose file name is ``<name>.png``
    (the report rule's declared outputs); only ok runs are plotted. Every file is
    written, with a "no successful runs" placeholder if need be."""
    by_name = {Path(path).stem: Path(path) for path in paths}
    expected = figure_names(tuning=results.tuning is not None)
    if sorted(by_name) != sorted(expected):
        raise ValueError(f"figure paths {sorted(by_name)} must be one per figure name {sorted(expected)}")
    for path in by_name.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    colors = _colors(list(results.agg["strategy"]))
    agg = results.agg[results.agg["n_ok"] > 0].reset_index(drop=True)
    ok_runs = [run for run in results.runs if run.ok]
    seeds = results.table[results.table["status"] == Status.OK]

    with plt.rc_context({"font.size": 11, "axes.titlesize": 11}):
        if results.tuning is not None:  # trials are there even when every final run failed
            _plot_tuning(results.tuning, results.selected or {}, colors, by_name["tuning"])
        if agg.empty or not ok_runs:
            for name, path in by_name.items():
                if name != "tuning":
                    _placeholder(path, FIGURE_CAPTIONS[name])
            return by_name
        _plot_accuracy(agg, seeds, colors, by_name["accuracy"])
        _plot_train_time(agg, colors, by_name["train_time"])
        _plot_trainable_params(agg, colors, by_name["trainable_params"])
        _plot_peak_memory(agg, colors, by_name["peak_memory"])
        _plot_pareto(agg, colors, by_name["pareto"])
        _plot_curves(ok_runs, colors, by_name["loss_curves"])
    return by_name


def _plot_tuning(trials: pd.DataFrame, selected: dict[str, Any], colors: dict[str, Any], path: Path) -> Path:
    """Validation accuracy (mean over trial seeds) against each tuned key's value, one
    line per strategy; where a strategy tunes several keys, each value shows its best trial."""
    keys = [
        c
        for c in trials.columns
        if c not in ("strategy", "trial", "seed", "status", "val_accuracy", "val_loss", "train_time_s")
    ]
    ok = trials[trials["status"] == Status.OK]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(6.0 * max(1, len(keys)), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for strategy, group in ok.groupby("strategy", sort=False):
            group = group.dropna(subset=[key])
            if group.empty:
                continue
            per_trial = group.groupby("trial", sort=False).agg(value=(key, "first"), accuracy=("val_accuracy", "mean"))
            best = per_trial.groupby("value")["accuracy"].max().sort_index()
            ax.plot(best.index, best.to_numpy() * 100, marker="o", color=colors.get(strategy), label=strategy)
            choice = (selected.get(strategy) or {}).get("values") or {}
            if key in choice and choice[key] in best.index:
                ax.scatter(
                    [choice[key]],
                    [best[choice[key]] * 100],
                    marker="*",
                    s=250,
                    color=colors.get(strategy),
                    edgecolors="black",
                    zorder=3,
                )
        values = pd.to_numeric(ok[key], errors="coerce").dropna()
        # Rates span orders of magnitude: a log axis spaces a factor-2 grid evenly.
        if len(values) and (values > 0).all() and values.max() / values.min() >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel="Validation accuracy (%)", title=f"Validation accuracy vs {key} (★ chosen)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
