"""The Markdown report, drawn from `tables.Results` and the figures' paths."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ftcompare.contract import FIGURE_CAPTIONS, Status, Verdict
from ftcompare.contract import LABELS as METRIC_LABELS
from ftcompare.plan import load_yaml, summary_keys, summary_score
from ftcompare.report.figures import memory_metric
from ftcompare.report.published import PUBLISHED_DIR, load_papers, published_section
from ftcompare.report.stats import ALPHA, NEARLY_ONE_CLASS, POWER
from ftcompare.report.tables import RANK_DECIMALS, Results, RunRecord, number

# The full IMDB test split; the reference notebook evaluated on all of it.
REFERENCE_TEST_SIZE = 25_000


def reference_recipe(path: Path) -> str:
    """The reference notebook's recipe in words, read from its overlay (config/reference-recipe.yaml)."""
    overlay = load_yaml(path)
    training, strategies = overlay["training"], overlay.get("strategies") or {}
    rates = sorted({float(entry["learning_rate"]) for entry in strategies.values() if "learning_rate" in entry})
    return (
        f"learning rate {' / '.join(f'{r:g}' for r in rates)} for every strategy, batch {training['batch_size']}, "
        f"every review padded to {training['pad_to_multiple_of']} tokens, {training['precision']}"
    )


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


def _intro(table: pd.DataFrame, agg: pd.DataFrame, runs: Sequence[RunRecord], unit: str) -> str:
    ok = table[table["status"] == Status.OK]
    strategies = ", ".join(f"`{s}`" if s == m else f"`{s}` ({m})" for s, m in zip(agg["strategy"], agg["method"]))
    seeds = ", ".join(str(s) for s in sorted(set(table["seed"])))
    _, test_size = _describe_test_size(ok)
    devices = ", ".join(_distinct(ok["device"])) or "no device (no successful run)"
    return (
        f"This report compares {len(agg)} fine-tuning strategies of {_model_name(runs)} for text "
        f"classification: {strategies}, with seeds {seeds}; "
        f"{len(ok)} of {len(table)} runs succeeded. Test metrics come from {test_size} held-out test "
        f"{unit}, and runs executed on {devices}. Accuracy is the mean ± standard deviation over "
        f"successful seeds; its 95% CI is that of the mean over seeds (Student t) when there are at "
        f"least two seeds, otherwise the single run's binomial interval."
    )


def _degenerate_seeds(table: pd.DataFrame) -> dict[str, list[int]]:
    """Per strategy, the ok seeds whose best epoch predicted one class for all of validation."""
    flagged = table[(table["status"] == Status.OK) & table["degenerate_validation"].notna()]
    return {strategy: sorted(group["seed"]) for strategy, group in flagged.groupby("strategy", sort=False)}


def sorted_rows(frame: pd.DataFrame, sort_by: str, accuracy: str) -> pd.DataFrame:
    """The rows in config order, or (`sort_by: accuracy`) best mean accuracy first, strategies
    without one last."""
    if sort_by == "config":
        return frame
    if sort_by != "accuracy":
        raise ValueError(f"report.sort_by = {sort_by!r}; allowed: config, accuracy")
    return frame.sort_values(accuracy, ascending=False, na_position="last", kind="stable")


def _results_table(
    agg: pd.DataFrame, degenerate: Mapping[str, list[int]], sort_by: str, unit: str, majority: Any = None
) -> str:
    agg = sorted_rows(agg, sort_by, "accuracy_mean")
    memory_column, memory_label = memory_metric(agg)
    header = [
        "Strategy",
        "Method",
        "Accuracy (mean ± std)",
        "Accuracy 95% CI",
        "Macro F1",
        "Train time",
        "Tokens/s",
        f"Test {unit}/s",
        "Trainable params",
        "Method / head params",
        "Trainable %",
        memory_label,
        "Adapter size (MB)",
        "Seeds ok",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in agg.to_dict("records"):
        accuracy = _fmt_pct(r["accuracy_mean"])
        if not pd.isna(r["accuracy_std"]):
            accuracy = f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}%"
        if seeds := degenerate.get(r["strategy"]):
            accuracy += f" ⚠ degenerate predictions (seed {', '.join(map(str, seeds))})"
        if r.get("did_not_learn"):
            accuracy += f" ✗ did not learn (seed {r['did_not_learn_seeds']})"
        elif isinstance(r.get("did_not_learn_seeds"), str):
            accuracy += f" ⚠ seed {r['did_not_learn_seeds']} did not learn"
        ci = (
            _MISSING
            if pd.isna(r["accuracy_mean_ci_low"])
            else f"{100 * r['accuracy_mean_ci_low']:.2f}–{100 * r['accuracy_mean_ci_high']:.2f}%"
        )
        cells = [
            r["strategy"],
            r["method"],
            accuracy,
            ci,
            _fmt_pct(r["macro_f1_mean"]),
            _fmt_seconds(r["train_time_s_mean"]),
            _fmt_count(r["tokens_per_s_mean"]),
            _fmt_count(r["eval_reviews_per_s_mean"]),
            _fmt_count(r["trainable_params_mean"]),
            f"{_fmt_count(r['method_params_mean'])} / {_fmt_count(r['head_params_mean'])}",
            _MISSING if pd.isna(r["trainable_pct_mean"]) else f"{r['trainable_pct_mean']:.2f}%",
            _fmt_float(r[f"{memory_column}_mean"], 2),
            _fmt_float(r["adapter_size_mb_mean"], 2),
            f"{r['n_ok']}/{r['n_runs']}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if majority is not None:
        # The level every run must beat: labelling every test row with the most common class.
        cells = [
            f"majority class (`{majority.shown}`)",
            "constant",
            _fmt_pct(majority.scores["accuracy"]),
            _MISSING,
            _fmt_pct(majority.scores["macro_f1"]),
            *[_MISSING] * (len(header) - 5),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _latency(p50: float, p95: float) -> str:
    return _MISSING if pd.isna(p50) else f"{p50:,.1f} / {p95:,.1f} ms"


def _inference_section(results: Results) -> str:
    """What each strategy costs to apply: test throughput and single-row latency, as
    trained and with the adapter merged into its base (means over ok seeds)."""
    agg, runs, unit = results.agg, results.runs, results.unit
    one = _singular(unit)
    header = [
        "Strategy",
        "Method",
        f"Test {unit}/s",
        f"One {one} p50 / p95",
        f"Merged: test {unit}/s",
        f"Merged: one {one} p50 / p95",
        "Merged labels as trained",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in agg.to_dict("records"):
        cells = [
            r["strategy"],
            r["method"],
            _fmt_count(r["eval_reviews_per_s_mean"]),
            _latency(r["latency_p50_ms_mean"], r["latency_p95_ms_mean"]),
            _fmt_count(r["merged_eval_reviews_per_s_mean"]),
            _latency(r["merged_latency_p50_ms_mean"], r["merged_latency_p95_ms_mean"]),
            _fmt_pct(r["merged_agreement_mean"]),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    configs = [run.train.get("config") or {} for run in runs if run.ok]
    batch = configs[0].get("eval_batch_size", "?") if configs else "?"
    budget = configs[0].get("eval_max_tokens_per_batch") if configs else None
    sample = results.table["latency_p50_ms"].notna()
    devices = ", ".join(_distinct(results.table.loc[sample, "device"])) or "no device (nothing measured)"
    notes = [
        f"Test {unit}/s: the whole test split in length-sorted batches of at most {batch} {unit}"
        + (f" and {budget:,} padded tokens" if budget else "")
        + f". One {one}: the time to label a single {one} (a batch of one, from its token ids on the host to "
        f"its probabilities there), median and 95th percentile over the same fixed sample of test {unit} for "
        f"every run, after 10 untimed; on {devices}. Merged: the adapter merged into its base weights, as "
        "`ftcompare export --merged` writes it (QLoRA's 4-bit base dequantised first); full fine-tuning has "
        f"nothing to merge. The last column is the share of test {unit} the merged model labels as the "
        "adapter does."
    ]
    if comparison := _qlora_against_lora(agg, unit):
        notes.append(comparison)
    errors = [
        f"- `{row.strategy}` seed {row.seed}: merging failed: {_one_line(row.merged_error)}"
        for row in results.table.itertuples()
        if isinstance(row.merged_error, str)
    ]
    return "\n".join(lines) + "\n\n" + " ".join(notes) + ("\n\n" + "\n".join(errors) if errors else "")


def _qlora_against_lora(agg: pd.DataFrame, unit: str) -> str | None:
    """QLoRA's inference cost against LoRA's (the first strategy of each method with an ok run)."""
    measured = agg[agg["n_ok"] > 0].drop_duplicates("method").set_index("method")
    if not {"lora", "qlora"} <= set(measured.index):
        return None
    lora, qlora = measured.loc["lora"], measured.loc["qlora"]
    if pd.isna(lora["eval_reviews_per_s_mean"]) or pd.isna(qlora["eval_reviews_per_s_mean"]):
        return None
    text = (
        f"`{qlora['strategy']}` (4-bit base) labels {_fmt_count(qlora['eval_reviews_per_s_mean'])} test {unit}/s "
        f"against `{lora['strategy']}`'s {_fmt_count(lora['eval_reviews_per_s_mean'])} "
        f"({qlora['eval_reviews_per_s_mean'] / lora['eval_reviews_per_s_mean']:.2f}x), and one {_singular(unit)} in "
        f"{qlora['latency_p50_ms_mean']:,.1f} ms against {lora['latency_p50_ms_mean']:,.1f} ms (median)"
    )
    merged_qlora, merged_lora = qlora["merged_eval_reviews_per_s_mean"], lora["merged_eval_reviews_per_s_mean"]
    if not pd.isna(merged_qlora) and not pd.isna(merged_lora):
        text += (
            f"; merged, both are a plain model of the base's size: {_fmt_count(merged_qlora)} "
            f"against {_fmt_count(merged_lora)} {unit}/s"
        )
    return text + "."


def _settings_table(runs: Sequence[RunRecord]) -> str:
    """How each strategy trained (first successful seed): what its time and memory depend on."""
    header = [
        "Strategy",
        "Precision",
        "Learning rate (applied)",
        "Rows per step (mean)",
        "Token budget",
        "Recomputes activations",
        "Epochs",
        "Text tokens",
    ]
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
            # Fewer than max_length where a method's virtual tokens take positions.
            metrics.get("text_max_length") or config.get("max_length", _MISSING),
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
        for run in runs
        if not run.ok
    ]
    return "\n".join(lines) if lines else "None."


def _flagged(table: pd.DataFrame) -> str:
    """Every ok run that did not learn (stats.learned), and every one whose best epoch labelled
    all of validation with one class."""
    ok = table[table["status"] == Status.OK]
    lines = [
        f"- `{row.strategy}` seed {row.seed}: did not learn: {row.did_not_learn} (marked ✗ or ⚠ above; "
        "a strategy most of whose seeds did not learn takes no verdict and no rank on this task)"
        for row in ok[ok["did_not_learn"].notna()].itertuples()
    ]
    lines += [
        f"- `{row.strategy}` seed {row.seed}: {row.degenerate_validation} at its best epoch; its test accuracy "
        f"({_fmt_pct(row.accuracy)}) is what one constant answer scores, not a trained classifier's (marked ⚠)"
        for row in ok[ok["degenerate_validation"].notna()].itertuples()
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


def _reference_section(
    reference: Mapping[str, Any] | None, recipe: Path | None, table: pd.DataFrame, agg: pd.DataFrame
) -> str:
    if reference is None:
        return "No reference results were given."
    if recipe is None:
        raise ValueError("reference results need the reference's recipe (config/reference-recipe.yaml)")
    results = reference.get("results")
    if not isinstance(results, Mapping):
        raise ValueError(
            f"reference['results'] is {results!r}; expected a mapping strategy -> "
            "{'accuracy': float, 'train_time_s': float}"
        )
    ours = agg.set_index("strategy")
    strategies = list(dict.fromkeys([*agg["strategy"], *results]))
    header = ["Strategy", "Reference accuracy", "Ours", "Difference (points)", "Reference time", "Our time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in strategies:
        ref = results.get(strategy) or {}
        ref_acc, ref_time = number(ref, "accuracy"), number(ref, "train_time_s")
        our_acc = ours["accuracy_mean"].get(strategy, math.nan)
        our_time = ours["train_time_s_mean"].get(strategy, math.nan)
        diff = _MISSING if pd.isna(ref_acc) or pd.isna(our_acc) else f"{100 * (our_acc - ref_acc):+.2f}"
        lines.append(
            f"| {strategy} | {_fmt_pct(ref_acc)} | {_fmt_pct(our_acc)} | {diff} | "
            f"{_fmt_seconds(ref_time)} | {_fmt_seconds(our_time)} |"
        )

    hardware = str(reference.get("hardware") or "unknown hardware")
    seeds = reference.get("seeds")
    runs = "" if seeds is None else f", {seeds} seed{'s' if seeds != 1 else ''}"
    notes = [f"Reference: the reference notebook ({reference_recipe(recipe)}{runs}), run on {hardware}."]
    if (published := reference.get("published_full_ft_accuracy")) is not None:
        notes.append(f"Published accuracy for full fine-tuning: {_fmt_pct(float(published))}.")
    notes.append(_caveat(table, hardware))
    return "\n".join(lines) + "\n\n" + " ".join(notes)


def _caveat(table: pd.DataFrame, hardware: str) -> str:
    """The reference's setting matches (see _matches_reference); its hardware may not."""
    devices = _distinct(table[table["status"] == Status.OK]["device"])
    # "NVIDIA GeForce RTX 3080" is the same card as the reference's "RTX 3080".
    if devices and all(hardware.lower() in device.lower() for device in devices):
        return "Same model, test set and hardware as the reference, so differences reflect the training recipe."
    return (
        f"Same model and test set; training times are not directly comparable: ours ran on "
        f"{', '.join(devices) or 'an unknown device'}, the reference on {hardware}."
    )


def _comparison_section(results: Results, sort_by: str) -> str:
    comparison, baseline, unit = results.comparison, results.baseline, results.unit
    if comparison is None or baseline is None:
        return f"No paired comparison: the report was given no per-{_singular(unit)} predictions."
    metric = _metric_label(results)
    header = [
        "Strategy",
        f"{metric.capitalize()} (mean)",
        f"Difference from {baseline} (points, 95% CI)",
        "90% CI",
        "p (Holm)",
        f"{unit.capitalize()} better / worse",
        "Detects (80% power)",
        "Verdict",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted_rows(comparison, sort_by, "accuracy_mean").to_dict("records"):
        shown = str(r["verdict"])
        if pd.isna(r["p_value_holm"]):
            difference = ci90 = p = counts = detects = _MISSING
            if shown == Verdict.NOT_COMPARED:
                shown = "not compared (" + (f"`{baseline}` did not learn)" if r["n_ok"] else "no successful run)")
        else:
            difference = f"{r['delta_vs_baseline']:+.2f} ({r['delta_ci_low']:+.2f} to {r['delta_ci_high']:+.2f})"
            ci90 = f"{r['delta_ci90_low']:+.2f} to {r['delta_ci90_high']:+.2f}"
            p, counts = f"{r['p_value_holm']:.3g}", f"{r['reviews_better']:.0f} / {r['reviews_worse']:.0f}"
            detects = f"±{r['detectable_difference']:.1f}"
        score = r["metric_mean"] if not pd.isna(r.get("metric_mean")) else r["accuracy_mean"]
        lines.append(
            f"| {r['strategy']} | {_fmt_pct(score)} | {difference} | {ci90} | {p} | {counts} | {detects} | {shown} |"
        )
    tests = sorted(set(comparison["test"].dropna()))
    intervals = sorted(set(comparison["interval"].dropna()))
    method = (
        f"Each strategy is compared with `{baseline}` {_singular(unit)} by {_singular(unit)} on the same test "
        f"{unit}, on the primary metric ({metric}): the difference in points with its 95% interval "
        f"({', '.join(intervals) or 'none'}), "
        f"the p-value of {', '.join(tests) or 'no test'}, Holm-adjusted across the strategies that learned. "
        f"Better or worse: significant at the {ALPHA:.0%} level; equivalent: the 90% interval (two one-sided "
        f"tests at {ALPHA:.0%}) lies inside {_points(results.margin)} (report.equivalence_margin); inconclusive: "
        f"neither. Detects: the smallest true difference the test finds with {POWER:.0%} power at this study's "
        "size (its test rows and seeds; the bootstrap standard error, at Holm's strictest step)."
    )
    return "\n".join(lines) + "\n\n" + _seeds_sentence([results]) + " " + method


def _points(margin: float) -> str:
    return f"±{margin:g} point" + ("" if margin == 1 else "s")


def _singular(unit: str) -> str:
    """ "reviews" -> "review", "examples" -> "example"; a unit that is no plural stays."""
    return unit[:-1] if unit.endswith("s") else unit


def _metric_label(results: Results) -> str:
    names = {run.metric for run in results.runs}
    return ", ".join(METRIC_LABELS.get(name, name) for name in sorted(names)) or "accuracy"


def _seeds_sentence(cells: Sequence[Results]) -> str:
    """What the tests compare: two trained models (one seed) or two methods (seeds resampled)."""
    counts = {int(n) for results in cells for n in results.agg["n_ok"] if n > 0}
    if not counts:
        return ""
    if max(counts) <= 1:
        return (
            "With one seed per strategy, each test compares two trained models, not two methods: the spread "
            "over seeds is unknown, and another seed could move a difference either way."
        )
    return (
        f"With {max(counts)} seeds per strategy, intervals and p-values come from a bootstrap that resamples each "
        "side's seeds, then the test rows, so they carry the spread over seeds as well as over rows."
    )


# At most this many optimizer steps per run: too short a training to rank methods by.
SMALL_STUDY_STEPS = 100


def too_small(cells: Sequence[Results]) -> str | None:
    """The report's first line where the study cannot rank strategies, from its records: every
    run trained at most SMALL_STUDY_STEPS steps, or one seed without tuning (each strategy at
    one configured setting, once). None otherwise."""
    runs = [run for results in cells for run in results.runs if run.ok]
    if not runs:
        return None
    seeds = max(int(results.agg["n_ok"].max()) for results in cells)
    tuned = any(results.tuning is not None for results in cells)
    steps = [number(run.train.get("metrics") or {}, "optimizer_steps") for run in runs]
    steps = [x for x in steps if not math.isnan(x)]
    few = bool(steps) and max(steps) <= SMALL_STUDY_STEPS
    if not few and not (seeds <= 1 and not tuned):
        return None
    reasons = []
    if seeds <= 1:
        reasons.append("one seed per strategy")
    if not tuned:
        reasons.append("no tuning")
    if steps:
        low, high = min(steps), max(steps)
        reasons.append(f"{low:.0f}" + ("" if low == high else f"–{high:.0f}") + " optimizer steps per run")
    return (
        f"This study is too small to rank strategies ({', '.join(reasons)}): read it as a check that the "
        "workflow runs, not as an answer."
    )


def _not_learned(results: Results) -> list[str]:
    """The strategies that did not learn in a cell, with their seeds."""
    agg = results.agg
    if "did_not_learn" not in agg:
        return []
    return [
        f"`{r['strategy']}` (seed {r['did_not_learn_seeds']})" for r in agg.to_dict("records") if r["did_not_learn"]
    ]


def _majority_words(results: Results) -> str:
    majority = results.majority
    if majority is None:
        return "the majority class"
    metric = next(iter({run.metric for run in results.runs}), "accuracy")
    return (
        f"labelling every test {_singular(results.unit)} with the majority class (`{majority.shown}`, "
        f"{_fmt_pct(majority.share)} of the labels: {METRIC_LABELS.get(metric, metric)} "
        f"{100 * majority.scores.get(metric, math.nan):.1f})"
    )


def cell_verdicts(results: Results) -> str:
    """The one-cell report's verdict paragraph: each strategy's verdict against the baseline,
    with its difference, and the runs that did not learn by name."""
    comparison, baseline = results.comparison, results.baseline
    sentences = []
    if not_learned := _not_learned(results):
        sentences.append(
            f"Did not learn (no better than {_majority_words(results)}, or one class for "
            f"{NEARLY_ONE_CLASS:.0%} or more of the predictions): {', '.join(not_learned)}; "
            "no verdict and no rank for them."
        )
    if comparison is None or baseline is None:
        return " ".join(sentences + ["No strategy was compared: the report was given no predictions."])
    rows = comparison.set_index("strategy")
    if baseline in rows.index and rows.loc[baseline, "verdict"] == Verdict.DID_NOT_LEARN:
        sentences.append(f"The baseline `{baseline}` did not learn, so no strategy is compared with it.")
    parts = []
    for strategy, r in rows.iterrows():
        if r["verdict"] in (Verdict.BASELINE, Verdict.DID_NOT_LEARN, Verdict.NOT_COMPARED):
            continue
        parts.append(
            f"`{strategy}` is {r['verdict']} ({r['delta_vs_baseline']:+.1f} points, 95% CI "
            f"{r['delta_ci_low']:+.1f} to {r['delta_ci_high']:+.1f}; "
            f"the test detects ±{r['detectable_difference']:.1f})"
        )
    if parts:
        sentences.insert(
            0,
            f"Against `{baseline}` on the primary metric ({_metric_label(results)}; equivalent: the 90% "
            f"interval inside {_points(results.margin)}): " + "; ".join(parts) + ".",
        )
    elif not sentences:
        sentences.append(f"No strategy could be compared with `{baseline}`.")
    sentences.append(_seeds_sentence([results]))
    return " ".join(s for s in sentences if s)


COSTS: tuple[tuple[str, str], ...] = (
    ("Trainable parameters", "trainable_params"),
    ("Peak memory", "memory"),
    ("Training time", "train_time_s"),
    ("Inference latency (median, one row at a time)", "latency_p50_ms"),
)


def _fmt_cost(column: str, value: float) -> str:
    if column == "trainable_params":
        return _fmt_count(value)
    if column == "train_time_s":
        return _fmt_seconds(value)
    if column == "latency_p50_ms":
        return f"{value:,.1f} ms"
    return f"{value:.2f} GB"


def which_strategy(cells: Mapping[str, Results], baseline: str | None) -> str:
    """ "Which strategy?" for one model: `cells` maps each task to its Results. The best strategy
    on the primary metric among those that learned on every task (one task: the highest mean;
    several: the best mean rank, then the highest mean), and per measured cost the cheapest
    strategy better than or equivalent to the best on every task (paired tests against the
    best, as against the baseline), or undecided and why."""
    tasks = list(cells)
    strategies = list(dict.fromkeys(s for results in cells.values() for s in results.agg["strategy"]))
    aggs = {task: results.agg.set_index("strategy") for task, results in cells.items()}
    # A task where no strategy learned says nothing about which to choose: set aside, and said.
    silent = [task for task in tasks if not any(_learned(aggs[task], s) for s in strategies)]
    tasks = [task for task in tasks if task not in silent]
    cells = {task: cells[task] for task in tasks}
    aside = (
        f" Set aside: {', '.join(silent)}, where no strategy learned (too few steps or rows for any of them)."
        if silent
        else ""
    )
    everywhere = [s for s in strategies if all(_learned(aggs[task], s) for task in tasks)]
    if not tasks:
        return "Undecided: no strategy learned on any task, so there is no best to choose from and no cost to weigh."
    if not everywhere:
        return (
            f"Undecided: no strategy learned on every task ({', '.join(tasks)}), so there is no best to choose "
            "from and no cost to weigh." + aside
        )
    best = _best_strategy(aggs, strategies=strategies, everywhere=everywhere, tasks=tasks)
    first = _best_line(cells, aggs, best=best, baseline=baseline) + aside
    versus = {task: results.compared_with(best) for task, results in cells.items()}
    if any(frame is None for frame in versus.values()):
        return first + " The costs are undecided: the report was given no predictions to test against it."
    verdicts = {task: frame.set_index("strategy")["verdict"] for task, frame in versus.items()}
    detects = {task: frame["detectable_difference"].median() for task, frame in versus.items()}
    margin = next(iter(cells.values())).margin
    lines = []
    for name, column in COSTS:
        if column == "memory":
            column, label = memory_metric(next(iter(cells.values())).agg)
            name = label.split(" (")[0]
        costs = {
            s: float(pd.Series([aggs[task].loc[s, f"{column}_mean"] for task in tasks if s in aggs[task].index]).mean())
            for s in strategies
        }
        if pd.isna(costs.get(best, math.nan)):
            lines.append(f"- {name}: not measured.")
            continue
        answer = _cheapest_as_good(
            column, costs, best=best, verdicts=verdicts, detects=detects, tasks=tasks, margin=margin
        )
        lines.append(f"- {name}: {answer}")
    return first + " Cheapest strategy as good as it, per cost:\n\n" + "\n".join(lines)


def _learned(agg: pd.DataFrame, strategy: str) -> bool:
    """Whether `strategy` learned on the task of `agg` (its aggregate, by strategy)."""
    return (
        strategy in agg.index
        and agg.loc[strategy, "n_ok"] > 0
        and not bool(agg.loc[strategy].get("did_not_learn", False))
        and not pd.isna(agg.loc[strategy, "metric_mean"])
    )


def _best_strategy(
    aggs: Mapping[str, pd.DataFrame], *, strategies: list[str], everywhere: list[str], tasks: list[str]
) -> str:
    """Of the strategies that learned on every task, the best mean rank, then the highest mean."""
    ranks = {
        task: aggs[task]
        .loc[[s for s in strategies if _learned(aggs[task], s)], "metric_mean"]
        .round(RANK_DECIMALS)
        .rank(ascending=False, method="average")
        for task in tasks
    }
    mean_rank = {s: sum(ranks[task][s] for task in tasks) / len(tasks) for s in everywhere}
    mean_score = {s: sum(aggs[task].loc[s, "metric_mean"] for task in tasks) / len(tasks) for s in everywhere}
    return min(everywhere, key=lambda s: (mean_rank[s], -round(mean_score[s], RANK_DECIMALS)))


def _best_line(
    cells: Mapping[str, Results], aggs: Mapping[str, pd.DataFrame], *, best: str, baseline: str | None
) -> str:
    """The best strategy, its scores, and what it is against the baseline on each task."""
    scores = "; ".join(
        f"{task} {100 * aggs[task].loc[best, 'metric_mean']:.1f} {_metric_label(cells[task])}" for task in cells
    )
    how = "the highest mean" if len(cells) == 1 else "the best mean rank over tasks"
    lead = ""
    if baseline is not None and best != baseline:
        said = {
            task: results.comparison.set_index("strategy")["verdict"].get(best)
            for task, results in cells.items()
            if results.comparison is not None
        }
        lead = "; against `{}`: {}".format(baseline, ", ".join(f"{v} on {t}" for t, v in said.items() if v))
    return f"Best on the primary metric: `{best}` ({how}: {scores}{lead})."


def _cheapest_as_good(
    column: str,
    costs: Mapping[str, float],
    *,
    best: str,
    verdicts: Mapping[str, pd.Series],
    detects: Mapping[str, float],
    tasks: list[str],
    margin: float,
) -> str | None:
    """On one cost, the cheapest strategy better than or equivalent to `best` on every task,
    those cheaper that were not, or undecided and why."""
    order = sorted(
        (s for s in costs if not pd.isna(costs[s])), key=lambda s: (round(costs[s], RANK_DECIMALS), s != best)
    )
    passed: list[str] = []
    for strategy in order:
        if strategy == best:
            return (
                f"`{best}` itself ({_fmt_cost(column, costs[best])})"
                + (f"; cheaper, but not as good: {'; '.join(passed)}" if passed else "")
                + "."
            )
        said = {task: str(verdicts[task].get(strategy, Verdict.NOT_COMPARED)) for task in tasks}
        if all(v in (Verdict.BETTER, Verdict.EQUIVALENT) for v in said.values()):
            return (
                f"`{strategy}` ({_fmt_cost(column, costs[strategy])} against {_fmt_cost(column, costs[best])}), "
                f"{' or '.join(sorted(set(said.values())))} to `{best}` on every task."
            )
        bad = [f"{v} on {t}" for t, v in said.items() if v in (Verdict.WORSE, Verdict.DID_NOT_LEARN)]
        if bad:
            passed.append(f"`{strategy}` ({', '.join(bad)})")
            continue
        open_tasks = [t for t, v in said.items() if v not in (Verdict.BETTER, Verdict.EQUIVALENT)]
        why = ", ".join(f"{t} (the test detects ±{detects[t]:.1f} points there)" for t in open_tasks)
        return (
            f"undecided: `{strategy}` costs less ({_fmt_cost(column, costs[strategy])} against "
            f"{_fmt_cost(column, costs[best])}) but is neither shown worse nor shown within {_points(margin)} "
            f"of `{best}` on {why}: too few test rows or seeds to tell."
        )
    return None


def _tuning_section(results: Results) -> str:
    trials, selected = results.tuning, results.selected or {}
    if trials is None:
        return "Tuning was off: every strategy ran at its configured settings."
    keys = summary_keys(trials)
    score, metric = summary_score(trials)
    label = METRIC_LABELS.get(metric, metric)
    header = ["Strategy", "Grid", "Chosen", f"Validation {label}", "Runner-up (margin)", "Trials ok"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy, group in trials.groupby("strategy", sort=False):
        grid = "; ".join(
            f"{key}: {', '.join(_fmt_value(v) for v in dict.fromkeys(group[key].dropna()))}"
            for key in keys
            if group[key].notna().any()
        )
        ok = group[group["status"] == Status.OK]
        per_trial = ok.groupby("trial", sort=False)[score].mean().sort_values(ascending=False)
        choice = selected.get(strategy) or {}
        if not choice.get("values"):
            chosen, accuracy, runner = f"none: {choice.get('reason', 'no trial ended ok')}", _MISSING, _MISSING
        else:
            chosen = ", ".join(f"{k} = {_fmt_value(v)}" for k, v in choice["values"].items())
            chosen_score = choice.get(score, choice.get("val_accuracy"))
            accuracy = _fmt_pct(chosen_score)
            others = per_trial.drop(choice.get("trial"), errors="ignore")
            runner = _MISSING
            if not others.empty:
                margin = 100 * (chosen_score - others.iloc[0])
                runner = f"{others.index[0]}: {_fmt_pct(others.iloc[0])} ({margin:+.2f})"
        trials_ok = f"{group[group['status'] == Status.OK]['trial'].nunique()}/{group['trial'].nunique()}"
        lines.append(f"| {strategy} | {grid} | {chosen} | {accuracy} | {runner} | {trials_ok} |")
    seeds = ", ".join(str(s) for s in sorted(trials["seed"].unique()))
    return (
        "\n".join(lines) + f"\n\nEach trial trained on the training split with seed(s) {seeds} and was scored on "
        "the validation split only (no trial saw the test split); the best mean validation "
        f"{label} was chosen, "
        "a tie going to the cheaper setting. The final runs used the chosen values (their `train.json` shows them)."
    )


def _fmt_value(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _matches_reference(runs: Sequence[RunRecord], table: pd.DataFrame) -> str | None:
    """Why this study cannot be set beside the notebook's numbers, or None if it can:
    the notebook fine-tuned roberta-base and tested on the full IMDB test split."""
    ok = table[table["status"] == Status.OK]
    if ok.empty:
        return "this study has no successful run"
    models = {str((run.train.get("config") or {}).get("model_name_or_path", "")) for run in runs if run.ok}
    sizes = set(ok["n_test"].dropna())
    reasons = []
    if not models or not all(name.rstrip("/").split("/")[-1] == "roberta-base" for name in models):
        reasons.append(f"it fine-tuned roberta-base, this study {_model_name(runs)}")
    if sizes != {REFERENCE_TEST_SIZE}:
        reasons.append(
            f"it tested on all {REFERENCE_TEST_SIZE:,} IMDB test reviews, this study on {_describe_test_size(ok)[1]}"
        )
    return "; ".join(reasons) or None


def render_markdown(
    *,
    results: Results,
    figures: Mapping[str, Path],
    report_path: Path,
    sort_by: str,
    reference: Mapping[str, Any] | None = None,
    reference_recipe: Path | None = None,
    imdb: bool | None = None,
    environment: bool = True,
    too_small_line: bool = True,
) -> str:
    """The Markdown report; figure links are relative to ``report_path``'s folder.
    `sort_by` (config `report.sort_by`): the results tables' order, `config` or `accuracy`.
    `reference` (config `report.reference`): the reference's results, whose recipe is the
    overlay `reference_recipe` (config/reference-recipe.yaml), compared only where the task
    is IMDB (`imdb`; None: not known, the reference's own checks decide). `environment`: end
    with the hardware and versions (a study's report gives them once, at its end);
    `too_small_line`: say first where the study is too small to rank (a study's report says it
    once, at its top). It opens
    with the answer: the verdicts, then "Which strategy?"."""
    table, agg, runs = results.table, results.agg, results.runs
    mismatch = _matches_reference(runs, table) if reference is not None else None
    task = results.runs[0].task if results.runs else ""
    small = too_small([results]) if too_small_line else None
    sections = [
        "# Fine-tuning strategies compared",
        *([small] if small else []),
        cell_verdicts(results) + " " + _intro(table, agg, runs, results.unit),
        "## Which strategy?",
        which_strategy({task: results}, results.baseline),
        "## Results",
        _results_table(agg, _degenerate_seeds(table), sort_by, results.unit, results.majority),
        "## Inference cost",
        _inference_section(results),
        "## Differences from the baseline",
        _comparison_section(results, sort_by),
        "## Tuning",
        _tuning_section(results),
        "## Training settings",
        _settings_table(runs),
        "## Figures",
        _figure_links(figures, report_path),
        "## Skipped or failed runs",
        _failures(runs),
        "## Runs that did not learn",
        _flagged(table),
    ]
    if environment:
        sections += ["## Hardware and software", _environment(runs)]
    if imdb is not False:
        sections += [
            "## Comparison with the reference notebook",
            (
                f"Left out: the reference notebook's setting differs ({mismatch}), so its numbers would not compare."
                if mismatch
                else _reference_section(reference, reference_recipe, table, agg)
            ),
        ]
    return "\n\n".join(sections) + "\n"


# ----------------------------------------------------------------------------- across tasks


def _names(items: Sequence[str]) -> str:
    quoted = [f"`{item}`" for item in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _ratio(value: float) -> str:
    return _MISSING if pd.isna(value) else f"{value:.2g}×"


def _share(value: float) -> str:
    """A ratio as a percentage, to 2 significant figures (100% stays 100%)."""
    return _MISSING if pd.isna(value) else f"{float(f'{100 * value:.2g}'):g}%"


def _cost_words(row: Mapping[str, Any], baseline: str) -> str:
    params = row["trainable_params_vs_baseline"]
    params_text = "an unknown share" if pd.isna(params) else _share(params)
    return (
        f"`{row['strategy']}` trains in {_ratio(row['train_time_vs_baseline'])} `{baseline}`'s time, with "
        f"{params_text} of its trainable parameters and {_ratio(row['peak_memory_vs_baseline'])} its peak memory"
    )


def opening_paragraph(study: Any, across: pd.DataFrame, baseline: str | None) -> str:
    """In words, per model: each strategy's verdicts against the baseline, task by task (better,
    equivalent, inconclusive, worse), the strategies that did not learn where, what each costs
    relative to the baseline, and what the tests can see (seeds, the smallest detectable
    difference per task)."""
    from ftcompare.contract import COUNTED_VERDICTS, VERDICT_COUNT_COLUMNS
    from ftcompare.report.tables import detectable_by_task

    tasks = study.tasks
    if baseline is None:
        return f"This study ran {len(tasks)} tasks ({_names(tasks)}); no baseline was named, so nothing was compared."
    n_tests = int(across[[c for c in VERDICT_COUNT_COLUMNS if c != "did_not_learn"]].sum(axis=1).sum())
    sentences = [
        f"This study compares fine-tuning strategies on {len(tasks)} tasks ({_names(tasks)}) with "
        f"{across['model'].nunique()} model{'s' if across['model'].nunique() != 1 else ''}, each against "
        f"`{baseline}` by a paired test per task on the task's primary metric, Holm-adjusted over "
        + (f"all {n_tests} tests" if n_tests != 1 else "the 1 test")
        + f" at the 5% level; equivalent means the difference's 90% interval lies inside {_points(study.margin)}."
    ]
    for model, rows in across.groupby("model", sort=False):
        parts = []
        not_learned = {task: [] for task in tasks}
        for row in rows.to_dict("records"):
            by_verdict = {v: [t for t in tasks if row.get(f"verdict_{t}") == v] for v in COUNTED_VERDICTS}
            for task in by_verdict[Verdict.DID_NOT_LEARN]:
                not_learned[task].append(row["strategy"])
            if row["strategy"] == baseline:
                continue
            said = [f"{v} on {_plain(ts)}" for v, ts in by_verdict.items() if ts and v != Verdict.DID_NOT_LEARN]
            if said:
                parts.append(f"`{row['strategy']}` is " + ", ".join(said))
        if not parts:
            parts.append(f"no strategy could be compared with `{baseline}`")
        dnl = [f"{_names(names)} on {task}" for task, names in not_learned.items() if names]
        others = rows[rows["strategy"] != baseline]
        costs = [_cost_words(row, baseline) for row in others.to_dict("records")]
        sentences.append(
            f"With `{model}`: "
            + "; ".join(parts)
            + "."
            + (
                " Did not learn (no better than the majority class, or one class for nearly every prediction; no "
                "verdict, no rank there): " + "; ".join(dnl) + "."
                if dnl
                else ""
            )
            + (" Costs (means over tasks of each task's ratio): " + "; ".join(costs) + "." if costs else "")
        )
    sentences.append(_seeds_sentence(list(study.cells.values())))
    detects = {task: value for task, value in detectable_by_task(study).items() if not math.isnan(value)}
    if detects:
        sentences.append(
            "The smallest difference each task's test detects with 80% power at this size: "
            + ", ".join(f"{task} ±{value:.1f} points" for task, value in detects.items())
            + "; an inconclusive verdict says more test rows or seeds are needed to tell."
        )
    return " ".join(s for s in sentences if s)


def _plain(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def across_table(across: pd.DataFrame, tasks: Sequence[str], metrics: Mapping[str, str]) -> str:
    from ftcompare.contract import VERDICT_COUNT_COLUMNS

    same = len(set(metrics.values())) <= 1
    header = [
        "Model",
        "Strategy",
        *[f"{task} ({metrics.get(task, '?')})" for task in tasks],
        "Mean" if same else "Mean of different metrics",
        "Mean rank",
        "Better / equivalent / inconclusive / worse / did not learn",
        "Train time",
        "Trainable params",
        "Peak memory",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in across.to_dict("records"):
        cells = [
            r["model"],
            r["strategy"],
            *[
                _fmt_float(100 * r[task], 1)
                + (" ✗ did not learn" if r.get(f"verdict_{task}") == Verdict.DID_NOT_LEARN else "")
                for task in tasks
            ],
            _fmt_float(100 * r["mean"], 1),
            _fmt_float(r["mean_rank"], 2),
            " / ".join(str(r[c]) for c in VERDICT_COUNT_COLUMNS),
            _ratio(r["train_time_vs_baseline"]),
            _share(r["trainable_params_vs_baseline"]),
            _ratio(r["peak_memory_vs_baseline"]),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def render_study_markdown(
    *,
    study: Any,
    across: pd.DataFrame,
    cell_figures: Mapping[tuple[str, str], Mapping[str, Path]],
    across_figures: Mapping[str, Path],
    report_path: Path,
    sort_by: str,
    reference: Mapping[str, Any] | None = None,
    reference_recipe: Path | None = None,
    datasets: Mapping[str, Mapping[str, Any]] | None = None,
    published: Path | None = PUBLISHED_DIR,
) -> str:
    """The report of a study (tables.StudyResults). One cell: the report as `render_markdown` writes
    it. Several: the title, the verdict paragraph across tasks, "Which strategy?" per model,
    the across-task table and figures, the published figures where the study matches
    (`datasets`: task -> its data block), a section per (task, model) with the one-cell
    report's body, and the hardware and versions once."""
    from ftcompare.plan import is_imdb

    cells = list(study.cells)
    datasets = datasets or {}
    if len(cells) == 1 and not across_figures:
        return render_markdown(
            results=study.cells[cells[0]],
            figures=cell_figures.get(cells[0], {}),
            report_path=report_path,
            sort_by=sort_by,
            reference=reference,
            reference_recipe=reference_recipe,
            imdb=is_imdb(cells[0][0], datasets[cells[0][0]]) if cells[0][0] in datasets else None,
        )
    tasks = study.tasks
    metrics = _task_metrics(study)
    small = too_small(list(study.cells.values()))
    which = []
    for model in study.models:
        per_task = {task: results for (task, m), results in study.cells.items() if m == model}
        answer = which_strategy(per_task, study.baseline)
        which.append(answer if len(study.models) == 1 else f"With `{model}`: {answer}")
    sections = [
        "# Fine-tuning strategies compared across tasks",
        *([small] if small else []),
        opening_paragraph(study, across, study.baseline),
        "## Which strategy?",
        "\n\n".join(which),
        "## Across tasks",
        across_table(across, tasks, metrics),
        _across_note(study, metrics),
        _figure_links(across_figures, report_path),
    ]
    if published is not None and (block := published_section(study, datasets, load_papers(published))):
        sections += ["## Beside published figures", block]
    for cell in cells:
        sections.append(
            _cell_section(
                cell,
                study.cells[cell],
                figures=cell_figures.get(cell, {}),
                report_path=report_path,
                sort_by=sort_by,
                reference=reference,
                reference_recipe=reference_recipe,
                imdb=is_imdb(cell[0], datasets[cell[0]]) if cell[0] in datasets else None,
                too_small_line=not small,
            )
        )
    all_runs = [run for results in study.cells.values() for run in results.runs]
    sections += ["## Hardware and software", _environment(all_runs)]
    return "\n\n".join(sections) + "\n"


def _task_metrics(study: Any) -> dict[str, str]:
    """Each task's primary metric in words (several where its cells' records differ)."""
    return {
        task: ", ".join(
            sorted(
                {
                    METRIC_LABELS.get(run.metric, run.metric)
                    for (t, _), r in study.cells.items()
                    if t == task
                    for run in r.runs
                }
            )
        )
        for task in study.tasks
    }


def _across_note(study: Any, metrics: Mapping[str, str]) -> str:
    """What the across-task table's numbers are."""
    mixed = len(set(metrics.values())) > 1
    return (
        "Per task, the primary metric × 100 (mean over successful seeds); "
        + (
            f"the mean over tasks averages different metrics ({', '.join(dict.fromkeys(metrics.values()))}), as "
            "the GLUE score does: a summary, not a quantity; "
            if mixed
            else "the mean over tasks needs a result on every task; "
        )
        + "the mean rank (1 = best in a task; scores equal to 9 decimals tie) needs a rank on every task where "
        "any strategy learned, and a strategy that did not learn on a task (✗) has none there. The verdict counts: "
        f"tasks where the strategy is better than, equivalent to (90% interval inside {_points(study.margin)}), "
        f"inconclusive against, or worse than `{study.baseline}` by the per-task paired test, Holm-adjusted over "
        "every task, strategy and model together, and tasks where it did not learn. Costs: relative to the "
        "baseline on the same task and model, the mean over tasks (trainable parameters as a share of the "
        "baseline's)."
    )


def _cell_section(cell: tuple[str, str], results: Results, **report: Any) -> str:
    """One (task, model)'s section: the one-cell report's body under the cell's heading
    (`report`: render_markdown's arguments), the hardware left to the study's end."""
    body = render_markdown(results=results, environment=False, **report)
    lines = body.splitlines()[1:]  # its title gives way to the cell's heading
    lines = ["#" + line if line.startswith("## ") else line for line in lines]
    return f"## {cell[0]} × {cell[1]}\n" + "\n".join(lines).rstrip()
