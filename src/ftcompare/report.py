"""The Markdown report, drawn from `tables.Results` and the figures' paths."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ftcompare.figures import FIGURE_CAPTIONS, memory_metric
from ftcompare.config import REFERENCE_RECIPE, load_yaml
from ftcompare.records import Status
from ftcompare.tables import Results, RunRecord, number

# The full IMDB test split; the reference notebook evaluated on all of it.
REFERENCE_TEST_SIZE = 25_000


def reference_recipe() -> str:
    """The reference notebook's recipe in words, read from config/reference-recipe.yaml."""
    overlay = load_yaml(REFERENCE_RECIPE)
    training, strategies = overlay["training"], overlay.get("strategies") or {}
    rates = sorted({float(entry["learning_rate"]) for entry in strategies.values() if "learning_rate" in entry})
    return (f"learning rate {' / '.join(f'{r:g}' for r in rates)} for every strategy, batch {training['batch_size']}, "
            f"every review padded to {training['pad_to_multiple_of']} tokens, {training['precision']}")  # fmt: skip


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
    flagged = table[(table["status"] == Status.OK) & table["degenerate_validation"].notna()]
    return {strategy: sorted(group["seed"]) for strategy, group in flagged.groupby("strategy", sort=False)}


def _results_table(agg: pd.DataFrame, degenerate: Mapping[str, list[int]]) -> str:
    memory_column, memory_label = memory_metric(agg)
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
        ref_acc, ref_time = number(ref, "accuracy"), number(ref, "train_time_s")
        our_acc = ours["accuracy_mean"].get(strategy, math.nan)
        our_time = ours["train_time_s_mean"].get(strategy, math.nan)
        diff = _MISSING if pd.isna(ref_acc) or pd.isna(our_acc) else f"{100 * (our_acc - ref_acc):+.2f}"
        lines.append(f"| {strategy} | {_fmt_pct(ref_acc)} | {_fmt_pct(our_acc)} | {diff} | "
                     f"{_fmt_seconds(ref_time)} | {_fmt_seconds(our_time)} |")

    hardware = str(reference.get("hardware") or "unknown hardware")
    seeds = reference.get("seeds")
    runs = "" if seeds is None else f", {seeds} seed{'s' if seeds != 1 else ''}"
    notes = [f"Reference: the reference notebook ({reference_recipe()}{runs}), run on {hardware}."]
    if (published := reference.get("published_full_ft_accuracy")) is not None:
        notes.append(f"Published accuracy for full fine-tuning: {_fmt_pct(float(published))}.")
    notes.append(_caveat(table, hardware))
    return "\n".join(lines) + "\n\n" + " ".join(notes)


def _caveat(table: pd.DataFrame, hardware: str) -> str:
    ok = table[table["status"] == Status.OK]
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
    *, results: Results, figures: Mapping[str, Path], report_path: Path, reference: Mapping[str, Any] | None = None
) -> str:
    """The Markdown report; figure links are relative to ``report_path``'s folder."""
    table, agg, runs = results.table, results.agg, results.runs
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
    *, results: Results, figures: Mapping[str, Path], report_path: Path, reference: Mapping[str, Any] | None = None
) -> Path:
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_markdown(results=results, figures=figures, report_path=report_path,
                                           reference=reference))  # fmt: skip
    return report_path
