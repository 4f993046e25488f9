"""Every check of a study's config before any job runs, in one place: the coordinator.

`checked_config` is what the Snakefile calls (workflow/rules/common.smk): the config
validated and resolved (ftcompare.config), then the checks that span modules: each
strategy's method (its own checks, ftcompare.methods; a `peft:` block and a 4-bit base
against the installed PEFT, ftcompare.adapters), the data paths, the sources themselves
(ftcompare.workflow_support.preflight: files, labels, the model's limits and module
names), batch shapes and token budgets, the report's baseline, and every tuning trial's
settings, each checked as a config of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ftcompare import methods, study, tuning
from ftcompare.config import validate_config
from ftcompare.errors import ConfigError
from ftcompare.study import Cell


def checked_study(
    config: Mapping[str, Any], *, sources: bool = False
) -> tuple[dict[str, Any], dict[Cell, dict[str, Any]]]:
    """The study's config validated (ftcompare.config.validate_config), and each cell's
    config (ftcompare.study.cell_config) once every check of it passes: what the Snakefile
    calls. Raises ConfigError naming the cell and the first problem. `sources`: also read
    the data and a local model (ftcompare.workflow_support.preflight)."""
    resolved = validate_config(config)
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
            if len(resolved["tasks"]) == 1 and len(resolved["models"]) == 1:
                raise
            raise ConfigError(f"task {cell.task!r} with model {cell.model!r}: {exc}") from None
    return resolved, checked


def checked_config(config: Mapping[str, Any], *, sources: bool = False, trials: bool = True) -> dict[str, Any]:
    """A one-cell `config` (one task, one model: a cell's config) validated and resolved
    (ftcompare.config.validate_config), once every check passes; raises ConfigError naming
    the first problem. `sources`: also read the data and a local model
    (ftcompare.workflow_support.preflight), as the Snakefile does. `trials`: also check
    every tuning trial's settings (checked_study does that once for cells that share them)."""
    resolved = validate_config(config)
    cell = study.the_cell(resolved)
    for name, entry in resolved["strategies"].items():
        _check_strategy(name, entry, given=config["strategies"][name] or {})
    _check_methods_apply(cell.model, resolved["model"], resolved["strategies"])
    _check_data_paths(resolved["data"])
    if sources:
        from ftcompare.workflow_support import preflight

        # Before the checks between keys: a max_length beyond the model's limit must be
        # reported as that, not as a token budget too small for it.
        preflight(resolved)
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
        from ftcompare.adapters import check_peft_block  # imports PEFT: only for configs that use it

        check_peft_block(name, given["peft"])
    if entry.get("quantization") is not None and "quantization" not in methods.METHOD_BLOCKS[method]:
        from ftcompare.adapters import check_quantization

        peft_type = entry["peft"]["peft_type"] if method == "peft" else methods.METHOD_TABLE[method].peft_type
        check_quantization(name, method, peft_type)
    methods.check_block(name, method, entry)


def _check_methods_apply(name: str, model: Mapping[str, Any], strategies: Mapping[str, Any]) -> None:
    """Every strategy's method applies to the model's architecture, as the config states it
    for a hub model (not read before its jobs). A local model's own config.json decides
    (preflight), as its settings may lift a refusal (a ModernBERT that pools [CLS])."""
    from ftcompare.sources import is_hub_id

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
