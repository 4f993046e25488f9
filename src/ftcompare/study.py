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
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ftcompare.errors import ConfigError, UsageError

# Task and model names are folder names (results/runs/<task>/<model>/...).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# The keys of a model block besides name_or_path that change a cell's config.
MODEL_CELL_KEYS = ("max_length", "method_defaults", "skip_strategies", "model_type")


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    """One (task, model) of a study: its runs live under results/runs/<task>/<model>/."""

    task: str
    model: str

    @property
    def path(self) -> str:
        return f"{self.task}/{self.model}"


def _folder_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "data"
    return name if re.match(NAME_PATTERN, name) else f"x{name}"


def default_task_name(data: Mapping[str, Any]) -> str:
    """The one task of a config without `tasks`: a hub dataset's last name part (and its
    configuration), else the folder of its training file (aclImdb: the folder itself)."""
    if data.get("source", "hub") == "hub":
        name = str(data.get("name") or "data").rsplit("/", 1)[-1]
        return _folder_name(f"{name}-{data['config']}" if data.get("config") else name)
    train = PurePosixPath(str(data.get("train") or "data"))
    return _folder_name(train.name if data.get("source") == "aclimdb" else train.parent.name or train.stem)


def default_model_name(name_or_path: str) -> str:
    """The one model of a config without `models`: a hub id's or a folder's last part,
    package:NAME's NAME."""
    if name_or_path.startswith("package:"):
        return _folder_name(name_or_path.removeprefix("package:"))
    return _folder_name(PurePosixPath(name_or_path.rstrip("/")).name)


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
            f"({', '.join(c.path for c in found)}): take one cell's config (ftcompare.study.cell_config)"
        )
    return found[0]


# --------------------------------------------------------------------------- layout
# A run folder is results/runs/<task>/<model>/<strategy>/seed<N>; hub sources are fetched
# into results/sources/ (the workflow's rules, workflow/rules/common.smk).
# A run folder's path below the study's folder (the one holding results/) has this many parts.
RUN_DEPTH = len(("results", "runs", "<task>", "<model>", "<strategy>", "seed<N>"))
RUN_EXAMPLE = "results/runs/imdb/roberta-base/lora/seed0"  # what messages and help show
# Every cell's trials in one table, beside the cells' folders results/tuning/<task>/ (the report rule).
TUNING_SUMMARY = "results/tuning/summary.csv"


# The folders a study writes under its results/ (the workflow's rules): runs and trials,
# caches, fetched sources, logs, events, figures. Nothing but the workflow writes in them.
STUDY_FOLDERS = (
    "runs",
    "tuning",
    "checkpoints",
    "data",
    "tokenized",
    "sources",
    "logs",
    "tensorboard",
    "figures",
    "benchmarks",
)


def is_run_folder(folder: Path) -> bool:
    """A run's (or a trial's) folder, wherever it was copied: its train record beside its
    attempt file or its model folder (a train.json alone may be anyone's)."""
    return (folder / "train.json").is_file() and ((folder / "attempt.json").is_file() or (folder / "model").is_dir())


def _owner(path: Path) -> Path | None:
    """The study-owned folder `path` is or lies inside: a run folder (wherever it was
    copied), or one of STUDY_FOLDERS of a results/ folder."""
    for folder in (path, *path.parents):
        if is_run_folder(folder):
            return folder
        if folder.name in STUDY_FOLDERS and folder.parent.name == "results":
            return folder
    return None


def _held(path: Path) -> Path | None:
    """A run folder or study-owned folder that folder `path` holds, or None. Only what
    replacing `path` would delete is searched."""
    if not path.is_dir():
        return None
    for name in STUDY_FOLDERS:
        for candidate in (path / name, path / "results" / name):
            if candidate.is_dir() and candidate.parent.name == "results":
                return candidate
    return next((record.parent for record in path.rglob("train.json") if is_run_folder(record.parent)), None)


def check_target(path: str | Path, *, option: str) -> None:
    """Refuse (UsageError) a target a command of `ftcompare` would write or replace when it
    is, holds or lies inside a run folder or a folder a study owns under its results/
    (STUDY_FOLDERS): those hold what the study computed and its report reads, `--force` or
    not. Every writing command calls this before any work; --force then replaces only the
    one file or export folder the user named."""
    resolved = Path(path).resolve()
    inside = _owner(resolved)
    if inside is not None:
        run = _first_run(resolved) or _first_run(inside)  # one the target would replace, where it holds any
        raise UsageError(
            f"{option} {str(path)!r} lies inside {str(inside)!r}, which the study wrote"
            + (f" (the run {str(run)!r})" if run is not None else "")
            + ": write outside the study's results/ folders and run folders; --force replaces only a file or "
            "export folder of your own"
        )
    held = _held(resolved)
    if held is not None:
        run = _first_run(held)
        raise UsageError(
            f"{option} {str(path)!r} holds {str(held)!r}, which the study wrote"
            + (f" (the run {str(run)!r} among others)" if run is not None and run != held else "")
            + ": give a new folder outside the study's results/ folders and run folders"
        )


def _first_run(folder: Path) -> Path | None:
    """A run folder at or below `folder` (or the run folder `folder` lies in), for messages."""
    for candidate in (folder, *folder.parents):
        if is_run_folder(candidate):
            return candidate
    if not folder.is_dir():
        return None
    return next((record.parent for record in sorted(folder.rglob("train.json")) if is_run_folder(record.parent)), None)


def study_folder(run_dir: str | Path) -> Path | None:
    """The study's folder (where Snakemake ran, holding results/) of a run folder; None
    when the folder is not where a study puts runs."""
    parents = Path(run_dir).resolve().parents
    return parents[RUN_DEPTH - 1] if len(parents) >= RUN_DEPTH and parents[RUN_DEPTH - 2].name == "results" else None


def fetched_model_folder(results: str | Path, name_or_path: str) -> Path:
    """Where the fetch_model rule copies hub model `name_or_path` under `results`."""
    return Path(results) / "sources" / "models" / hub_folder(name_or_path)


def hub_data_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the fetch_data rule downloads for a task's hub dataset: the dataset, its
    configuration, and which of its splits each of ours reads (ftcompare.data.hub_splits)."""
    from ftcompare.data import hub_splits

    return {"name": data["name"], "config": data.get("config"), "splits": hub_splits(data)}


def hub_folder(name: str, settings: Mapping[str, Any] | None = None) -> str:
    """A readable folder name for a hub model (org--name) or dataset (with a key of its
    configuration and splits: MNLI matched and mismatched read the same dataset)."""
    folder = name.replace("/", "--")
    return folder if settings is None else f"{folder}-{_key(settings)[:8]}"


def _key(settings: Mapping[str, Any]) -> str:
    from ftcompare.workflow_support import cache_key

    return cache_key(settings)
