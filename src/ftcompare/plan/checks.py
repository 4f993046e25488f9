"""Every check of a study's config before any job runs, in one place: the coordinator.

`checked_study` is what the Snakefile calls (through ftcompare.plan.graph.StudyPlan): the config
validated and resolved (ftcompare.plan.config), then the checks that span modules: each
strategy's method (its own checks, ftcompare.methods.catalogue; a `peft:` block and a 4-bit base
against the installed PEFT, ftcompare.methods.adapters), the data paths, the sources themselves
(ftcompare.plan.preflight.preflight: files, labels, the model's limits and module
names), batch shapes and token budgets, the report's baseline, and every tuning trial's
settings, each checked as a config of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from ftcompare.contract import ConfigError, layout
from ftcompare.methods import catalogue as methods
from ftcompare.plan import matrix as study
from ftcompare.plan import tuning
from ftcompare.plan.config import _defaults, validate_config
from ftcompare.plan.matrix import Cell


def checked_study(
    config: Mapping[str, Any], *, sources: bool = False
) -> tuple[dict[str, Any], dict[Cell, dict[str, Any]]]:
    """The study's config validated (ftcompare.plan.config.validate_config), and each cell's
    config (ftcompare.plan.matrix.cell_config) once every check of it passes: what the Snakefile
    calls. Raises ConfigError naming the cell and the first problem. `sources`: also read
    the data and a local model (ftcompare.plan.preflight.preflight)."""
    resolved = validate_config(config)
    _check_names(resolved)
    _check_source_keys(config, resolved)
    _check_baseline_kept(resolved)
    checked: dict[Cell, dict[str, Any]] = {}
    trials_checked: set[str] = set()
    for cell in study.cells(resolved):
        try:
            checked[cell] = checked_config(study.cell_config(config, cell), sources=sources, trials=False)
            # The trials' checks read no data: cells whose other settings agree (a model's
            # cells across tasks) share them, which keeps a GLUE x encoders plan quick.
            key = json.dumps({k: v for k, v in checked[cell].items() if k not in ("data", "tasks")}, sort_keys=True)
            if key not in trials_checked:
                _check_trials(checked[cell])
                trials_checked.add(key)
        except ConfigError as exc:
            message = as_written(str(exc), config, cell)
            if len(resolved["tasks"]) == 1 and len(resolved["models"]) == 1:
                raise ConfigError(message) from None
            raise ConfigError(f"task {cell.task!r} with model {cell.model!r}: {message}") from None
    return resolved, checked


def as_written(message: str, config: Mapping[str, Any], cell: Cell) -> str:
    """`message`, about a cell's config, with each key it names where the user set it: a
    cell's config has its task's keys in `data`, its model's max_length in `training` and
    its model's method_defaults in each strategy's blocks (ftcompare.plan.matrix.cell_config)."""
    task_block = (config.get("tasks") or {}).get(cell.task) or {}
    model_blocks = [((config.get("models") or {}).get(cell.model) or {}, f"models.{cell.model}")]
    model_blocks.append((config.get("model") or {}, "model"))
    strategies = config.get("strategies") or {}

    def model_key(*path: str) -> str | None:
        """Where the model's blocks set `path` (its own first), or None."""
        for block, where in model_blocks:
            value: Any = block
            for part in path:
                value = value.get(part) if isinstance(value, Mapping) else None
            if value is not None:
                return ".".join((where, *path))
        return None

    def data_key(match: re.Match[str]) -> str:
        return f"tasks.{cell.task}.{match[1]}" if match[1] in task_block else match[0]

    def block_key(match: re.Match[str]) -> str:
        strategy, block, key = match[1], match[2], match[3]
        if block not in methods.BLOCKS or key in ((strategies.get(strategy) or {}).get(block) or {}):
            return match[0]  # the strategy's own, as named
        if (where := model_key("method_defaults", block, key)) is not None:
            return where
        if key in ((config.get("method_defaults") or {}).get(block) or {}):
            return f"method_defaults.{block}.{key}"
        return match[0]

    message = re.sub(r"\bdata\.(\w+)", data_key, message)
    if (where := model_key("max_length")) is not None:
        message = re.sub(r"\btraining\.max_length\b", where, message)
    return re.sub(r"\bstrategies\.([A-Za-z0-9_-]+)\.(\w+)\.(\w+)\b", block_key, message)


def reserved_task_names() -> tuple[str, ...]:
    """Names a task cannot have: the across-task table's columns besides the tasks'
    (ftcompare.report.tables), and the files the study writes beside the task folders of
    results/tuning/ and results/figures/."""
    from ftcompare.contract import ACROSS_COLUMNS, ACROSS_COST_COLUMNS, FIGURE_CAPTIONS

    files = (PurePosixPath(layout.TUNING_SUMMARY).name, *(f"{name}.png" for name in FIGURE_CAPTIONS))
    return (*ACROSS_COLUMNS, *ACROSS_COST_COLUMNS, *files)


def _check_names(config: Mapping[str, Any]) -> None:
    """Task names that are neither an output's column or file name nor another's up to a
    prefix of the across-task table; task, model and strategy names distinct up to case
    (folder names, on a file system that ignores case)."""
    from ftcompare.contract import ACROSS_TASK_PREFIXES

    tasks = list(config["tasks"])
    reserved = reserved_task_names()
    taken = {name.casefold() for name in reserved}
    taken |= {f"{prefix}{task}".casefold() for prefix in ACROSS_TASK_PREFIXES for task in tasks}
    for task in tasks:
        if task.casefold() in taken:
            raise ConfigError(
                f"task name {task!r} is a column or file name of the study's outputs (summary_across_tasks.csv, the "
                f"report's table, results/tuning/, results/figures/), up to case; rename the task. Reserved: "
                f"{list(reserved)} and {', '.join(p + '<task>' for p in ACROSS_TASK_PREFIXES)} of each task"
            )
    for what, names in (("task", tasks), ("model", config["models"]), ("strategy", config["strategies"])):
        _check_case(what, names)


def _check_case(what: str, names: Iterable[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise ConfigError(
                f"{what} names {other!r} and {name!r} differ only in case: their folders are one folder where "
                f"the file system ignores case (macOS, Windows); rename one"
            )


def _check_source_keys(config: Mapping[str, Any], resolved: Mapping[str, Any]) -> None:
    """Every `data` key a task sets is one its source reads (ftcompare.data.splits.unread_keys),
    else the plan stops naming it: a key set for a source that ignores it would be
    silently ignored (validation carved from train instead of the split named). A key
    equal to its default (config/config.yaml) is not one the user set; a key of `data`,
    which every task starts from, is refused only where no task reads it."""
    from ftcompare.data import unread_keys

    defaults = _defaults()["data"]
    own = {task: (block or {}) for task, block in (config.get("tasks") or {}).items()}
    unread = {task: unread_keys(data) for task, data in resolved["tasks"].items()}
    for task, data in resolved["tasks"].items():
        for key in unread[task]:
            if data.get(key) == defaults.get(key):
                continue
            if key in own.get(task, {}):
                where = f"tasks.{task}.{key}"
            elif any(key not in keys for keys in unread.values()):
                continue  # `data`'s, for the tasks that read it
            else:
                where = f"data.{key}"
            source = data["source"]
            why = (
                "validation is the split or file given (validation_split / validation), so no fraction is carved"
                if key == "validation_fraction"
                else f"source {source!r} does not read it"
            )
            raise ConfigError(
                f"{where} = {data[key]!r} (task {task!r}, source {source!r}) would be ignored: {why}; remove it, "
                "or set the source that reads it"
            )
        pair = data.get("text_pair_column")
        if pair is not None and pair == data["text_column"]:
            raise ConfigError(
                f"task {task!r}: text_pair_column = text_column = {pair!r} would pair each text with itself; "
                "name the column of the second texts, or leave text_pair_column null for one text a row"
            )


def _check_baseline_kept(config: Mapping[str, Any]) -> None:
    """The report compares each model's strategies with the baseline: a model that skips
    it has nothing to compare with."""
    baseline = config["report"]["baseline"]
    if baseline not in config["strategies"]:
        return  # the cells' check names the strategies configured
    for model, block in config["models"].items():
        if baseline in (block.get("skip_strategies") or ()):
            raise ConfigError(
                f"models.{model}.skip_strategies skips {baseline!r}, the report's baseline (report.baseline), "
                f"which each model's strategies are compared with: keep {baseline!r} for {model!r}, or set "
                "report.baseline to a strategy every model runs"
            )


def checked_config(config: Mapping[str, Any], *, sources: bool = False, trials: bool = True) -> dict[str, Any]:
    """A one-cell `config` (one task, one model: a cell's config) validated and resolved
    (ftcompare.plan.config.validate_config), once every check passes; raises ConfigError naming
    the first problem. `sources`: also read the data and a local model
    (ftcompare.plan.preflight.preflight), as the Snakefile does. `trials`: also check
    every tuning trial's settings (checked_study does that once for cells that share them)."""
    resolved = validate_config(config)
    cell = study.the_cell(resolved)
    for name, entry in resolved["strategies"].items():
        _check_strategy(name, entry, given=config["strategies"][name] or {})
    _check_methods_apply(cell.model, resolved["model"], resolved["strategies"])
    _check_data_paths(resolved["data"])
    if sources:
        from ftcompare.plan.preflight import preflight_checks

        # Before the checks between keys: a max_length beyond the model's limit must be
        # reported as that, not as a token budget too small for it.
        preflight_checks(resolved)
    _check_batch_shapes(resolved["training"])
    _check_token_budgets(resolved)
    baseline = resolved["report"]["baseline"]
    if baseline not in resolved["strategies"]:
        raise ConfigError(
            f"report.baseline = {baseline!r} is not a configured strategy; configured: {list(resolved['strategies'])}"
        )
    if trials:
        _check_trials(resolved)
    return resolved


def _check_strategy(name: str, entry: Mapping[str, Any], *, given: Mapping[str, Any]) -> None:
    """`entry` resolved; `given` as the config has it (a message names the value given)."""
    method = entry["method"]
    if method == "peft":
        from ftcompare.methods import check_peft_block  # imports PEFT: only for configs that use it

        check_peft_block(name, given["peft"])
    if entry.get("quantization") is not None and "quantization" not in methods.METHOD_BLOCKS[method]:
        from ftcompare.methods import check_quantization

        peft_type = entry["peft"]["peft_type"] if method == "peft" else methods.METHOD_TABLE[method].peft_type
        check_quantization(name, method, peft_type)
    methods.check_block(name, method, entry)


def _check_methods_apply(name: str, model: Mapping[str, Any], strategies: Mapping[str, Any]) -> None:
    """Every strategy's method applies to the model's architecture, as the config states it
    for a hub model (not read before its jobs). A local model's own config.json decides
    (preflight), as its settings may lift a refusal (a ModernBERT that pools [CLS])."""
    from ftcompare.contract import is_hub_id

    model_type = model.get("model_type")
    if model_type is None or not is_hub_id(model["name_or_path"]):
        return
    for strategy, entry in strategies.items():
        methods.check_model(strategy, entry["method"], entry, model_type=model_type, model=name)


def _check_trials(config: Mapping[str, Any]) -> None:
    """Every trial's settings are a config that passes these checks (its sources are the study's)."""
    tuning.check_grid(config)
    for strategy_trials in tuning.trials(config).values():
        for trial in strategy_trials:
            changed = tuning.with_values(config, trial.strategy, trial.values)
            # The trial's strategy alone: the checks between strategies passed for the study,
            # and validating the other 15 again for each trial would double a large plan.
            candidate = {
                **changed,
                "strategies": {trial.strategy: changed["strategies"][trial.strategy]},
                "report": {**changed["report"], "baseline": trial.strategy},
                "tuning": {**changed["tuning"], "enabled": False},  # this check, not again
            }
            try:
                checked_config(candidate)
            except ConfigError as exc:
                raise ConfigError(f"tuning.grid.{trial.strategy} trial {trial.id}: {exc}") from None


def _check_data_paths(data: Mapping[str, Any]) -> None:
    source = data["source"]
    if source == "hub":
        return
    if not data.get("train"):
        raise ConfigError(f"data.source = {source!r} needs data.train (a path); got {data.get('train')!r}")
    if source != "aclimdb" and not data.get("test"):
        raise ConfigError(f"data.source = {source!r} needs data.test (a path); got {data.get('test')!r}")


def _check_batch_shapes(training: Mapping[str, Any]) -> None:
    if training["bucket_width"] is not None and not training["group_by_length"]:
        raise ConfigError(
            f"training.bucket_width = {training['bucket_width']} groups reviews by length, but "
            "training.group_by_length = false: set bucket_width to null, or group_by_length to true"
        )
    if training["cuda_graphs"] and training["bucket_width"] is None:
        raise ConfigError(
            "training.cuda_graphs = true needs training.bucket_width (e.g. 32): without buckets every batch "
            "width is its own shape, and each shape is one more graph to record"
        )
    if training["cuda_graphs"] and training["compile"]:
        raise ConfigError("training.cuda_graphs and training.compile cannot both be true: choose one")


def _check_token_budgets(config: Mapping[str, Any]) -> None:
    """Every token budget must hold one review of `max_length` tokens, padded."""
    training = config["training"]
    multiple = training["bucket_width"] or training["pad_to_multiple_of"]
    widest = -(-training["max_length"] // multiple) * multiple
    budgets = {"training.max_tokens_per_batch": training["max_tokens_per_batch"]}
    eval_budget = training["eval_max_tokens_per_batch"]
    eval_widest = -(-training["max_length"] // training["pad_to_multiple_of"]) * training["pad_to_multiple_of"]
    if eval_budget is not None and eval_budget < eval_widest:
        raise ConfigError(
            f"training.eval_max_tokens_per_batch = {eval_budget} cannot hold one review of training.max_length = "
            f"{training['max_length']} tokens ({eval_widest} padded): use at least {eval_widest}, or null for no budget"
        )
    for name, entry in config["strategies"].items():
        if "max_tokens_per_batch" in entry:
            budgets[f"strategies.{name}.max_tokens_per_batch"] = entry["max_tokens_per_batch"]
    for key, budget in budgets.items():
        if budget is not None and budget < widest:
            raise ConfigError(
                f"{key} = {budget} cannot hold one review of training.max_length = {training['max_length']} "
                f"tokens ({widest} padded to a multiple of {multiple}): use at least {widest}, or null for no budget"
            )
