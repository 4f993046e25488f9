"""Tuning: each strategy's settings chosen on the validation split before the final runs.

The config's `tuning.grid` names, per strategy, values to try for keys the strategy may
override (`learning_rate`, or a method setting as a dotted key such as `lora.r`). Every
combination is a trial; each trial trains on the training split with each of
`tuning.seeds` and is scored on the validation split alone (the trial jobs never load
the test split and no evaluation job exists for them). The setting with the best mean
validation score on the task's metric (`data.metric`: each trial's best epoch is chosen on
it too) over the trial seeds is chosen; a tie goes to the cheaper setting
(fewer trainable parameters, then less training time). Only trials whose runs all ended
`ok` count: a diverged trial has status `failed` and can never be chosen.

Torch-free: the Snakefile uses it while it builds the job graph.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ftcompare.contract import ConfigError, read_record, write_selection
from ftcompare.methods import BLOCK_SCHEMAS, METHOD_BLOCKS, RunSpec
from ftcompare.plan.config import resolve_run, training_overrides

log = logging.getLogger(__name__)

TRIAL_ID = re.compile(r"^[A-Za-z0-9_.+=,-]+$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    strategy: str
    values: dict[str, Any]  # tuned key -> value, in grid order

    @property
    def id(self) -> str:
        """A folder name that says what was tried, e.g. `learning_rate=0.0005,lora.r=16`."""
        return ",".join(f"{key}={_format(value)}" for key, value in self.values.items())


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list):
        return "+".join(_format(v) for v in value)
    return str(value)


def trials(config: Mapping[str, Any]) -> dict[str, list[Trial]]:
    """Every trial of a validated config, per tuned strategy (none when tuning is off)."""
    tuning = config["tuning"]
    if not tuning["enabled"]:
        return {}
    grid = {strategy: keys for strategy, keys in (tuning["grid"] or {}).items() if keys}
    found = {}
    for strategy, keys in grid.items():
        names = list(keys)
        found[strategy] = [
            Trial(strategy=strategy, values=dict(zip(names, combo)))
            for combo in itertools.product(*(keys[name] for name in names))
        ]
    return found


def check_grid(config: Mapping[str, Any]) -> None:
    """A grid entry for a strategy that is not configured, a key the strategy cannot take,
    or values that cannot name a trial folder is a config error naming it. (Each trial's
    values are checked as a config of its own by ftcompare.plan.checks.)"""
    tuning = config["tuning"]
    if not tuning["enabled"]:
        return
    grid = {strategy: keys for strategy, keys in (tuning["grid"] or {}).items() if keys}
    if not grid:
        raise ConfigError("tuning.enabled = true but tuning.grid is empty: name values to try, or set enabled: false")
    for strategy, keys in grid.items():
        if strategy not in config["strategies"]:
            raise ConfigError(f"tuning.grid.{strategy}: no such strategy; configured: {list(config['strategies'])}")
        method = config["strategies"][strategy]["method"]
        for key in keys:
            allowed = tunable_keys(method)
            # A peft: block passes any key to PEFT (checked with each trial's config).
            if key not in allowed and not (method == "peft" and key.startswith("peft.") and key != "peft.peft_type"):
                raise ConfigError(
                    f"tuning.grid.{strategy}.{key}: strategy {strategy!r} (method {method!r}) cannot take it; "
                    f"tunable keys: {allowed}"
                )
    for strategy_trials in trials(config).values():
        for trial in strategy_trials:
            if not TRIAL_ID.match(trial.id):
                raise ConfigError(f"tuning.grid.{trial.strategy}: values {trial.values} cannot name a trial folder")


def tunable_keys(method: str) -> list[str]:
    """The keys a strategy of `method` may tune: its training overrides and its blocks' keys
    (a `peft:` block's are those of its PEFT config: `peft.<key>`)."""
    keys = list(training_overrides())
    for block in METHOD_BLOCKS[method]:
        if block == "peft":
            keys.append("peft.<a setting of its PEFT config>")
            continue
        keys += [f"{block}.{key}" for key in BLOCK_SCHEMAS[block]["properties"]]
    return keys


def with_values(config: Mapping[str, Any], strategy: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the validated `config` whose `strategy` entry takes `values`; the rest is
    shared with `config`, not copied (a study plans a thousand trials): treat it as read-only."""
    entry = dict(config["strategies"][strategy])
    changed = {**config, "strategies": {**config["strategies"], strategy: entry}}
    for key, value in values.items():
        block, _, name = key.rpartition(".")
        if block:
            entry[block] = {**entry[block], name: copy.deepcopy(value)}
        else:
            entry[key] = copy.deepcopy(value)
    return changed


def trial_spec(config: Mapping[str, Any], trial: Trial, *, seed: int) -> RunSpec:
    """The run settings of one trial: its values, and the trials' own epochs (`tuning.epochs`)
    if set, unless the grid tunes `epochs` itself: then each trial trains its own."""
    spec = resolve_run(with_values(config, trial.strategy, trial.values), strategy=trial.strategy, seed=seed)
    epochs = config["tuning"]["epochs"]
    return spec if epochs is None or "epochs" in trial.values else dataclasses.replace(spec, epochs=epochs)


# --------------------------------------------------------------------------- selection


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrialResult:
    """One trial run, as its train record has it."""

    strategy: str
    trial: str
    values: dict[str, Any]
    seed: int
    status: str
    metric: str  # the task's primary metric, what the trial's best epoch was chosen on
    val_score: float | None  # the best epoch's validation score on it
    val_accuracy: float | None  # the best epoch's validation accuracy
    val_loss: float | None
    train_time_s: float | None
    trainable_params: float | None


def trial_result(record: Mapping[str, Any], trial: Trial) -> TrialResult:
    metrics = record.get("metrics") or {}
    curve = record.get("val_curve") or []
    best = metrics.get("best_val_accuracy")
    metric = metrics.get("best_val_metric") or (record.get("config") or {}).get("metric") or "accuracy"
    score = metrics.get("best_val_score", best if metric == "accuracy" else None)
    # The validation loss at the chosen epoch (records that do not say which: the one that set the best accuracy).
    epoch = metrics.get("best_epoch")
    loss = next(
        (
            point.get("loss")
            for point in curve
            if (point.get("epoch") == epoch if epoch is not None else point.get("accuracy") == best)
        ),
        None,
    )
    return TrialResult(
        strategy=trial.strategy,
        trial=trial.id,
        values=trial.values,
        seed=int(record["seed"]),
        status=str(record["status"]),
        metric=str(metric),
        val_score=score,
        val_accuracy=best,
        val_loss=loss,
        train_time_s=metrics.get("train_time_s"),
        trainable_params=metrics.get("trainable_params"),
    )


# results/tuning/summary.csv's columns besides the tuned keys, which follow `trial`
# (select_settings_job writes it). `metric`: the task's primary metric, which val_score is
# and the choice was made on.
SUMMARY_COLUMNS = (
    "task",
    "model",
    "strategy",
    "trial",
    "seed",
    "status",
    "metric",
    "val_score",
    "val_accuracy",
    "val_loss",
    "train_time_s",
)


def summary_columns(keys: Sequence[str]) -> list[str]:
    """A tuning summary's columns in order: SUMMARY_COLUMNS with the tuned `keys` after `trial`."""
    after = SUMMARY_COLUMNS.index("trial") + 1
    return [*SUMMARY_COLUMNS[:after], *keys, *SUMMARY_COLUMNS[after:]]


def summary_keys(summary: Any) -> list[str]:
    """The tuned keys of a tuning summary frame: its columns that are not SUMMARY_COLUMNS."""
    return [column for column in summary.columns if column not in SUMMARY_COLUMNS]


def summary_score(summary: Any) -> tuple[str, str]:
    """The column a tuning summary frame's choice was made on, and its metric's name
    (summaries written before tasks had a metric: val_accuracy, accuracy)."""
    if "val_score" in summary.columns and summary["val_score"].notna().any():
        return "val_score", str(summary["metric"].dropna().iloc[0])
    return "val_accuracy", "accuracy"


def select(results: Sequence[TrialResult]) -> dict[str, dict[str, Any]]:
    """Per strategy, the chosen trial: `{values, metric, val_score, val_accuracy, trial}`
    (`val_score`: the mean over seeds on `metric`, what chose it); a strategy whose trials
    all failed gets `{values: None, metric, val_score: None, val_accuracy: None, reason}`."""
    by_strategy: dict[str, dict[str, list[TrialResult]]] = {}
    for result in results:
        by_strategy.setdefault(result.strategy, {}).setdefault(result.trial, []).append(result)
    chosen = {}
    for strategy, by_trial in by_strategy.items():
        metrics = {run.metric for runs in by_trial.values() for run in runs}
        if len(metrics) != 1:  # one task's trials: scores on different metrics do not compare
            raise ValueError(f"{strategy}'s trials were scored on different metrics {sorted(metrics)}")
        metric = metrics.pop()
        scored = []
        for trial, runs in by_trial.items():
            if all(run.status == "ok" and run.val_score is not None for run in runs):
                score = sum(run.val_score for run in runs) / len(runs)
                cost = (_mean([run.trainable_params for run in runs]), _mean([run.train_time_s for run in runs]))
                accuracies = [run.val_accuracy for run in runs]
                accuracy = None if None in accuracies else sum(accuracies) / len(accuracies)
                scored.append((score, cost, trial, runs[0].values, accuracy))
        if not scored:
            chosen[strategy] = {
                "values": None,
                "metric": metric,
                "val_score": None,
                "val_accuracy": None,
                "reason": "no trial ended ok: the final runs use the configured settings",
            }
            continue
        # Highest score; among equals, the fewest parameters, then the shortest training.
        score, _, trial, values, accuracy = min(scored, key=lambda item: (-item[0], item[1]))
        chosen[strategy] = {
            "values": dict(values),
            "metric": metric,
            "val_score": score,
            "val_accuracy": accuracy,
            "trial": trial,
        }
    return chosen


def _mean(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else math.inf


def apply_selection(config: Mapping[str, Any], selected: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`config` with each strategy's chosen values (strategies without a choice unchanged)."""
    for strategy, choice in selected.items():
        if choice.get("values") and strategy in config["strategies"]:
            config = with_values(config, strategy, choice["values"])
    return dict(config)


def select_settings_job(
    *, trial_records: Sequence[Path], grid: Mapping[str, Mapping[str, Any]], summary_path: Path, selected_path: Path
) -> dict[str, Any]:
    """Choose each tuned strategy's settings from its trials' validation scores
    (ftcompare.plan.tuning.select); `grid` maps "strategy/trial" to the trial's values."""
    import pandas as pd

    results, where = [], {"task": None, "model": None}
    for path in trial_records:
        record = read_record(path, kind="train")
        where = {key: record["config"].get(key) for key in where}  # one cell's trials
        values = grid[f"{record['strategy']}/{record['trial']}"]
        results.append(trial_result(record, Trial(strategy=record["strategy"], values=dict(values))))
    keys = list(dict.fromkeys(key for result in results for key in result.values))
    rows = [
        {
            **where,
            "strategy": r.strategy,
            "trial": r.trial,
            **{key: r.values.get(key) for key in keys},
            "seed": r.seed,
            "status": r.status,
            "metric": r.metric,
            "val_score": r.val_score,
            "val_accuracy": r.val_accuracy,
            "val_loss": r.val_loss,
            "train_time_s": r.train_time_s,
        }
        for r in results
    ]
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=summary_columns(keys)).to_csv(summary_path, index=False)
    selected = select(results)
    write_selection(selected_path, selected)
    for strategy, choice in selected.items():
        log.info("%s: %s", strategy, choice)
    return selected
