"""The report's figures, drawn from `tables.Results` (each cell's) and
`tables.across_tasks` (the study's).

Their names and captions are ftcompare.contract.outputs': the Snakefile builds the report rule's
outputs from them without importing matplotlib, and the rule hands those paths back to
`plot_figures` and `plot_across_tasks`.
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

from ftcompare.contract import (  # noqa: E402, F401
    ACROSS_FIGURE_CAPTIONS,
    FIGURE_CAPTIONS,
    FIGURE_NAMES,
    Status,  # noqa: E402
    figure_names,
)
from ftcompare.contract import LABELS as METRIC_LABELS  # noqa: E402
from ftcompare.methods import FAMILIES  # noqa: E402
from ftcompare.plan import summary_keys, summary_score  # noqa: E402
from ftcompare.report.tables import Results, RunRecord  # noqa: E402

DPI = 150
# One colour map per method family (methods.FAMILIES order); its strategies take shades of it.
FAMILY_COLORMAPS = ("Greys", "Greens", "Blues", "Oranges", "Purples", "Reds")


def _family_rank(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def _colors(agg: pd.DataFrame) -> dict[str, Any]:
    """A colour per strategy, the same in every figure: its family's hue, a shade per
    strategy in config order, so that 15+ strategies stay apart and families read at once."""
    colors = {}
    for family, group in agg.groupby("family", sort=False):
        cmap = plt.get_cmap(FAMILY_COLORMAPS[_family_rank(family) % len(FAMILY_COLORMAPS)])
        shades = np.linspace(0.8, 0.45, len(group)) if len(group) > 1 else [0.65]
        colors.update({strategy: cmap(shade) for strategy, shade in zip(group["strategy"], shades)})
    return colors


def _family_colors(agg: pd.DataFrame) -> dict[str, Any]:
    return {
        family: plt.get_cmap(FAMILY_COLORMAPS[_family_rank(family) % len(FAMILY_COLORMAPS)])(0.65)
        for family in dict.fromkeys(agg["family"])
    }


def grouped_order(agg: pd.DataFrame, column: str, *, descending: bool) -> pd.DataFrame:
    """The rows grouped by method family (methods.FAMILIES order) and sorted by `column`
    within each family (NaN last): the order of every bar figure, top to bottom."""
    keyed = agg.assign(
        _family=agg["family"].map(_family_rank),
        _value=(-agg[column] if descending else agg[column]).fillna(np.inf),
    )
    return keyed.sort_values(["_family", "_value"], kind="stable").drop(columns=["_family", "_value"])


def _bar_positions(ordered: pd.DataFrame) -> np.ndarray:
    """y positions, top to bottom, with a gap between families."""
    positions, y, previous = [], 0.0, None
    for family in ordered["family"]:
        if previous is not None and family != previous:
            y += 0.6
        positions.append(y)
        previous = family
        y += 1.0
    return np.array(positions)


def _horizontal_axes(ordered: pd.DataFrame) -> tuple[plt.Figure, plt.Axes, np.ndarray]:
    ys = _bar_positions(ordered)
    fig, ax = plt.subplots(figsize=(8.5, max(3.0, 0.42 * (ys[-1] + 1) + 1.6)))
    ax.set_yticks(ys, ordered["strategy"])
    ax.set_ylim(ys[-1] + 0.7, -0.7)  # the first row at the top
    ax.grid(axis="x", alpha=0.3)
    return fig, ax, ys


def _family_legend(ax: plt.Axes, agg: pd.DataFrame) -> None:
    from matplotlib.patches import Patch

    colors = _family_colors(agg)
    handles = [Patch(color=colors[family], label=family) for family in sorted(colors, key=_family_rank)]
    # Below the axes, where it covers no bar.
    ax.legend(
        handles=handles,
        fontsize=8,
        loc="upper center",
        # 0.6 inch under the axes, below the x label, whatever the figure's height.
        bbox_to_anchor=(0.5, -0.6 / (ax.get_position().height * ax.figure.get_figheight())),
        ncol=min(3, len(handles)),
        title="method family",
        title_fontsize=8,
    )


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


def _label_bars(ax: plt.Axes, ys: Sequence[float], ends: Sequence[float], labels: Sequence[str]) -> None:
    for y, end, label in zip(ys, ends, labels):
        if np.isfinite(end):
            ax.annotate(label, (end, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)


def _bars_with_std(agg: pd.DataFrame, column: str, colors: dict[str, Any], fmt: str) -> tuple[plt.Figure, plt.Axes]:
    """Horizontal bars of the mean with ±1 std (std only exists with ≥ 2 seeds), largest
    first within each family."""
    ordered = grouped_order(agg, f"{column}_mean", descending=True)
    fig, ax, ys = _horizontal_axes(ordered)
    means = ordered[f"{column}_mean"].to_numpy()
    stds = ordered[f"{column}_std"].fillna(0.0).to_numpy()
    ax.barh(ys, means, xerr=stds, capsize=3, color=[colors[s] for s in ordered["strategy"]])
    ends = means + stds
    if np.isfinite(ends).any():
        ax.set_xlim(0, np.nanmax(ends) * 1.22)  # room for the value labels
    _label_bars(ax, ys, ends, [fmt.format(v) for v in means])
    _family_legend(ax, agg)
    return fig, ax


def _did_not_learn(agg: pd.DataFrame) -> np.ndarray:
    """Per row of `agg`, whether the strategy did not learn (tables: at least half its seeds)."""
    if "did_not_learn" not in agg:
        return np.zeros(len(agg), dtype=bool)
    return agg["did_not_learn"].fillna(False).astype(bool).to_numpy()


def _plot_accuracy(
    agg: pd.DataFrame, seeds: pd.DataFrame, colors: dict[str, Any], path: Path, majority: Any = None
) -> Path:
    ordered = grouped_order(agg, "accuracy_mean", descending=True)
    fig, ax, ys = _horizontal_axes(ordered)
    mean = ordered["accuracy_mean"].to_numpy() * 100
    low = ordered["accuracy_mean_ci_low"].fillna(ordered["accuracy_mean"]).to_numpy() * 100
    high = ordered["accuracy_mean_ci_high"].fillna(ordered["accuracy_mean"]).to_numpy() * 100
    points = seeds["accuracy"].to_numpy() * 100
    level = None if majority is None else 100 * majority.share
    # Differences between strategies are a few points, invisible on a 0-100 axis.
    lowest, highest = min(low.min(), np.nanmin(points)), max(high.max(), np.nanmax(points))
    if level is not None:
        lowest, highest = min(lowest, level), max(highest, level)
    span = max(highest - lowest, 1.0)
    left = max(0.0, lowest - 0.3 * span)
    not_learned = _did_not_learn(ordered)
    bars = ax.barh(
        ys,
        mean - left,
        left=left,
        xerr=[mean - low, high - mean],
        capsize=3,
        color=[colors[s] for s in ordered["strategy"]],
    )
    for bar, flat in zip(bars, not_learned):
        if flat:  # a strategy that did not learn: hatched and pale, its score no classifier's
            bar.set(hatch="xx", alpha=0.45, edgecolor="black")
    if level is not None:
        ax.axvline(level, color="crimson", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"majority class ({majority.shown}): {level:.1f}%",
            (level, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            color="crimson",
            fontsize=8,
        )
    # Each seed as a dot on its bar: two seeds 3 points apart say more than their mean.
    # seaborn's strip plot jitters them apart; native_scale keeps the bars' y positions,
    # which leave gaps between method families.
    import seaborn as sns  # a slow import: paid only by the figures that draw with it

    row = dict(zip(ordered["strategy"], ys))
    dots = pd.DataFrame({"accuracy": points, "y": [row.get(s) for s in seeds["strategy"]]}).dropna()
    if not dots.empty:
        sns.stripplot(
            data=dots, x="accuracy", y="y", orient="h", native_scale=True, jitter=0.15, color="black", size=4, ax=ax
        )
        ax.set_ylabel("")
    ax.set_xlim(left, min(100.0, highest + 0.1 * span))
    # Labels inside the bars' visible base: an error bar clipped at 100% can't run into them.
    for y, m, flat in zip(ys, mean, not_learned):
        ax.annotate(
            f"{m:.2f}%" + (" did not learn" if flat else ""),
            (left, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            color="black" if flat else "white",  # the hatched bar is pale
            fontsize=8,
            fontweight="bold",
        )
    ax.set_xlabel("Test accuracy (%)")
    ax.set_title(
        "Test accuracy (%): mean over successful seeds, one dot per seed\n"
        "error bars: 95% CI of the mean (≥2 seeds) or binomial CI (1 seed); hatched: did not learn"
    )
    _family_legend(ax, agg)
    return _save(fig, path)


def _plot_train_time(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    fig, ax = _bars_with_std(agg, "train_time_s", colors, "{:,.0f} s")
    ax.set_xlabel("Training time (s)")
    ax.set_title("Training time (s): mean ± std over successful seeds")
    return _save(fig, path)


def _plot_trainable_params(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    ordered = grouped_order(agg, "trainable_params_mean", descending=True)
    fig, ax, ys = _horizontal_axes(ordered)
    total = ordered["trainable_params_mean"].to_numpy()
    own = ordered["method_params_mean"].to_numpy()
    bar_colors = [colors[s] for s in ordered["strategy"]]
    # Adapters train 100-1000x fewer parameters than full fine-tuning: a log axis.
    ax.set_xscale("log")
    ax.barh(ys, total, color=bar_colors, alpha=0.35)  # with the head
    ax.barh(ys, np.where(np.isfinite(own), own, np.nan), color=bar_colors)  # the method's own
    labels = []
    for t, o, head, pct in zip(total, own, ordered["head_params_mean"], ordered["trainable_pct_mean"]):
        if not np.isfinite(t):
            labels.append("n/a")
        elif np.isfinite(o):
            labels.append(f"{o:,.0f} + head {head:,.0f} ({pct:.2f}%)")
        else:  # a record from before the split
            labels.append(f"{t:,.0f} ({pct:.2f}%)")
    # The counts as a column right of the axes: on a log axis, room for them inside would
    # take decades of empty scale.
    for y, label in zip(ys, labels):
        ax.annotate(label, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    finite = np.concatenate([total[np.isfinite(total) & (total > 0)], own[np.isfinite(own) & (own > 0)]])
    if finite.size:
        ax.set_xlim(finite.min() / 3, finite.max() * 3)
    ax.set_xlabel("Trainable parameters (count, log scale)")
    ax.set_title("Trainable parameters: the method's own (solid) and with the classification head (pale)")
    _family_legend(ax, agg)
    return _save(fig, path)


def _plot_peak_memory(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    column, label = memory_metric(agg)
    fig, ax = _bars_with_std(agg, column, colors, "{:.2f} GB")
    ax.set_xlabel(label)
    # Say which GPU counter: reserved (held from the card) unless only allocated was recorded.
    detail = "reserved, else allocated" if column == "peak_gpu_mem_gb" else "resident set of the process"
    ax.set_title(f"{label} during training ({detail})\nmean ± std over successful seeds")
    return _save(fig, path)


def _pareto_mask(x: np.ndarray, y: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """True where no other eligible point has lower-or-equal cost x and higher-or-equal accuracy
    y, one strictly. A point not `eligible` (a strategy that did not learn) is never on the
    frontier and dominates nothing."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    eligible = np.ones(len(x), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    dominated = [bool(np.any(eligible & (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i])))) for i in range(len(x))]
    return eligible & ~np.array(dominated, dtype=bool)


def within_noise_of_frontier(x: np.ndarray, y: np.ndarray, y_high: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Off the frontier, yet the upper end of the accuracy interval reaches the best
    accuracy the frontier offers at no greater cost: not shown to be worse."""
    reach = np.array([y[front & (x <= xi)].max() if (front & (x <= xi)).any() else -np.inf for xi in x])
    return ~front & (y_high >= reach)


def _pareto_panel(ax: plt.Axes, agg: pd.DataFrame, column: str, xlabel: str, colors: dict[str, Any]) -> None:
    data = (
        agg[
            [
                "strategy",
                f"{column}_mean",
                f"{column}_std",
                "accuracy_mean",
                "accuracy_mean_ci_low",
                "accuracy_mean_ci_high",
            ]
        ]
        .assign(did_not_learn=_did_not_learn(agg))
        .dropna(subset=[f"{column}_mean", "accuracy_mean"])
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test accuracy (%)")
    if data.empty:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    x, y = data[f"{column}_mean"].to_numpy(), data["accuracy_mean"].to_numpy() * 100
    y_low = data["accuracy_mean_ci_low"].fillna(data["accuracy_mean"]).to_numpy() * 100
    y_high = data["accuracy_mean_ci_high"].fillna(data["accuracy_mean"]).to_numpy() * 100
    x_err = data[f"{column}_std"].fillna(0.0).to_numpy()
    learned = ~data["did_not_learn"].to_numpy(dtype=bool)
    front = _pareto_mask(x, y, learned)
    near = within_noise_of_frontier(x, y, y_high, front) & learned
    order = np.argsort(x[front])
    # Step line: the best accuracy reachable for any budget up to the next frontier point.
    if front.any():
        ax.step(x[front][order], y[front][order], where="post", color="black", alpha=0.6, label="Pareto frontier")
    else:
        ax.text(0.5, 0.95, "no frontier: no strategy learned", ha="center", va="top", transform=ax.transAxes)
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
        if not learned[i]:  # no classifier: a grey cross, never on the frontier
            ax.scatter(xi, yi, s=60, marker="x", color="grey", linewidths=1.5, zorder=3)
        else:
            ax.scatter(
                xi,
                yi,
                s=120 if front[i] else 50,
                color=colors[strategy] if not near[i] else "white",
                edgecolors="black" if front[i] else colors[strategy],
                linewidths=1.5,
                zorder=3,
            )
        mark = " *" if front[i] else (" ≈" if near[i] else (" (did not learn)" if not learned[i] else ""))
        # Smaller labels with many strategies, so that neighbours overlap less.
        ax.annotate(
            strategy + mark, (xi, yi), xytext=(6, 4), textcoords="offset points", fontsize=9 if len(x) <= 8 else 7
        )
    ax.margins(x=0.2, y=0.2)
    ax.grid(alpha=0.3)
    if front.any():
        ax.legend(loc="lower right", fontsize=8)


def _plot_pareto(agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    column, label = memory_metric(agg)
    size = (12, 4.8) if len(agg) <= 8 else (16, 7.0)
    fig, (left, right) = plt.subplots(1, 2, figsize=size)
    _pareto_panel(left, agg, column, label, colors)
    left.set_title("Accuracy vs peak memory (GB)")
    _pareto_panel(right, agg, "train_time_s", "Training time (s)", colors)
    right.set_title("Accuracy vs training time (s)")
    fig.suptitle(
        "Accuracy/cost trade-off (mean over successful seeds, 95% interval; * = Pareto-optimal, "
        "≈ = within noise of the frontier, × = did not learn, never on the frontier)"
    )
    return _save(fig, path)


def _plot_curves(runs: Sequence[RunRecord], agg: pd.DataFrame, colors: dict[str, Any], path: Path) -> Path:
    """Loss and validation accuracy against epochs: a row of two panels per method family,
    so that each legend holds a few strategies, not all of them."""
    family = dict(zip(agg["strategy"], agg["family"]))
    families = sorted(dict.fromkeys(family[run.strategy] for run in runs), key=_family_rank)
    fig, axes = plt.subplots(len(families), 2, figsize=(12, 3.6 * len(families)), squeeze=False)
    seed_styles = ("-", "--", ":", "-.")
    seen: dict[str, int] = {}
    for run in runs:
        loss_ax, val_ax = axes[families.index(family[run.strategy])]
        style = seed_styles[seen.get(run.strategy, 0) % len(seed_styles)]
        seen[run.strategy] = seen.get(run.strategy, 0) + 1
        label = f"{run.strategy} seed {run.seed}"
        loss = run.train.get("loss_curve") or []
        val = run.train.get("val_curve") or []
        loss_ax.plot(
            [p["epoch"] for p in loss],
            [p["loss"] for p in loss],
            style,
            # A line needs two points: a run that logged one is drawn as a marker.
            marker="o" if len(loss) == 1 else None,
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
    for name, (loss_ax, val_ax) in zip(families, axes):
        loss_ax.set(xlabel="Epoch", ylabel="Training loss", title=f"Training loss vs epoch: {name}")
        val_ax.set(xlabel="Epoch", ylabel="Validation accuracy (%)", title=f"Validation accuracy (%): {name}")
        for ax in (loss_ax, val_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
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
    colors = _colors(results.agg)
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
        _plot_accuracy(agg, seeds, colors, by_name["accuracy"], results.majority)
        _plot_train_time(agg, colors, by_name["train_time"])
        _plot_trainable_params(agg, colors, by_name["trainable_params"])
        _plot_peak_memory(agg, colors, by_name["peak_memory"])
        _plot_pareto(agg, colors, by_name["pareto"])
        _plot_curves(ok_runs, agg, colors, by_name["loss_curves"])
    return by_name


def _plot_tuning(trials: pd.DataFrame, selected: dict[str, Any], colors: dict[str, Any], path: Path) -> Path:
    """Validation accuracy (mean over trial seeds) against each tuned key's value, one
    line per strategy; where a strategy tunes several keys, each value shows its best trial."""
    keys = summary_keys(trials)
    score, metric = summary_score(trials)
    ok = trials[trials["status"] == Status.OK]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(6.0 * max(1, len(keys)), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for strategy, group in ok.groupby("strategy", sort=False):
            group = group.dropna(subset=[key])
            if group.empty:
                continue
            per_trial = group.groupby("trial", sort=False).agg(value=(key, "first"), accuracy=(score, "mean"))
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
        label = f"Validation {METRIC_LABELS.get(metric, metric)}"
        ax.set(xlabel=key, ylabel=f"{label} (%)", title=f"{label} vs {key} (★ chosen)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def heatmap_data(across: pd.DataFrame, tasks: Sequence[str], model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One model's panel of the across-task heatmap: the scores (primary metric × 100, what the
    cells say) and the colours, each task on its own scale (0 its lowest score among the
    strategies that learned there, 1 its highest; 0.5 where they are all alike). A strategy
    that did not learn on a task has no colour there (NaN): it is drawn apart, not ranked by hue."""
    rows = across[across["model"] == model].set_index("strategy")
    values = rows[list(tasks)].astype(float) * 100
    learned = pd.DataFrame(
        {
            task: rows.get(f"verdict_{task}", pd.Series(index=rows.index, dtype=object)) != "did not learn"
            for task in tasks
        }
    )
    kept = values.where(learned.to_numpy())
    low, high = kept.min(), kept.max()
    shades = kept.copy()
    for task in kept.columns:
        spread = high[task] - low[task]
        shades[task] = (kept[task] - low[task]) / spread if spread > 0 else kept[task] * 0 + 0.5
    return values, shades


def plot_across_tasks(
    *, across: pd.DataFrame, tasks: Sequence[str], metrics: dict[str, str], paths: Sequence[str | Path]
) -> dict[str, Path]:
    """tasks_heatmap.png and tasks_ranks.png at the paths named so (`metrics`: task -> its
    primary metric's name, for the labels)."""
    import seaborn as sns  # a slow import: paid only by the figures that draw with it

    by_name = {Path(path).stem: Path(path) for path in paths}
    if sorted(by_name) != sorted(ACROSS_FIGURE_CAPTIONS):
        raise ValueError(f"figure paths {sorted(by_name)} must be one per name {sorted(ACROSS_FIGURE_CAPTIONS)}")
    for path in by_name.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(across["model"]))
    if not models or across[list(tasks)].isna().all().all():
        for name, path in by_name.items():
            _placeholder(path, ACROSS_FIGURE_CAPTIONS[name])
        return by_name
    labels = [f"{task}\n({metrics.get(task, '?')})" for task in tasks]
    n_strategies = across.groupby("model").size().max()

    with plt.rc_context({"font.size": 10, "axes.titlesize": 11}):
        fig, axes = plt.subplots(
            1, len(models), figsize=(1.3 * len(tasks) * len(models) + 3, 0.45 * n_strategies + 2), squeeze=False
        )
        for ax, model in zip(axes[0], models):
            values, shades = heatmap_data(across, tasks, model)
            text = values.map(lambda v: "—" if pd.isna(v) else f"{v:.1f}")
            text = text.where(shades.notna() | values.isna(), text + "\n✗ did not learn")
            values.columns = shades.columns = text.columns = labels
            ax.set_facecolor("#d9d9d9")  # did not learn: grey, outside the colour scale
            sns.heatmap(shades, annot=text, fmt="", cmap="viridis", vmin=0, vmax=1, cbar=False, ax=ax, linewidths=0.5)
            for (i, j), flat in np.ndenumerate(shades.isna().to_numpy() & values.notna().to_numpy()):
                if flat:
                    ax.text(j + 0.5, i + 0.5, text.iat[i, j], ha="center", va="center", fontsize=8, color="black")
            ax.set(title=model, xlabel="", ylabel="strategy")
        fig.suptitle(
            "Primary metric × 100 per strategy and task (mean over successful seeds)\n"
            "colour: each task on its own scale, its lowest to its highest score; grey ✗: did not learn"
        )
        fig.tight_layout()
        _save(fig, by_name["tasks_heatmap"])

        fig, axes = plt.subplots(1, len(models), figsize=(6.0 * len(models), 0.45 * n_strategies + 2.5), squeeze=False)
        markers = ("o", "s", "^", "D", "v", "P", "X", "*")
        for ax, model in zip(axes[0], models):
            rows = across[across["model"] == model].sort_values("mean_rank", na_position="last", kind="stable")
            ys = np.arange(len(rows))
            ax.barh(ys, rows["mean_rank"].fillna(0), color="lightsteelblue", label="mean rank")
            for i, task in enumerate(tasks):
                ax.scatter(
                    rows[f"rank_{task}"], ys, marker=markers[i % len(markers)], color="black", zorder=3, label=task
                )
            ax.set_yticks(ys, rows["strategy"])
            ax.set_ylim(len(rows) - 0.5, -0.5)  # best first, at the top
            ax.set(title=model, xlabel="rank (1 = best)", xlim=(0, len(rows) + 0.5))
            ax.grid(axis="x", alpha=0.3)
            # Below the axes, where it covers no marker.
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(4, len(tasks) + 1))
        fig.suptitle("Mean rank over tasks (bars) and the rank on each task (markers)")
        fig.tight_layout()
        _save(fig, by_name["tasks_ranks"])
    return by_name
