"""The report's figures by name, with their captions: what the Snakefile needs to name the
report rule's outputs, kept apart from the drawing (ftcompare.report.figures), which imports
matplotlib, seaborn and pandas: planning a study of thousands of jobs should not.
"""

from __future__ import annotations

import enum

# Each (task, model) cell's figures: results/figures/ for a study of one cell, else
# results/figures/<task>/<model>/.
FIGURE_CAPTIONS: dict[str, str] = {
    "accuracy": "Test accuracy per strategy (mean over successful seeds, 95% CI; one dot per seed), "
    "grouped by method family, best first within each; the dashed line is the majority class's share, and a "
    "hatched bar a strategy that did not learn.",
    "train_time": "Wall-clock training time per strategy, grouped by method family.",
    "trainable_params": "Trainable parameters per strategy (log scale): the method's own (solid) and with the "
    "classification head it trains beside them (pale).",
    "peak_memory": "Peak memory during training, grouped by method family.",
    "pareto": "Accuracy against cost with error bars; Pareto-optimal strategies (*) and those within noise of the "
    "frontier (≈) are marked; a strategy that did not learn (×) is never on the frontier.",
    "loss_curves": "Training loss and validation accuracy per epoch, one line per seed, one row per method family.",
    "tuning": "Validation accuracy of every tuning trial against each tuned value; the chosen setting is starred.",
}
FIGURE_NAMES: tuple[str, ...] = tuple(FIGURE_CAPTIONS)


def figure_names(*, tuning: bool) -> list[str]:
    """The figures of a study: `tuning` only when it tuned."""
    return [name for name in FIGURE_NAMES if tuning or name != "tuning"]


# The figures across tasks (results/figures/), drawn from tables.across_tasks.
ACROSS_FIGURE_CAPTIONS: dict[str, str] = {
    "tasks_heatmap": "The primary metric (× 100) of each strategy on each task (mean over successful seeds), "
    "one panel per model; colour is each task's own scale (its lowest to its highest score), grey where the "
    "strategy did not learn.",
    "tasks_ranks": "Mean rank of each strategy over tasks (1 = best in a task; bars), with its rank on each task "
    "(dots), one panel per model.",
}
FIGURE_CAPTIONS.update(ACROSS_FIGURE_CAPTIONS)


# summary_across_tasks.csv, beside summary.csv where the study has several cells.
ACROSS_TABLE = "summary_across_tasks.csv"
# Where the report rule puts the study's own items in the HTML report (its tables, report.md,
# the figures across tasks) when it has several cells; one cell's stand beside its runs.
STUDY_CATEGORY = ("study", "across tasks and models")


def figure_place(path: str, cells: list[tuple[str, str]]) -> dict[str, str]:
    """A figure's place in the HTML report (`category`, `subcategory`) and its `item` label,
    which names its task and model: a cell's figures (results/figures/<task>/<model>/, or
    results/figures/ in a study of one cell) stand beside the cell's runs, the figures across
    tasks under STUDY_CATEGORY. `cells`: the study's (task, model) pairs."""
    parts = path.split("/")
    name = parts[-1].removesuffix(".png")
    if name in ACROSS_FIGURE_CAPTIONS:
        category, subcategory = STUDY_CATEGORY
        return {"category": category, "subcategory": subcategory, "item": f"figure: {name} (every task and model)"}
    task, model = (parts[-3], parts[-2]) if len(cells) > 1 else cells[0]
    return {"category": task, "subcategory": model, "item": f"figure: {name} ({task}, {model})"}


class Verdict(enum.StrEnum):
    """What a strategy's comparison with the reference (the baseline, or the best) says on one task."""

    BETTER = "better"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"
    WORSE = "worse"
    DID_NOT_LEARN = "did not learn"  # the strategy (most of its seeds) did not learn: no verdict
    NOT_COMPARED = "not compared"  # no run on a side, or the reference did not learn
    BASELINE = "baseline"  # the reference itself


# The verdicts counted across tasks, in the order tables and the report give them.
COUNTED_VERDICTS: tuple[Verdict, ...] = (
    Verdict.BETTER,
    Verdict.EQUIVALENT,
    Verdict.INCONCLUSIVE,
    Verdict.WORSE,
    Verdict.DID_NOT_LEARN,
)


ACROSS_COST_COLUMNS: tuple[str, ...] = (
    "train_time_vs_baseline",
    "trainable_params_vs_baseline",
    "peak_memory_vs_baseline",
)


# The columns of summary_across_tasks.csv whose names are fixed; each task adds its own,
# named by the task (its score) and rank_<task>, p_holm_<task>, verdict_<task>. The counts are
# COUNTED_VERDICTS' (did not learn as did_not_learn).
VERDICT_COUNT_COLUMNS: tuple[str, ...] = tuple(str(v).replace(" ", "_") for v in COUNTED_VERDICTS)


ACROSS_COLUMNS: tuple[str, ...] = (
    "model",
    "strategy",
    "method",
    "mean",
    "mean_rank",
    *VERDICT_COUNT_COLUMNS,
    *ACROSS_COST_COLUMNS,
)


# Each task's own columns: a prefix and the task's name (task names must differ from all of
# these and from ACROSS_COLUMNS: ftcompare.plan.checks).
ACROSS_TASK_PREFIXES: tuple[str, ...] = ("rank_", "p_holm_", "verdict_")
