"""The Markdown report, drawn from `tables.Results` and the figures' paths."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ftcompare.config import load_yaml
from ftcompare.figures import FIGURE_CAPTIONS, memory_metric
from ftcompare.metrics import LABELS as METRIC_LABELS
from ftcompare.published import PUBLISHED_DIR, load_papers, published_section
from ftcompare.records import Status
from ftcompare.tables import Results, RunRecord, number
from ftcompare.tuning import summary_keys, summary_score

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


def _intro(table: pd.DataFrame, agg: pd.DataFrame, runs: Sequence[RunRecord]) -> str:
    ok = table[table["status"] == Status.OK]
    strategies = ", ".join(f"`{s}`" if s == m else f"`{s}` ({m})" for s, m in zip(agg["strategy"], agg["method"]))
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


def _results_table(agg: pd.DataFrame, degenerate: Mapping[str, list[int]], sort_by: str) -> str:
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
        "Test reviews/s",
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
    return "\n".join(lines)


def _latency(p50: float, p95: float) -> str:
    return _MISSING if pd.isna(p50) else f"{p50:,.1f} / {p95:,.1f} ms"


def _inference_section(results: Results) -> str:
    """What each strategy costs to apply: test throughput and single-review latency, as
    trained and with the adapter merged into its base (means over ok seeds)."""
    agg, runs = results.agg, results.runs
    header = [
        "Strategy",
        "Method",
        "Test reviews/s",
        "One review p50 / p95",
        "Merged: test reviews/s",
        "Merged: one review p50 / p95",
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
        f"Test reviews/s: the whole test split in length-sorted batches of at most {batch} reviews"
        + (f" and {budget:,} padded tokens" if budget else "")
        + ". One review: the time to label a single review (a batch of one, from its token ids on the host to "
        "its probabilities there), median and 95th percentile over the same fixed sample of test reviews for "
        f"every run, after 10 untimed; on {devices}. Merged: the adapter merged into its base weights, as "
        "`ftcompare export --merged` writes it (QLoRA's 4-bit base dequantised first); full fine-tuning has "
        "nothing to merge. The last column is the share of test reviews the merged model labels as the "
        "adapter does."
    ]
    if comparison := _qlora_against_lora(agg):
        notes.append(comparison)
    errors = [
        f"- `{row.strategy}` seed {row.seed}: merging failed: {_one_line(row.merged_error)}"
        for row in results.table.itertuples()
        if isinstance(row.merged_error, str)
    ]
    return "\n".join(lines) + "\n\n" + " ".join(notes) + ("\n\n" + "\n".join(errors) if errors else "")


def _qlora_against_lora(agg: pd.DataFrame) -> str | None:
    """QLoRA's inference cost against LoRA's (the first strategy of each method with an ok run)."""
    measured = agg[agg["n_ok"] > 0].drop_duplicates("method").set_index("method")
    if not {"lora", "qlora"} <= set(measured.index):
        return None
    lora, qlora = measured.loc["lora"], measured.loc["qlora"]
    if pd.isna(lora["eval_reviews_per_s_mean"]) or pd.isna(qlora["eval_reviews_per_s_mean"]):
        return None
    text = (
        f"`{qlora['strategy']}` (4-bit base) labels {_fmt_count(qlora['eval_reviews_per_s_mean'])} test reviews/s "
        f"against `{lora['strategy']}`'s {_fmt_count(lora['eval_reviews_per_s_mean'])} "
        f"({qlora['eval_reviews_per_s_mean'] / lora['eval_reviews_per_s_mean']:.2f}x), and one review in "
        f"{qlora['latency_p50_ms_mean']:,.1f} ms against {lora['latency_p50_ms_mean']:,.1f} ms (median)"
    )
    merged_qlora, merged_lora = qlora["merged_eval_reviews_per_s_mean"], lora["merged_eval_reviews_per_s_mean"]
    if not pd.isna(merged_qlora) and not pd.isna(merged_lora):
        text += (
            f"; merged, both are a plain model of the base's size: {_fmt_count(merged_qlora)} "
            f"against {_fmt_count(merged_lora)} reviews/s"
        )
    return text + "."


def _settings_table(runs: Sequence[RunRecord]) -> str:
    """How each strategy trained (first successful seed): what its time and memory depend on."""
    header = [
        "Strategy",
        "Precision",
        "Learning rate (applied)",
        "Reviews per step (mean)",
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
    flagged = table[(table["status"] == Status.OK) & table["degenerate_validation"].notna()]
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
    comparison, baseline = results.comparison, results.baseline
    if comparison is None or baseline is None:
        return "No paired comparison: the report was given no per-review predictions."
    header = [
        "Strategy",
        "Accuracy (mean)",
        f"Difference from {baseline} (points, 95% CI)",
        "p (Holm)",
        "Reviews better / worse",
        "At the 5% level",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    alike, better, worse = [], [], []
    for r in sorted_rows(comparison, sort_by, "accuracy_mean").to_dict("records"):
        if r["strategy"] == baseline:
            verdict, difference, p, counts = "baseline", _MISSING, _MISSING, _MISSING
        elif pd.isna(r["p_value_holm"]):
            verdict, difference, p, counts = (
                "not compared (no successful run on one side)",
                _MISSING,
                _MISSING,
                _MISSING,
            )
        else:
            difference = f"{r['delta_vs_baseline']:+.2f} ({r['delta_ci_low']:+.2f} to {r['delta_ci_high']:+.2f})"
            p, counts = f"{r['p_value_holm']:.3g}", f"{r['reviews_better']:.0f} / {r['reviews_worse']:.0f}"
            if r["p_value_holm"] >= 0.05:
                verdict = "indistinguishable"
                alike.append(r["strategy"])
            elif r["delta_vs_baseline"] > 0:
                verdict = "better"
                better.append(r["strategy"])
            else:
                verdict = "worse"
                worse.append(r["strategy"])
        lines.append(
            f"| {r['strategy']} | {_fmt_pct(r['accuracy_mean'])} | {difference} | {p} | {counts} | {verdict} |"
        )

    def names(items: list[str]) -> str:
        return ", ".join(f"`{item}`" for item in items)

    words = []
    if alike:
        words.append(
            f"{names(alike)} {'is' if len(alike) == 1 else 'are'} indistinguishable from `{baseline}` at the "
            "5% level (Holm-adjusted): the data do not show a difference either way"
        )
    if better:
        words.append(f"{names(better)} {'is' if len(better) == 1 else 'are'} better than `{baseline}`")
    if worse:
        words.append(f"{names(worse)} {'is' if len(worse) == 1 else 'are'} worse than `{baseline}`")
    summary = ("; ".join(words) + ".") if words else f"No strategy could be compared with `{baseline}`."
    method = (
        "Each strategy is compared with the baseline review by review on the same test reviews, each review's "
        "correctness averaged over the seeds both ran: the difference in accuracy with a bootstrap 95% interval "
        "over reviews, and an exact sign test on the reviews where they differ (McNemar's exact test for one "
        "seed), Holm-adjusted across strategies."
    )
    return "\n".join(lines) + "\n\n" + summary + " " + method


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
) -> str:
    """The Markdown report; figure links are relative to ``report_path``'s folder.
    `sort_by` (config `report.sort_by`): the results tables' order, `config` or `accuracy`.
    `reference` (config `report.reference`): the reference's results, whose recipe is the
    overlay `reference_recipe` (config/reference-recipe.yaml)."""
    table, agg, runs = results.table, results.agg, results.runs
    mismatch = _matches_reference(runs, table) if reference is not None else None
    sections = [
        "# Fine-tuning strategies compared",
        _intro(table, agg, runs),
        "## Results",
        _results_table(agg, _degenerate_seeds(table), sort_by),
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
        "## Runs with degenerate predictions",
        _flagged(table),
        "## Hardware and software",
        _environment(runs),
        "## Comparison with the reference notebook",
        (
            f"Left out: the reference notebook's setting differs ({mismatch}), so its numbers would not compare."
            if mismatch
            else _reference_section(reference, reference_recipe, table, agg)
        ),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(
    *,
    results: Results,
    figures: Mapping[str, Path],
    report_path: Path,
    sort_by: str,
    reference: Mapping[str, Any] | None = None,
    reference_recipe: Path | None = None,
) -> Path:
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(
        render_markdown(
            results=results,
            figures=figures,
            report_path=report_path,
            sort_by=sort_by,
            reference=reference,
            reference_recipe=reference_recipe,
        )
    )
    return report_path


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


def opening_paragraph(across: pd.DataFrame, tasks: Sequence[str], baseline: str | None) -> str:
    """In words, per model: which strategies show no Holm-significant loss against the baseline
    on any task, which lose where, and what each costs relative to the baseline."""
    if baseline is None:
        return f"This study ran {len(tasks)} tasks ({_names(tasks)}); no baseline was named, so nothing was compared."
    n_tests = int((across[["wins", "ties", "losses"]].sum(axis=1)).sum())
    sentences = [
        f"This study compares fine-tuning strategies on {len(tasks)} tasks ({_names(tasks)}) with "
        f"{across['model'].nunique()} model{'s' if across['model'].nunique() != 1 else ''}, each against "
        f"`{baseline}` by a paired test per task on the task's primary metric, Holm-adjusted over all {n_tests} "
        "tests at the 5% level."
    ]
    for model, rows in across.groupby("model", sort=False):
        others = rows[rows["strategy"] != baseline]
        compared = others[others[["wins", "ties", "losses"]].sum(axis=1) > 0]
        alike = compared[(compared["losses"] == 0) & (compared["wins"] == 0)]["strategy"].tolist()
        better = compared[(compared["losses"] == 0) & (compared["wins"] > 0)]
        worse = compared[compared["losses"] > 0]
        parts = []
        if alike:
            parts.append(
                f"{_names(alike)} {'is' if len(alike) == 1 else 'are'} indistinguishable from `{baseline}` on every "
                "task compared (no significant loss and no significant win)"
            )
        for row in better.to_dict("records"):
            won = [t for t in tasks if row.get(f"outcome_{t}") == "win"]
            parts.append(f"`{row['strategy']}` is never worse than `{baseline}` and better on {_names(won)}")
        for row in worse.to_dict("records"):
            lost = [t for t in tasks if row.get(f"outcome_{t}") == "loss"]
            parts.append(f"`{row['strategy']}` is worse than `{baseline}` on {_names(lost)}")
        if not parts:
            parts.append(f"no strategy could be compared with `{baseline}`")
        costs = [_cost_words(row, baseline) for row in others.to_dict("records")]
        sentences.append(
            f"With `{model}`: "
            + "; ".join(parts)
            + "."
            + (" Costs (means over tasks of each task's ratio): " + "; ".join(costs) + "." if costs else "")
        )
    return " ".join(sentences)


def across_table(across: pd.DataFrame, tasks: Sequence[str], metrics: Mapping[str, str]) -> str:
    header = [
        "Model",
        "Strategy",
        *[f"{task} ({metrics.get(task, '?')})" for task in tasks],
        "Mean",
        "Mean rank",
        "W / T / L",
        "Train time",
        "Trainable params",
        "Peak memory",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in across.to_dict("records"):
        cells = [
            r["model"],
            r["strategy"],
            *[_fmt_float(100 * r[task], 1) for task in tasks],
            _fmt_float(100 * r["mean"], 1),
            _fmt_float(r["mean_rank"], 2),
            f"{r['wins']} / {r['ties']} / {r['losses']}",
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
    """The report of a study (tables.Study). One cell: the report as `render_markdown` writes
    it. Several: the opening paragraph across tasks, the across-task table and figures, the
    published figures where the study matches (`datasets`: task -> its data block), then a
    section per (task, model) with the one-cell report's body."""
    cells = list(study.cells)
    if len(cells) == 1 and not across_figures:
        return render_markdown(
            results=study.cells[cells[0]],
            figures=cell_figures.get(cells[0], {}),
            report_path=report_path,
            sort_by=sort_by,
            reference=reference,
            reference_recipe=reference_recipe,
        )
    tasks = study.tasks
    metrics = {
        task: ", ".join(sorted({run.metric for (t, _), r in study.cells.items() if t == task for run in r.runs}))
        for task in tasks
    }
    sections = [
        "# Fine-tuning strategies compared across tasks",
        opening_paragraph(across, tasks, study.baseline),
        "## Across tasks",
        across_table(across, tasks, metrics),
        "Per task, the primary metric × 100 (mean over successful seeds); the mean over tasks and the mean rank "
        "(1 = best in a task) need a result on every task. W / T / L: tasks where the strategy is significantly "
        f"better than, indistinguishable from, or worse than `{study.baseline}` by the per-task paired test, "
        "Holm-adjusted over every task, strategy and model together. Costs: relative to the baseline on the same "
        "task and model, the mean over tasks (trainable parameters as a share of the baseline's).",
        _figure_links(across_figures, report_path),
    ]
    if published is not None and (block := published_section(study, datasets, load_papers(published))):
        sections += ["## Beside published figures", block]
    for cell in cells:
        body = render_markdown(
            results=study.cells[cell],
            figures=cell_figures.get(cell, {}),
            report_path=report_path,
            sort_by=sort_by,
            reference=reference,
            reference_recipe=reference_recipe,
        )
        lines = body.splitlines()[1:]  # its title gives way to the cell's heading
        lines = ["#" + line if line.startswith("## ") else line for line in lines]
        sections.append(f"## {cell[0]} × {cell[1]}\n" + "\n".join(lines).rstrip())
    return "\n\n".join(sections) + "\n"
