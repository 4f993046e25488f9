"""A study is a matrix: tasks × models × strategies × seeds. This module turns the matrix
into cells, one per (task, model), each with a config of the one-task, one-model shape
that the rest of the library takes.

Config: `data` and `model` are what every task and every model start from; `tasks` and
`models` map a name to the keys that differ (a task's data block, a model's block). A
config without `tasks` is one task, `data` itself, named after its source; without
`models`, one model, `model` itself, named after its name_or_path. So a config written
before the matrix is a study of one cell.

A model block may set what must differ between architectures: `max_length` (overrides
training.max_length), `method_defaults` (over the study's: e.g. DeBERTa's module names),
`skip_strategies` (strategies that cannot apply to it) and `model_type` (its
architecture, so that the methods' checks run before a hub model is downloaded).

Kept free of torch: the Snakefile builds the job graph from it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from ftcompare.contract import ConfigError, default_model_name, default_task_name


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    """One (task, model) of a study: its runs live under results/runs/<task>/<model>/."""

    task: str
    model: str

    @property
    def path(self) -> str:
        return f"{self.task}/{self.model}"


def task_blocks(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each task's data block: `data` with the task's keys over it."""
    data = dict(config.get("data") or {})
    tasks = config.get("tasks")
    if not tasks:
        return {default_task_name(data): data}
    return {name: {**data, **(block or {})} for name, block in tasks.items()}


def task_unit(task: str, data: Mapping[str, Any]) -> str:
    """What one test row of a task is, in the report's words: `data.unit` where set (SST-2:
    sentences), else reviews for IMDB, pairs where the task reads a second text, else examples."""
    if data.get("unit"):
        return str(data["unit"])
    if is_imdb(task, data):
        return "reviews"
    return "pairs" if data.get("text_pair_column") else "examples"


def is_imdb(task: str, data: Mapping[str, Any]) -> bool:
    """Whether a task is IMDB (the reference notebook's task): the hub's stanfordnlp/imdb, an
    aclImdb folder, or a task named imdb."""
    name = str(data.get("name") or "") if data.get("source", "hub") == "hub" else ""
    return data.get("source") == "aclimdb" or name.rsplit("/", 1)[-1] == "imdb" or task.lower() == "imdb"


def model_blocks(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each model's block: `model` with the model's keys over it."""
    model = dict(config.get("model") or {})
    models = config.get("models")
    if not models:
        if "name_or_path" not in model:
            raise ConfigError("model.name_or_path is missing: name the encoder to fine-tune")
        return {default_model_name(model["name_or_path"]): model}
    return {name: {**model, **(block or {})} for name, block in models.items()}


def cells(config: Mapping[str, Any]) -> list[Cell]:
    """Every (task, model) of the study, tasks in config order, then models."""
    return [Cell(task, model) for task in task_blocks(config) for model in model_blocks(config)]


def layer(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`overlay` over `base` as Snakemake layers config files: mappings merge key by key,
    anything else (lists included) is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = layer(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def cell_config(config: Mapping[str, Any], cell: Cell) -> dict[str, Any]:
    """The config of one cell, of the one-task, one-model shape: `data` is the task's block,
    `model` the model's; the model's `max_length`, `method_defaults` and `skip_strategies`
    applied; `tasks` and `models` name the cell alone. Works on a config as written or
    as validated, and on a cell's config (it is its own cell)."""
    tasks, models = task_blocks(config), model_blocks(config)
    if cell.task not in tasks:
        raise ConfigError(f"unknown task {cell.task!r}; configured: {list(tasks)}")
    if cell.model not in models:
        raise ConfigError(f"unknown model {cell.model!r}; configured: {list(models)}")
    data, model = tasks[cell.task], models[cell.model]
    out = copy.deepcopy(dict(config))
    out["data"] = copy.deepcopy(data)
    out["model"] = copy.deepcopy(model)
    out["tasks"] = {cell.task: copy.deepcopy(data)}
    out["models"] = {cell.model: copy.deepcopy(model)}
    if model.get("max_length") is not None:
        out["training"] = {**(out.get("training") or {}), "max_length": model["max_length"]}
    if model.get("method_defaults"):
        out["method_defaults"] = layer(out.get("method_defaults") or {}, model["method_defaults"])
    skipped = set(model.get("skip_strategies") or ())
    if skipped:
        # Applied: the cell's strategies are the others (and a cell is its own cell).
        for block in (out["model"], out["models"][cell.model]):
            block.pop("skip_strategies")
        out["strategies"] = {name: entry for name, entry in config["strategies"].items() if name not in skipped}
        grid = (out.get("tuning") or {}).get("grid")
        if grid:
            out["tuning"] = {**out["tuning"], "grid": {k: v for k, v in grid.items() if k not in skipped}}
    return out


def the_cell(config: Mapping[str, Any]) -> Cell:
    """The cell of a one-cell config (a cell's config); an error for a study of many."""
    found = cells(config)
    if len(found) != 1:
        raise ConfigError(
            f"this needs one task and one model, the config has {len(found)} cells "
            f"({', '.join(c.path for c in found)}): take one cell's config (ftcompare.plan.matrix.cell_config)"
        )
    return found[0]


def hub_data_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the fetch_data rule downloads for a task's hub dataset: the dataset, its
    configuration, and which of its splits each of ours reads (ftcompare.data.splits.hub_splits)."""
    from ftcompare.data import hub_splits

    return {"name": data["name"], "config": data.get("config"), "splits": hub_splits(data)}
